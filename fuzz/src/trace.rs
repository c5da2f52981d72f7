//! Observability in the model: a recording `tracing` layer, scoped to one run, and the checks
//! of what it saw against the model (the `trace_race` target).
//!
//! The layer numbers every span it sees in the order it was made (a registry reuses the ids of
//! closed spans, so ids alone cannot tell two flights apart), and keeps each span's name,
//! parent and fields, each `follows_from` link and each event with its parent and the span that
//! was current when it was emitted. The driver enters a span of each caller's own
//! (`caller`, with the caller's index as `id`) around each of its polls and its drop, so a
//! flight's span (a child of its leader's current span) names its leader, and a follower's
//! link names the follower.

use std::sync::{Arc, Mutex, PoisonError};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The name of the span the driver makes for each caller.
pub(crate) const CALLER_SPAN: &str = "caller";
/// The name of a flight's span (the core's).
pub(crate) const FLIGHT_SPAN: &str = "coalescer.flight";

/// The messages of the core's events (`core/src/observe.rs`, `trace_event` and `ended_watched`).
pub(crate) const JOINED: &str = "coalescer: a caller joined";
pub(crate) const PROMOTED: &str = "coalescer: a follower was promoted to lead";
pub(crate) const PANICKED: &str = "coalescer: the work panicked";
pub(crate) const CANCELLED: &str = "coalescer: the last caller left; work cancelled";
pub(crate) const FORGOTTEN: &str = "coalescer: flight forgotten";
pub(crate) const OVERFLOW: &str = "coalescer: bound on keys in flight reached";
pub(crate) const ENDED: &str = "coalescer: flight ended";

/// A span as recorded.
#[derive(Debug)]
pub(crate) struct SpanSeen {
    pub(crate) name: &'static str,
    /// The serial of its parent span, if it has one.
    pub(crate) parent: Option<usize>,
    pub(crate) fields: Vec<(&'static str, String)>,
    /// For a caller's span: the caller's index (its `id` field).
    pub(crate) caller: Option<usize>,
}

impl SpanSeen {
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// An event as recorded.
#[derive(Debug)]
pub(crate) struct EventSeen {
    pub(crate) message: String,
    /// The serial of its parent span (explicit or contextual), if any.
    pub(crate) parent: Option<usize>,
    /// The serial of the span that was current on the emitting thread.
    pub(crate) current: Option<usize>,
    /// Its `waiters` field, if it has one.
    pub(crate) waiters: Option<String>,
}

/// Everything the layer saw in one run. Spans are numbered by their index here.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) spans: Vec<SpanSeen>,
    /// (follower's span, the span it follows from), as serials.
    pub(crate) follows: Vec<(usize, usize)>,
    pub(crate) events: Vec<EventSeen>,
}

impl Seen {
    /// The serial of caller `c`'s span.
    pub(crate) fn caller_span(&self, c: usize) -> Option<usize> {
        self.spans.iter().position(|s| s.name == CALLER_SPAN && s.caller == Some(c))
    }

