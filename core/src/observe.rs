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
//! A flight's span is made only when the global maximum level lets an `info` span through (a
//! subscriber set at any time, globally or for a thread, raises it) and a subscriber wants it;
//! a flight carries one word, which holds nothing, a named group's start, or a boxed span. With
//! the features on and nothing installed, a flight of a group never named pays a few tests and
//! the metrics crate's no-op counter calls: `ci/observe-overhead.sh` counts it (S1 within 5%).
//! Keys are never labels or span fields unless the user asks for them
//! ([`Group::trace_keys`](crate::Group::trace_keys)), for cardinality and for secrecy.

#![cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]

use crate::stats::Event;

/// The name a group reports under until it is given one.
pub(crate) const DEFAULT_NAME: &str = "default";

/// What one flight carries for observability, in one word, so that a `Flight` (every leader's
/// one allocation, made in place by `sync::arc_in_place`) stays small. The word is
///
/// - `3` ([`PENDING`]) from the flight's creation until its leader gives it its observer
///   (see [`FlightObs::set`]): a follower that joins in between leaves its own report (the
///   link from its span, the join event) until the observer is there (see
///   [`Observer::joined`]);
/// - `1` ([`NOBODY`]) when nobody watches the flight: no subscriber wanted its span and its
///   group is not named (what a flight costs with the features on and nothing installed);
/// - odd and above `3`, `started << 1 | 1`, when the flight is only timed (a named group's,
///   with no span): `started` from [`since_epoch`], never below `2`, no allocation;
/// - even when it has a span: the address of a boxed [`Watched`] (the span, and the start if
///   timed), from `Box::into_raw` with its provenance exposed, freed when the flight is
///   dropped.
///
/// Each question (a span? anything? pending?) is then one test of the word: in particular the
/// pending word is odd, so that the tests of the paths that run for every flight (a span? a
/// box to free?) need not know of it.
///
/// The word is set once, by the flight's leader right after its join (see [`FlightObs::set`]):
/// a flight that loses the race to be its key's flight is dropped without ever making a span.
/// `FlightObs::default()` is a new flight's (pending); [`FlightObs::nobody`] is what a flight
/// nobody watches is given.
pub(crate) struct FlightObs {
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    word: core::sync::atomic::AtomicU64,
}

impl core::fmt::Debug for FlightObs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("FlightObs");
        #[cfg(feature = "tracing")]
        d.field("span", &self.span());
        #[cfg(feature = "metrics")]
        d.field("started", &self.started());
        d.finish()
    }
}

/// A flight's span, and its start if its group times flights: boxed, behind a
/// [`FlightObs`] word.
#[cfg(feature = "tracing")]
#[derive(Debug)]
struct Watched {
    span: tracing::Span,
    #[cfg(feature = "metrics")]
    started: Option<u64>,
}

/// The word of a new flight, whose leader has not given it its observer yet.
#[cfg(any(feature = "tracing", feature = "metrics"))]
const PENDING: u64 = 3;

/// The word of a flight nobody watches.
#[cfg(any(feature = "tracing", feature = "metrics"))]
const NOBODY: u64 = 1;

/// A new flight's: pending, until its leader [sets](FlightObs::set) what it carries.
#[allow(clippy::derivable_impls)] // without the features it is empty, and derivable
impl Default for FlightObs {
    fn default() -> Self {
        Self {
            #[cfg(any(feature = "tracing", feature = "metrics"))]
            word: core::sync::atomic::AtomicU64::new(PENDING),
        }
    }
}

