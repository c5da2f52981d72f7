//! Optional observability, compiled in only with its features: `tracing` (a span per flight,
//! each follower's span linked to it with `follows_from`, events for promotions, panics,
//! cancellations, shutdowns, forgets and bound overflows) and `metrics` (counters and
//! histograms, registered once per group, labelled by the group's name alone).
//!
//! With both features off every type here is empty and every function does nothing, so the
//! hot path is the same code as without this module.
//!
//! Names follow OpenTelemetry's style (dot-separated, unit in the description):
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `coalescer.flights` | counter | flights started (a leader's call for a key with none in the air) |
//! | `coalescer.joins` | counter | calls that joined a flight in the air (followers) |
//! | `coalescer.promotions` | counter | followers promoted after a work-mode leader was dropped |
//! | `coalescer.panics` | counter | panics of the work (its poll or its `Drop`) |
//! | `coalescer.cancellations` | counter | flights abandoned by their last caller |
//! | `coalescer.shutdowns` | counter | detached flights whose task the runtime dropped |
//! | `coalescer.forgets` | counter | flights detached from their key by `forget` |
//! | `coalescer.overflows` | counter | calls for a new key beyond the bound on keys in flight |
//! | `coalescer.flight.duration` | histogram, seconds | from a flight's start to its end (named groups) |
//! | `coalescer.flight.waiters` | histogram | callers that received each flight's result (named groups) |
//!
//! Every metric carries one label, `group`, with the name given to
//! [`Group::named`](crate::Group::named) (`"default"` for a group never named). A named group
//! registers its handles when it is named, with the recorder installed then; one never named,
//! at its first event, and only the counters: the histograms time each flight, so they are
//! kept for the groups that were named (what a group that nobody watches need not pay).
//!
//! A flight's span is made only when a subscriber is interested in it (and kept boxed), so with
//! the feature on and no subscriber a flight pays the callsite's check and nothing else. Keys are never labels or span
//! fields unless the user asks for them ([`Group::trace_keys`](crate::Group::trace_keys)), for
//! cardinality and for secrecy.

#![cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]

use crate::stats::Event;

/// The name a group reports under until it is given one.
pub(crate) const DEFAULT_NAME: &str = "default";

/// What one flight carries for observability: its span (boxed, and only when a subscriber
/// wants it: a flight stays small and a disabled span costs nothing to carry), and its start
/// (only for a named group, which records the duration histogram).
#[derive(Debug)]
pub(crate) struct FlightObs {
    #[cfg(feature = "tracing")]
    span: Option<alloc::boxed::Box<tracing::Span>>,
    #[cfg(feature = "metrics")]
    started: Option<std::time::Instant>,
}

/// A table's instruments: its name and its metrics handles.
#[derive(Debug)]
pub(crate) struct Observer {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    name: alloc::borrow::Cow<'static, str>,
    /// Registered when the table is named, or at its first event if it never is.
    #[cfg(feature = "metrics")]
    metrics: std::sync::OnceLock<Metrics>,
    /// The table was named: its flights are timed for the histograms.
    #[cfg(feature = "metrics")]
    histograms: bool,
}

// Not derived: without the features the struct is empty and a derive would do; with them the
// name defaults to `DEFAULT_NAME`, not to "".
#[allow(clippy::derivable_impls)]
impl Default for Observer {
    fn default() -> Self {
        Self {
            #[cfg(any(feature = "tracing", feature = "metrics"))]
            name: alloc::borrow::Cow::Borrowed(DEFAULT_NAME),
            #[cfg(feature = "metrics")]
            metrics: std::sync::OnceLock::new(),
            #[cfg(feature = "metrics")]
            histograms: false,
        }
    }
}

impl Observer {
    /// Instruments for a table called `name`; with `metrics`, its handles are registered now,
    /// with the recorder installed at this moment.
    pub(crate) fn named(name: alloc::borrow::Cow<'static, str>) -> Self {
        let _ = &name;
        Self {
            #[cfg(feature = "metrics")]
            metrics: Metrics::register(&name).into(),
            #[cfg(feature = "metrics")]
            histograms: true,
            #[cfg(any(feature = "tracing", feature = "metrics"))]
            name,
        }
    }

    /// The metrics handles, registered now if they were not yet.
    #[cfg(feature = "metrics")]
    fn metrics(&self) -> &Metrics {
        self.metrics.get_or_init(|| Metrics::register(&self.name))
    }

    /// What a new flight carries: a span (a child of the leader's current span, with the key
    /// when `key` formats it), and its start.
    #[allow(unused_variables)]
    pub(crate) fn flight(&self, key: Option<&dyn core::fmt::Debug>) -> FlightObs {
        FlightObs {
            #[cfg(feature = "tracing")]
            span: {
                let span =
                    tracing::info_span!("coalescer.flight", group = %self.name, key = tracing::field::Empty);
                if let Some(key) = key.filter(|_| !span.is_disabled()) {
                    span.record("key", tracing::field::debug(key));
                }
                (!span.is_disabled()).then(|| alloc::boxed::Box::new(span))
            },
            #[cfg(feature = "metrics")]
            started: self.histograms.then(std::time::Instant::now),
        }
    }

    /// Reports `event` of the flight that `obs` belongs to (or of none).
    #[allow(unused_variables)]
    pub(crate) fn event(&self, event: Event, obs: Option<&FlightObs>) {
        #[cfg(feature = "metrics")]
        self.metrics().count(event);
        #[cfg(feature = "tracing")]
        if let Some(span) = obs.and_then(|o| o.span.as_deref()) {
            trace_event(event, Some(span));
        } else if obs.is_none() {
            trace_event(event, None);
        }
    }

    /// A flight ended; `waiters` callers received its result.
    #[allow(unused_variables)]
    pub(crate) fn ended(&self, obs: &FlightObs, waiters: usize) {
        #[cfg(feature = "metrics")]
        if let Some(started) = obs.started {
            let metrics = self.metrics();
            metrics.duration.record(started.elapsed().as_secs_f64());
            #[allow(clippy::cast_precision_loss)] // a count of callers
            metrics.waiters.record(waiters as f64);
        }
        #[cfg(feature = "tracing")]
        if let Some(span) = &obs.span {
            tracing::debug!(parent: &**span, waiters, "coalescer: flight ended");
        }
    }
}

impl FlightObs {
    /// Runs `f` inside the flight's span (the work is polled there, so its own spans and events
    /// nest under the flight).
    pub(crate) fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tracing")]
        let _entered = self.span.as_deref().map(tracing::Span::enter);
        f()
    }

    /// A caller joined this flight: its current span follows from the flight's.
    pub(crate) fn joined(&self) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            tracing::Span::current().follows_from(&**span);
            tracing::debug!(parent: &**span, "coalescer: a caller joined");
        }
    }
}