    /// The serial of the flight span whose parent is caller `leader`'s span (the flight it
    /// leads), and how many there are.
    pub(crate) fn flight_spans_of(&self, leader: usize) -> Vec<usize> {
        let Some(cs) = self.caller_span(leader) else { return Vec::new() };
        (0..self.spans.len())
            .filter(|&s| self.spans[s].name == FLIGHT_SPAN && self.spans[s].parent == Some(cs))
            .collect()
    }
}

/// The recording layer: cheap to clone, one per run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recording(Arc<Mutex<Seen>>);

/// The serial of a span, kept in the registry's extensions.
struct Serial(usize);

/// Collects a span's or an event's fields, formatted. Runs user code (a key's `Debug`, which may
/// pause the thread): it is never called with the recording's lock held.
struct Fields(Vec<(&'static str, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }
}

impl Recording {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn serial<S: tracing::Subscriber + for<'a> LookupSpan<'a>>(ctx: &Context<'_, S>, id: &Id) -> Option<usize> {
    ctx.span(id).and_then(|span| span.extensions().get::<Serial>().map(|s| s.0))
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recording {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        let parent =
            ctx.span(id).and_then(|s| s.parent()).and_then(|p| p.extensions().get::<Serial>().map(|s| s.0));
        let name = attrs.metadata().name();
        let caller = (name == CALLER_SPAN)
            .then(|| fields.0.iter().find(|(k, _)| *k == "id").and_then(|(_, v)| v.parse().ok()))
            .flatten();
        let serial = {
            let mut seen = self.lock();
            seen.spans.push(SpanSeen { name, parent, fields: fields.0, caller });
            seen.spans.len() - 1
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Serial(serial));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        // The key's `Debug` runs here (a flight's `key` field): it may pause this thread while
        // the driver acts on another, so nothing is locked while it runs.
        let mut fields = Fields(Vec::new());
        values.record(&mut fields);
        if let Some(serial) = serial(&ctx, id) {
            self.lock().spans[serial].fields.extend(fields.0);
        }
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        if let (Some(span), Some(follows)) = (serial(&ctx, span), serial(&ctx, follows)) {
            self.lock().follows.push((span, follows));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let message =
            fields.0.iter().find(|(k, _)| *k == "message").map(|(_, v)| v.clone()).unwrap_or_default();
        let waiters = fields.0.iter().find(|(k, _)| *k == "waiters").map(|(_, v)| v.clone());
        let parent = ctx.event_span(event).and_then(|s| s.extensions().get::<Serial>().map(|s| s.0));
        let current = ctx.lookup_current().and_then(|s| s.extensions().get::<Serial>().map(|s| s.0));
        self.lock().events.push(EventSeen { message, parent, current, waiters });
    }
}

/// A dispatcher that records into a new [`Recording`], for one run.
pub(crate) fn dispatch() -> (tracing::Dispatch, Recording) {
    use tracing_subscriber::layer::SubscriberExt;
    keep_interest();
    let recording = Recording::default();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(recording.clone()));
    (dispatch, recording)
}

/// Keeps one idle dispatcher registered for the rest of the process, so that `tracing` never
/// decides a callsite's interest from the default dispatcher of whichever thread hits it first
/// (with a single dispatcher registered it asks the current thread's: a thread with none, in
/// a test that runs beside this one, would leave the core's callsites disabled for every run).
fn keep_interest() {
    static KEEP: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    KEEP.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
}

/// The run's `metrics` recorder: keeps every series a group registers, with its counter or its
/// histogram's values. Installed (with `metrics::with_local_recorder`) while the run's groups
/// are named, which is when a named group registers its handles.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics(Arc<Mutex<Vec<Series>>>);

/// One registered series.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) key: metrics::Key,
    pub(crate) value: Value,
}

/// A series' value.
#[derive(Debug)]
pub(crate) enum Value {
    Counter(Arc<std::sync::atomic::AtomicU64>),
    Histogram(Arc<Values>),
}

/// A histogram's values, in the order recorded.
#[derive(Debug, Default)]
pub(crate) struct Values(Mutex<Vec<f64>>);

impl Values {
    pub(crate) fn values(&self) -> Vec<f64> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl metrics::HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(value);
    }
}

impl Metrics {
    /// The series registered so far.
    pub(crate) fn series(&self) -> std::sync::MutexGuard<'_, Vec<Series>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl metrics::Recorder for Metrics {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.series().push(Series { key: key.clone(), value: Value::Counter(counter.clone()) });
        metrics::Counter::from_arc(counter)
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop() // the core has none
    }

    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        let values = Arc::new(Values::default());
        self.series().push(Series { key: key.clone(), value: Value::Histogram(values.clone()) });
        metrics::Histogram::from_arc(values)
    }
}

/// Runs `f` with a new [`Metrics`] recorder installed, and returns the recorder.
pub(crate) fn with_recorder<T>(f: impl FnOnce() -> T) -> (Metrics, T) {
    let recorder = Metrics::default();
    let made = metrics::with_local_recorder(&recorder, f);
    (recorder, made)
}