// The word owns the box, and a `u64` is `Send` and `Sync` whatever it stands for: what the box
// holds must be both (a `Span` is), and aligned, so that its address is even.
#[cfg(feature = "tracing")]
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Watched>();
    assert!(align_of::<Watched>() >= 2);
};

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

    /// The metrics handles, registered now if they were not yet: inlined, a load and a test
    /// once they are (the registration is out of line).
    #[cfg(feature = "metrics")]
    #[inline]
    fn metrics(&self) -> &Metrics {
        match self.metrics.get() {
            Some(metrics) => metrics,
            None => self.register(),
        }
    }

    #[cfg(feature = "metrics")]
    #[cold]
    #[inline(never)]
    fn register(&self) -> &Metrics {
        self.metrics.get_or_init(|| Metrics::register(&self.name))
    }

    /// What a new flight carries: a span (a child of the leader's current span, with the key
    /// when `key` formats it), and its start.
    ///
    /// Inlined, so that a flight nobody watches pays a load and a test or two: the span is made
    /// (out of line) only when the global maximum level lets an `info` span through, the first
    /// test of `tracing`'s own `span!`, and the clock read only for a named group.
    #[inline]
    #[allow(unused_variables)]
    pub(crate) fn flight(&self, key: Option<&dyn core::fmt::Debug>) -> FlightObs {
        #[cfg(feature = "tracing")]
        if info_enabled() {
            return self.watched(key);
        }
        #[cfg(feature = "metrics")]
        if self.histograms {
            return self.watched(key);
        }
        FlightObs::nobody()
    }

    /// What a flight that may be watched carries: its span if a subscriber wants it, its start
    /// if the group is named.
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    #[cold]
    #[inline(never)]
    #[allow(unused_variables)]
    fn watched(&self, key: Option<&dyn core::fmt::Debug>) -> FlightObs {
        #[cfg(feature = "metrics")]
        let started = self.histograms.then(since_epoch);
        #[cfg(feature = "tracing")]
        if info_enabled() {
            let span =
                tracing::info_span!("coalescer.flight", group = %self.name, key = tracing::field::Empty);
            if !span.is_disabled() {
                if let Some(key) = key {
                    span.record("key", tracing::field::debug(key));
                }
                let watched = alloc::boxed::Box::new(Watched {
                    span,
                    #[cfg(feature = "metrics")]
                    started,
                });
                return FlightObs::from_word(alloc::boxed::Box::into_raw(watched).expose_provenance() as u64);
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(started) = started {
            return FlightObs::from_word((started << 1) | 1);
        }
        FlightObs::nobody()
    }

    /// A follower joined the flight that `obs` belongs to while its observer was still
    /// [pending](FlightObs::is_pending), and the observer is there now: the report its join
    /// left (the link from the caller's current span, the join event) is made now. Its counts
    /// were made at the join.
    #[cfg(feature = "tracing")]
    #[cold]
    #[inline(never)]
    pub(crate) fn joined(&self, obs: &FlightObs) {
        trace_event(Event::Follower, Some(obs));
    }

    /// Reports `event` of the flight that `obs` belongs to (or of none).
    #[inline]
    #[allow(unused_variables)]
    pub(crate) fn event(&self, event: Event, obs: Option<&FlightObs>) {
        // A flight's span says it started.
        #[cfg(feature = "tracing")]
        if !matches!(event, Event::Leader) {
            trace_event(event, obs);
        }
        #[cfg(feature = "metrics")]
        self.metrics().count(event);
    }

    /// A flight ended; `waiters` callers received its result.
    #[inline]
    #[allow(unused_variables)]
    pub(crate) fn ended(&self, obs: &FlightObs, waiters: usize) {
        if obs.is_watched() {
            self.ended_watched(obs, waiters);
        }
    }

    #[cold]
    #[inline(never)]
    #[allow(unused_variables)]
    fn ended_watched(&self, obs: &FlightObs, waiters: usize) {
        #[cfg(feature = "metrics")]
        if let Some(started) = obs.started() {
            let metrics = self.metrics();
            #[allow(clippy::cast_precision_loss)] // nanoseconds: exact up to 104 days
            metrics.duration.record(since_epoch().saturating_sub(started) as f64 / 1e9);
            #[allow(clippy::cast_precision_loss)] // a count of callers
            metrics.waiters.record(waiters as f64);
        }
        #[cfg(feature = "tracing")]
        if let Some(span) = obs.span() {
            tracing::debug!(parent: span, waiters, "coalescer: flight ended");
        }
    }
}

/// Whether an `info` span may be enabled at all: the first test of `tracing`'s `span!`, one
/// relaxed load (the maximum level is raised when a subscriber is set, globally or scoped).
#[cfg(feature = "tracing")]
#[inline]
fn info_enabled() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    tracing::Level::INFO <= STATIC_MAX_LEVEL && tracing::Level::INFO <= LevelFilter::current()
}

