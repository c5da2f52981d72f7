//! Counters that are cheap enough to leave on: one relaxed increment per event, on the calling
//! thread's own cache line.

use crate::observe::{FlightObs, Observer};
use crate::sync::{CounterAtomic, Ordering::Relaxed};

/// A snapshot of a group's counters, totals since it was created.
///
/// Watch the *shared ratio* `followers / (leaders + followers)` (how much work coalescing
/// saves), leaders per second (the load that still reaches the backend), and `promotions` (leaders
/// dropped mid-flight: timeouts or cancelled requests in work mode).
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let group = coalescer::Group::<u8, u8>::new();
/// group.work(&1, || async { 1 }).await.unwrap();
/// let c = group.counters();
/// assert_eq!((c.leaders, c.followers, c.panics), (1, 0, 0));
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Flights started: calls that found no flight for their key and ran the work.
    pub leaders: u64,
    /// Calls that joined a flight already in the air.
    pub followers: u64,
    /// Followers promoted to run their own work after the leader was dropped (work mode).
    pub promotions: u64,
    /// Flights whose work panicked.
    pub panics: u64,
    /// Detached flights whose runtime dropped the work before it finished.
    pub shutdowns: u64,
    /// Flights whose work was cancelled because every caller left before it finished: a
    /// dropped work-mode leader with no follower, the last caller out of shared work, or of a
    /// detached flight that aborts when abandoned.
    pub cancellations: u64,
    /// Calls to `forget` that detached a flight.
    pub forgets: u64,
    /// Calls for a new key beyond the group's bound on keys in flight: refused, or run alone
    /// (see [`WhenFull`](crate::WhenFull)).
    pub overflows: u64,
}

impl Counters {
    /// `followers / (leaders + followers)`: the share of calls that did not run the work.
    /// `0.0` before any call.
    pub fn shared_ratio(&self) -> f64 {
        let calls = self.leaders + self.followers;
        if calls == 0 { 0.0 } else { self.followers as f64 / calls as f64 }
    }
}

/// The live counters behind [`Counters`] (internal): striped over cache lines, so that two
/// threads counting calls at once do not write the same line (a shared counter line costs
/// every call a cache-line transfer between cores). A thread always counts on its own stripe;
/// a snapshot adds the stripes up.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Stats {
    stripes: [Stripe; STRIPES],
    observer: Observer,
}

/// Threads are spread over this many stripes (one without `std`, which has no thread-locals).
const STRIPES: usize = if cfg!(feature = "std") { 8 } else { 1 };

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    /// One counter per [`Event`], indexed by the event's discriminant.
    counters: [CounterAtomic; EVENTS],
}

/// How many kinds of [`Event`] there are.
const EVENTS: usize = 8;

/// Which counter an event bumps (its discriminant is the counter's index in a stripe).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Leader,
    Follower,
    Promotion,
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // without std a panic cannot be caught
    Panic,
    Shutdown,
    Cancellation,
    Forget,
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // only a `Group` has a bound
    Overflow,
}

// Every event has its counter.
const _: () = assert!(Event::Overflow as usize + 1 == EVENTS);

/// The calling thread's stripe: handed out round-robin the first time a thread counts.
fn stripe() -> usize {
    #[cfg(feature = "std")]
    {
        static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        // A `const` thread-local with no destructor: each access is a plain load from the
        // thread's block, without the lazy one's state check; `STRIPES` marks "not handed out".
        std::thread_local!(static STRIPE: core::cell::Cell<usize> = const { core::cell::Cell::new(STRIPES) });
        STRIPE.with(|s| {
            let stripe = s.get();
            if stripe < STRIPES {
                return stripe;
            }
            let stripe = NEXT.fetch_add(1, Relaxed) % STRIPES;
            s.set(stripe);
            stripe
        })
    }
    #[cfg(not(feature = "std"))]
    {
        0
    }
}

impl Stats {
    /// Counts `event` (of the flight that `obs` belongs to, if any) and reports it to the
    /// observer (nothing, without the observability features).
    #[inline]
    pub(crate) fn record(&self, event: Event, obs: Option<&FlightObs>) {
        // The observer first: its tests then need nothing kept across the count (without the
        // features it is nothing).
        self.observer.event(event, obs);
        self.count(event);
    }

    /// The table's observer.
    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Reports under `name` from now on (registers its metrics handles anew).
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // only `Group::named` (std) uses it
    pub(crate) fn rename(&mut self, name: alloc::borrow::Cow<'static, str>) {
        self.observer = Observer::named(name);
    }

    #[inline]
    fn count(&self, event: Event) {
        // The discriminant indexes the stripe's counters: no branch on the event.
        self.stripes[stripe()].counters[event as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let sum = |event: Event| {
            self.stripes
                .iter()
                // A no-op where the counters are `AtomicU64`; widens a `usize` elsewhere.
                .map(|s| {
                    #[allow(clippy::useless_conversion)]
                    u64::try_from(s.counters[event as usize].load(Relaxed)).unwrap_or(u64::MAX)
                })
                .sum::<u64>()
        };
        Counters {
            leaders: sum(Event::Leader),
            followers: sum(Event::Follower),
            promotions: sum(Event::Promotion),
            panics: sum(Event::Panic),
            shutdowns: sum(Event::Shutdown),
            cancellations: sum(Event::Cancellation),
            forgets: sum(Event::Forget),
            overflows: sum(Event::Overflow),
        }
    }
}
