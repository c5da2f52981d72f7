//! [`Clock`]: where the cache's time comes from, so that tests drive it without sleeping.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// A monotonic clock: the time elapsed since an origin of the clock's choosing.
///
/// The cache reads it once per call, to decide whether a value is fresh, due for a refresh,
/// expired or past its fail-safe window. The default is [`SystemClock`]; tests use
/// [`ManualClock`] to move time forward without sleeping.
///
/// # Implementing
///
/// `now` must never go backwards and must be cheap (it is on the hit path). It runs while no
/// lock is held; a panic in it propagates to the caller of the cache method, before the cache
/// was touched.
///
/// # Examples
///
/// ```
/// use coalescer::cache::Clock;
/// use std::time::Duration;
/// struct Frozen;
/// impl Clock for Frozen {
///     fn now(&self) -> Duration { Duration::from_secs(5) }
/// }
/// assert_eq!(Frozen.now(), Duration::from_secs(5));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The time since the clock's origin.
    fn now(&self) -> Duration;
}

/// The default [`Clock`]: [`std::time::Instant`], measured from the clock's creation.
///
/// # Examples
///
/// ```
/// use coalescer::cache::{Clock, SystemClock};
/// let clock = SystemClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A [`Clock`] that moves only when told to: for tests, and for simulations.
///
/// Share it with the cache through an `Arc` (`Arc<ManualClock>` is a `Clock` too) and call
/// [`advance`](Self::advance) from the test.
///
/// # Examples
///
/// ```
/// use coalescer::cache::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now(), Duration::from_millis(1500));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at its origin (time zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(nanos(by), SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(SeqCst))
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// A duration in whole nanoseconds, saturating (about 584 years fit).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