/// Nanoseconds since the first flight this process timed, plus two: never below `2` (so that
/// a timed word is never [`NOBODY`] or [`PENDING`]), and below `2^63`, so that a start fits in
/// a [`FlightObs`] word with its tag.
#[cfg(feature = "metrics")]
fn since_epoch() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let nanos = EPOCH.get_or_init(std::time::Instant::now).elapsed().as_nanos();
    // 2^63 nanoseconds are 292 years.
    u64::try_from(nanos).unwrap_or(u64::MAX).clamp(2, u64::MAX >> 1)
}

#[cfg(feature = "tracing")]
impl Drop for FlightObs {
    /// Inlined, and the box freed out of line: the drop of a flight with no span is a test.
    #[inline]
    fn drop(&mut self) {
        let word = *self.word.get_mut();
        if word & 1 == 0 {
            free(word);
        }
    }
}

/// Frees the box behind a [`FlightObs`] word (its drop).
#[cfg(feature = "tracing")]
#[cold]
#[inline(never)]
fn free(word: u64) {
    let watched = core::ptr::with_exposed_provenance_mut::<Watched>(word as usize);
    // SAFETY: an even word is only ever made by `Observer::watched`, from
    // `Box::into_raw` (provenance exposed there), and this is the drop of the one `FlightObs`
    // that holds it (it is neither `Clone` nor `Copy`): the box is live and freed once.
    drop(unsafe { alloc::boxed::Box::from_raw(watched) });
}

impl FlightObs {
    /// A flight's observer from its word.
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    fn from_word(word: u64) -> Self {
        Self { word: core::sync::atomic::AtomicU64::new(word) }
    }

    /// The word (see the type's docs).
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    #[inline]
    fn word(&self) -> u64 {
        self.word.load(core::sync::atomic::Ordering::Acquire)
    }

    /// What a flight nobody watches carries.
    pub(crate) fn nobody() -> Self {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        return Self::from_word(NOBODY);
        #[cfg(not(any(feature = "tracing", feature = "metrics")))]
        Self {}
    }

    /// Gives a new flight (its word is [`PENDING`]) what `obs` carries. Called once, by the
    /// flight's leader, right after its join, so that a flight that lost the race to be its
    /// key's flight never made a span. A caller that joins in between finds the flight
    /// [pending](Self::is_pending), and makes its report once the leader has set it (see
    /// [`Observer::joined`]). Returns whether the flight has a span now (its followers that
    /// joined early are then woken to report their joins).
    #[inline]
    pub(crate) fn set(&self, obs: FlightObs) -> bool {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            let obs = core::mem::ManuallyDrop::new(obs);
            let word = obs.word.load(core::sync::atomic::Ordering::Relaxed);
            let before = self.word.swap(word, core::sync::atomic::Ordering::AcqRel);
            debug_assert_eq!(before, PENDING, "a flight's observer is set once");
            cfg!(feature = "tracing") && word & 1 == 0
        }
        #[cfg(not(any(feature = "tracing", feature = "metrics")))]
        {
            let _ = obs;
            false
        }
    }

    /// Whether the flight has a span (a subscriber wanted it).
    #[cfg(feature = "tracing")]
    #[inline]
    #[cfg(test)]
    pub(crate) fn has_span(&self) -> bool {
        self.boxed().is_some()
    }

    /// Whether the flight's leader has yet to give it what it carries (see [`set`](Self::set)):
    /// a follower's report of its join must wait (only spans need it).
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.word() == PENDING
    }

    /// Whether anything may watch this flight: it has a span or is timed (or, if its leader
    /// never set it, is still pending: [`started`](Self::started) and [`span`](Self::span)
    /// then say there is nothing).
    #[inline]
    fn is_watched(&self) -> bool {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        return self.word() != NOBODY;
        #[cfg(not(any(feature = "tracing", feature = "metrics")))]
        false
    }

    /// The box behind the word, if the flight has a span.
    #[cfg(feature = "tracing")]
    #[inline]
    fn boxed(&self) -> Option<&Watched> {
        let word = self.word();
        if word & 1 == 1 {
            return None;
        }
        let watched = core::ptr::with_exposed_provenance::<Watched>(word as usize);
        // SAFETY: an even word is the address of a box made by
        // `Observer::watched` (provenance exposed there; stored by `set` with `AcqRel` and read
        // here with `Acquire`, so the box is seen whole) and freed only by the drop of this
        // `FlightObs`, which cannot run while `self` is borrowed.
        Some(unsafe { &*watched })
    }

    /// The flight's span, if a subscriber wanted it.
    #[cfg(feature = "tracing")]
    #[inline]
    fn span(&self) -> Option<&tracing::Span> {
        self.boxed().map(|w| &w.span)
    }

    /// When the flight started (nanoseconds since [`since_epoch`]'s epoch), if it is timed.
    #[cfg(feature = "metrics")]
    fn started(&self) -> Option<u64> {
        let word = self.word();
        if word & 1 == 1 {
            return (word != NOBODY && word != PENDING).then_some(word >> 1);
        }
        #[cfg(feature = "tracing")]
        return self.boxed().and_then(|w| w.started);
        #[cfg(not(feature = "tracing"))]
        None
    }

    /// Runs `f`, a [`catch`](crate::sync::catch), inside the flight's span (the work is
    /// polled there, so its own spans and events nest under the flight).
    ///
    /// `f` returns instead of unwinding (it catches), so the span is entered and left around
    /// it out of line with no guard: a guard alive across `f` (a drop on the unwinding edge)
    /// kept the compiler from folding the caller's match on the result, 35 instructions per
    /// S1 call with no subscriber.
    #[inline]
    pub(crate) fn in_span<R>(
        &self,
        f: impl FnOnce() -> Result<R, crate::sync::Caught>,
    ) -> Result<R, crate::sync::Caught> {
        #[cfg(feature = "tracing")]
        if let Some(span) = self.span() {
            let entered = enter(span);
            let caught = f();
            exit(entered);
            return caught;
        }
        f()
    }
}

