//! `--trace` and `--metrics`: the demo watched with the tools a service already runs.
//!
//! * `--trace` installs a `tracing` subscriber (the `tracing-subscriber` registry with a small
//!   layer of this module's) and prints the flight spans of one burst of the coalesced scenario:
//!   for each `coalescer.flight` span, which request led it, how many requests' spans
//!   `follows_from` it, and the events in it.
//! * `--metrics` installs `metrics-exporter-prometheus`'s recorder before any group is made, and
//!   prints the run's metrics in Prometheus's text format at the end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The Prometheus handle, once `--metrics` installed the recorder.
static PROMETHEUS: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();

/// The trace recorder, once `--trace` installed the subscriber.
static TRACE: OnceLock<Recorder> = OnceLock::new();

/// Installs what the settings ask for; call it before any group is made (a named group
/// registers its metrics handles when it is named).
///
/// # Errors
///
/// When another recorder or subscriber is installed already.
pub fn install(trace: bool, metrics: bool) -> Result<(), crate::BoxError> {
    if metrics && PROMETHEUS.get().is_none() {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        let _ = PROMETHEUS.set(handle);
    }
    if trace && TRACE.get().is_none() {
        let recorder = Recorder::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))?;
        let _ = TRACE.set(recorder);
    }
    Ok(())
}

/// The run's metrics in Prometheus's text format, when `--metrics` installed the recorder.
pub fn metrics_text() -> Option<String> {
    PROMETHEUS.get().map(metrics_exporter_prometheus::PrometheusHandle::render)
}

/// Whether `--trace` is on and no burst was traced yet: the caller traces the next one.
pub fn wants_a_trace() -> bool {
    TRACE.get().is_some_and(|r| !r.0.done.load(SeqCst))
}

/// Records the spans of the burst that `f` runs, and returns their summary.
pub async fn trace_burst<F: std::future::Future>(f: F) -> (F::Output, String) {
    let Some(recorder) = TRACE.get() else { return (f.await, String::new()) };
    recorder.0.armed.store(true, SeqCst);
    let output = f.await;
    recorder.0.armed.store(false, SeqCst);
    recorder.0.done.store(true, SeqCst);
    let summary = recorder.summary();
    *recorder.0.summary.lock().unwrap() = Some(summary.clone());
    (output, summary)
}

/// The summary of the traced burst, once there was one.
pub fn traced() -> Option<String> {
    TRACE.get().and_then(|r| r.0.summary.lock().unwrap().clone())
}

/// A span as recorded: its name, its fields, and the `n` of the request it started in.
type SpanSeen = (String, Vec<(String, String)>, Option<String>);

/// What the layer saw while armed.
#[derive(Default)]
struct Seen {
    /// Span id -> (name, fields, the `n` field of the request span it is a child of).
    spans: HashMap<u64, SpanSeen>,
    /// (a span, the span it follows from).
    follows: Vec<(u64, u64)>,
    /// (the span an event is in, its message).
    events: Vec<(u64, String)>,
}

#[derive(Default)]
struct Shared {
    armed: AtomicBool,
    done: AtomicBool,
    seen: Mutex<Seen>,
    summary: Mutex<Option<String>>,
}

/// The layer: records flight spans, request spans, `follows_from` links and events while
/// armed.
#[derive(Clone, Default)]
struct Recorder(Arc<Shared>);

struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_string(), format!("{value:?}")));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.0.armed.load(SeqCst) {
            return;
        }
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        // The request a flight's span was started in (its parent's `n`).
        let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id().into_u64());
        let mut seen = self.0.seen.lock().unwrap();
        let leader = parent
            .and_then(|p| seen.spans.get(&p))
            .and_then(|(_, f, _)| f.iter().find(|(k, _)| k == "n").map(|(_, v)| v.clone()));
        seen.spans.insert(id.into_u64(), (attrs.metadata().name().to_string(), fields.0, leader));
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, _: Context<'_, S>) {
        if self.0.armed.load(SeqCst) {
            self.0.seen.lock().unwrap().follows.push((span.into_u64(), follows.into_u64()));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if !self.0.armed.load(SeqCst) {
            return;
        }
        let Some(span) = ctx.event_span(event) else { return };
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let message = fields.0.into_iter().map(|(k, v)| if k == "message" { v } else { format!("{k}={v}") });
        let message: Vec<String> = message.collect();
        self.0.seen.lock().unwrap().events.push((span.id().into_u64(), message.join(" ")));
    }
}

impl Recorder {
    /// One paragraph per flight span.
    fn summary(&self) -> String {
        let seen = self.0.seen.lock().unwrap();
        let mut flights: Vec<_> = seen.spans.iter().filter(|(_, s)| s.0 == "coalescer.flight").collect();
        flights.sort_by_key(|(id, _)| **id);
        let mut out = String::new();
        for (id, (name, fields, leader)) in flights {
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let followers = seen.follows.iter().filter(|(_, cause)| cause == id).count();
            let leader = leader.as_deref().unwrap_or("?");
            let _ = writeln!(out, "{name}{{{}}}: started in request n={leader}", fields.join(" "));
            let _ = writeln!(out, "  {followers} other requests' spans follow from it (follows_from)");
            // Each distinct event once, with how many times it came, in order of first sight.
            let mut events: Vec<(&str, usize)> = Vec::new();
            for (_, message) in seen.events.iter().filter(|(s, _)| s == id) {
                match events.iter_mut().find(|(m, _)| m == message) {
                    Some((_, n)) => *n += 1,
                    None => events.push((message, 1)),
                }
            }
            for (event, n) in events {
                let _ = writeln!(out, "  event x{n}: {event}");
            }
        }
        if out.is_empty() {
            out.push_str("(no flight span was recorded)\n");
        }
        out
    }
}