#[cfg(feature = "tracing")]
fn trace_event(event: Event, span: Option<&tracing::Span>) {
    let parent = span.and_then(tracing::Span::id);
    match event {
        // The flight's span says it started; a join is reported by `FlightObs::joined`.
        Event::Leader | Event::Follower => {}
        Event::Promotion => tracing::info!(parent: parent, "coalescer: a follower was promoted to lead"),
        Event::Panic => tracing::warn!(parent: parent, "coalescer: the work panicked"),
        Event::Shutdown => tracing::warn!(parent: parent, "coalescer: the runtime dropped the detached work"),
        Event::Cancellation => {
            tracing::info!(parent: parent, "coalescer: the last caller left; work cancelled")
        }
        Event::Forget => tracing::info!(parent: parent, "coalescer: flight forgotten"),
        Event::Overflow => tracing::warn!(parent: parent, "coalescer: bound on keys in flight reached"),
    }
}

/// The metrics handles of one table, registered once.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Metrics {
    flights: metrics::Counter,
    joins: metrics::Counter,
    promotions: metrics::Counter,
    panics: metrics::Counter,
    cancellations: metrics::Counter,
    shutdowns: metrics::Counter,
    forgets: metrics::Counter,
    overflows: metrics::Counter,
    duration: metrics::Histogram,
    waiters: metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn register(name: &str) -> Self {
        use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
        let group = alloc::string::String::from(name);
        describe_counter!("coalescer.flights", Unit::Count, "flights started");
        describe_counter!("coalescer.joins", Unit::Count, "calls that joined a flight in the air");
        describe_counter!("coalescer.promotions", Unit::Count, "followers promoted after their leader left");
        describe_counter!("coalescer.panics", Unit::Count, "panics of the work");
        describe_counter!("coalescer.cancellations", Unit::Count, "flights abandoned by their last caller");
        describe_counter!("coalescer.shutdowns", Unit::Count, "detached flights dropped by their runtime");
        describe_counter!("coalescer.forgets", Unit::Count, "flights detached from their key");
        describe_counter!("coalescer.overflows", Unit::Count, "calls beyond the bound on keys in flight");
        describe_histogram!(
            "coalescer.flight.duration",
            Unit::Seconds,
            "time from a flight's start to its end"
        );
        describe_histogram!(
            "coalescer.flight.waiters",
            Unit::Count,
            "callers that received a flight's result"
        );
        Self {
            flights: counter!("coalescer.flights", "group" => group.clone()),
            joins: counter!("coalescer.joins", "group" => group.clone()),
            promotions: counter!("coalescer.promotions", "group" => group.clone()),
            panics: counter!("coalescer.panics", "group" => group.clone()),
            cancellations: counter!("coalescer.cancellations", "group" => group.clone()),
            shutdowns: counter!("coalescer.shutdowns", "group" => group.clone()),
            forgets: counter!("coalescer.forgets", "group" => group.clone()),
            overflows: counter!("coalescer.overflows", "group" => group.clone()),
            duration: histogram!("coalescer.flight.duration", "group" => group.clone()),
            waiters: histogram!("coalescer.flight.waiters", "group" => group),
        }
    }

    fn count(&self, event: Event) {
        let counter = match event {
            Event::Leader => &self.flights,
            Event::Follower => &self.joins,
            Event::Promotion => &self.promotions,
            Event::Panic => &self.panics,
            Event::Cancellation => &self.cancellations,
            Event::Shutdown => &self.shutdowns,
            Event::Forget => &self.forgets,
            Event::Overflow => &self.overflows,
        };
        counter.increment(1);
    }
}