/// Enters `span` (out of line: only for a flight a subscriber wanted). The guard is kept in
/// a `ManuallyDrop`, so that nothing needs dropping if the caller unwinds before [`exit`].
#[cfg(feature = "tracing")]
#[cold]
#[inline(never)]
fn enter(span: &tracing::Span) -> core::mem::ManuallyDrop<tracing::span::Entered<'_>> {
    core::mem::ManuallyDrop::new(span.enter())
}

/// Leaves the span [`enter`] entered.
#[cfg(feature = "tracing")]
#[cold]
#[inline(never)]
fn exit(entered: core::mem::ManuallyDrop<tracing::span::Entered<'_>>) {
    drop(core::mem::ManuallyDrop::into_inner(entered));
}

/// Reports `event` of the flight that `obs` belongs to (if it has a span), or of none.
#[cfg(feature = "tracing")]
#[cold]
#[inline(never)]
fn trace_event(event: Event, obs: Option<&FlightObs>) {
    let parent = match obs {
        None => None,
        Some(obs) => match obs.span() {
            Some(span) => span.id(),
            None => return,
        },
    };
    match event {
        // The flight's span says it started.
        Event::Leader => {}
        Event::Follower => {
            // The joining caller's span follows from the flight's.
            if let Some(span) = obs.and_then(FlightObs::span) {
                tracing::Span::current().follows_from(span);
                tracing::debug!(parent: span, "coalescer: a caller joined");
            }
        }
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
    /// Each [`Event`]'s counter, at `event as usize` (named in `COUNTERS`): counting is an
    /// index, not a `match`.
    counters: [metrics::Counter; COUNTERS.len()],
    duration: metrics::Histogram,
    waiters: metrics::Histogram,
}

/// Each event's counter, its name and description, in the order of [`Event`]'s variants.
#[cfg(feature = "metrics")]
const COUNTERS: [(Event, &str, &str); 8] = [
    (Event::Leader, "coalescer.flights", "flights started"),
    (Event::Follower, "coalescer.joins", "calls that joined a flight in the air"),
    (Event::Promotion, "coalescer.promotions", "followers promoted after their leader left"),
    (Event::Panic, "coalescer.panics", "panics of the work"),
    (Event::Shutdown, "coalescer.shutdowns", "detached flights dropped by their runtime"),
    (Event::Cancellation, "coalescer.cancellations", "flights abandoned by their last caller"),
    (Event::Forget, "coalescer.forgets", "flights detached from their key"),
    (Event::Overflow, "coalescer.overflows", "calls beyond the bound on keys in flight"),
];

#[cfg(feature = "metrics")]
impl Metrics {
    fn register(name: &str) -> Self {
        use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
        let group = alloc::string::String::from(name);
        for (event, name, description) in COUNTERS {
            debug_assert_eq!(COUNTERS[event as usize].1, name, "COUNTERS is in the order of Event");
            describe_counter!(name, Unit::Count, description);
        }
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
            counters: COUNTERS.map(|(_, name, _)| counter!(name, "group" => group.clone())),
            duration: histogram!("coalescer.flight.duration", "group" => group.clone()),
            waiters: histogram!("coalescer.flight.waiters", "group" => group),
        }
    }

    #[inline]
    fn count(&self, event: Event) {
        self.counters[event as usize].increment(1);
    }
}

#[cfg(all(test, any(feature = "tracing", feature = "metrics")))]
mod tests {
    use super::*;

    #[test]
    fn a_flight_nobody_watches_is_one_word_with_nothing_behind_it() {
        assert_eq!(size_of::<FlightObs>(), size_of::<u64>());
        let obs = FlightObs::nobody();
        assert!(!obs.is_watched());
        #[cfg(feature = "tracing")]
        assert!(!obs.is_pending());
        #[cfg(feature = "tracing")]
        assert!(obs.span().is_none());
        #[cfg(feature = "metrics")]
        assert_eq!(obs.started(), None);
    }

    #[test]
    fn a_new_flight_is_pending_until_its_leader_sets_what_it_carries() {
        let obs = FlightObs::default();
        #[cfg(feature = "tracing")]
        assert!(obs.is_pending() && !obs.has_span());
        #[cfg(feature = "metrics")]
        assert_eq!(obs.started(), None);
        obs.set(FlightObs::nobody());
        assert!(!obs.is_watched());
        #[cfg(feature = "tracing")]
        assert!(!obs.is_pending());
        // A flight dropped while pending frees nothing (Miri would see a bad free).
        let _pending = FlightObs::default();
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn a_flight_only_timed_keeps_its_start_in_the_word() {
        for started in [2, 3, 12_345, u64::MAX >> 1] {
            let obs = FlightObs::from_word((started << 1) | 1);
            assert!(obs.is_watched());
            assert_eq!(obs.started(), Some(started));
            #[cfg(feature = "tracing")]
            assert!(obs.span().is_none());
        }
    }

    #[cfg(feature = "tracing")]
    #[test]
    fn a_flight_with_a_span_keeps_it_and_its_start_in_a_box() {
        let watched = alloc::boxed::Box::new(Watched {
            span: tracing::Span::none(),
            #[cfg(feature = "metrics")]
            started: Some(7),
        });
        let obs = FlightObs::from_word(alloc::boxed::Box::into_raw(watched).expose_provenance() as u64);
        assert!(obs.is_watched());
        assert!(obs.span().is_some());
        #[cfg(feature = "metrics")]
        assert_eq!(obs.started(), Some(7));
        drop(obs); // frees the box (Miri would see a leak or a double free)
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn a_flight_duration_is_the_time_since_its_start_in_seconds() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let observer = metrics::with_local_recorder(&recorder, || Observer::named("unit".into()));
        // A start 10 ms back needs the epoch 10 ms behind (it is set at the first timing).
        const BACK: u64 = 10_000_000;
        while since_epoch() <= BACK {
            std::hint::spin_loop();
        }
        let before = since_epoch();
        observer.ended(&FlightObs::from_word(((before - BACK) << 1) | 1), 3);
        let after = since_epoch();
        let snapshot = snapshotter.snapshot().into_vec();
        let histogram = |name: &str| match snapshot.iter().find(|(k, _, _, _)| k.key().name() == name) {
            Some((_, _, _, DebugValue::Histogram(values))) => {
                values.iter().map(|v| v.0).collect::<alloc::vec::Vec<f64>>()
            }
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(histogram("coalescer.flight.waiters"), [3.0]);
        let durations = histogram("coalescer.flight.duration");
        #[allow(clippy::cast_precision_loss)]
        let (low, high) = (BACK as f64 / 1e9, (after - before + BACK) as f64 / 1e9);
        assert!(durations.len() == 1 && (low..=high).contains(&durations[0]), "{durations:?} {low} {high}");
    }
}
