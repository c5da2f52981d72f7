//! [`CacheBuilder`]: the cache's policy (times, bounds, runtime hooks).

use super::clock::{Clock, SystemClock, nanos};
use super::refresh::{BoxSleep, BoxSpawn};
use super::{Cache, Inner};
use crate::DefaultHashBuilder;
use crate::{Sleep, Spawn};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The default bound on entries of a [`Cache`].
pub const DEFAULT_MAX_CAPACITY: usize = 4096;

/// The time-to-live of a [`Cache`] built without [`CacheBuilder::time_to_live`].
pub const DEFAULT_TIME_TO_LIVE: Duration = Duration::from_secs(60);

/// The policy, in nanoseconds of the cache's clock.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) ttl: u64,
    pub(crate) jitter: u64,
    pub(crate) refresh_after: Option<u64>,
    pub(crate) max_stale: u64,
    pub(crate) retry_after: u64,
    pub(crate) negative_ttl: Option<u64>,
    pub(crate) early_refresh: Option<f64>,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
}

/// Builds a [`Cache`]: made by [`Cache::builder`].
///
/// Every setting has a default: 4096 entries, a minute to live, no jitter, no refresh ahead,
/// no fail-safe, no negative caching, no timeouts, the system clock.
///
/// # Examples
///
/// ```
/// use coalescer::cache::Cache;
/// use std::time::Duration;
/// let cache = Cache::<String, u64>::builder()
///     .max_capacity(10_000)
///     .time_to_live(Duration::from_secs(30))
///     .jitter(Duration::from_secs(3))              // expiries spread over 30..33 s
///     .refresh_after(Duration::from_secs(20))      // then served while one refresh runs
///     .max_stale(Duration::from_secs(300))         // and served if the refresh fails
///     .retry_after(Duration::from_secs(5))         // failed loads retried at most every 5 s
///     .build();
/// assert_eq!(cache.len(), 0);
/// ```
pub struct CacheBuilder<K, V, E = std::convert::Infallible, S = DefaultHashBuilder> {
    capacity: usize,
    hasher: S,
    config: Config,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Fn() -> f64 + Send + Sync>,
    spawn: Option<BoxSpawn>,
    sleep: Option<BoxSleep>,
    name: Option<std::borrow::Cow<'static, str>>,
    types: Types<K, V, E>,
}

/// The builder's type parameters, held without owning them.
type Types<K, V, E> = PhantomData<fn() -> (K, V, E)>;

impl<K, V, E> CacheBuilder<K, V, E, DefaultHashBuilder> {
    pub(crate) fn new() -> Self {
        Self {
            capacity: DEFAULT_MAX_CAPACITY,
            hasher: DefaultHashBuilder::default(),
            config: Config {
                ttl: nanos(DEFAULT_TIME_TO_LIVE),
                jitter: 0,
                refresh_after: None,
                max_stale: 0,
                retry_after: 0,
                negative_ttl: None,
                early_refresh: None,
                soft_timeout: None,
                hard_timeout: None,
            },
            clock: Arc::new(SystemClock::new()),
            random: Arc::new(fastrand::f64),
            spawn: None,
            sleep: None,
            name: None,
            types: PhantomData,
        }
    }
}

impl<K, V, E, S> CacheBuilder<K, V, E, S> {
    /// Names the cache for observability (features `metrics` and `tracing`): the `cache` label of
    /// its metrics and the name of its loads' group (see
    /// [`Group::named`](crate::Group::named)). With `metrics`, the handles are registered when
    /// the cache is built, with the recorder installed then.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u32, u32>::builder().named("reports").build();
    /// # let _ = cache;
    /// ```
    pub fn named(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// At most about `capacity` entries (rounded up to a power of two, at least 64), allocated
    /// up front. Eviction is per bucket of 32 entries: a full bucket drops its least recently
    /// written entry, so an entry can be evicted before the whole cache is full.
    pub fn max_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// A hasher for the keys (the default is the crate's [`DefaultHashBuilder`], as for
    /// [`Group`](crate::Group); a fixed one makes runs reproducible).
    pub fn hasher<S2>(self, hasher: S2) -> CacheBuilder<K, V, E, S2> {
        CacheBuilder {
            capacity: self.capacity,
            hasher,
            config: self.config,
            clock: self.clock,
            random: self.random,
            spawn: self.spawn,
            sleep: self.sleep,
            name: self.name,
            types: PhantomData,
        }
    }

    /// How long a written value is fresh (before [`jitter`](Self::jitter)).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.config.ttl = nanos(ttl);
        self
    }

    /// Each write's time-to-live is lengthened by a random share of `jitter` (uniform in
    /// `0..jitter`), so that keys written together do not expire together.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.config.jitter = nanos(jitter);
        self
    }

    /// Stale-while-revalidate: from `after` past a write until its expiry, a read returns the
    /// cached value at once and starts one background refresh of the key (see
    /// [`Cache`]'s `# Refresh ahead`). Choose `after` below the time-to-live.
    pub fn refresh_after(mut self, after: Duration) -> Self {
        self.config.refresh_after = Some(nanos(after));
        self
    }

    /// Fail-safe: up to `max_stale` past its expiry, a value is served (as
    /// [`Served::StaleOnFailure`](super::Served::StaleOnFailure)) when its load fails.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.config.max_stale = nanos(max_stale);
        self
    }

    /// After a failed load of a key, no new load of it starts for `retry_after`: reads within
    /// `max_stale` get the stale value meanwhile, others wait for a load as usual.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = nanos(retry_after);
        self
    }

    /// Negative caching: a load's error is kept for `ttl`, and reads meanwhile get it
    /// ([`Error::Negative`](super::Error::Negative)) without a load. Off by default: errors
    /// are shared with the concurrent callers only.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = Some(nanos(ttl));
        self
    }

    /// Probabilistic early refresh (XFetch): before the refresh point (or the expiry, without
    /// `refresh_after`), each read starts the background refresh with a probability that rises
    /// toward it, so that a hot key is refreshed before any caller sees it expire. `beta`
    /// scales how early (1.0 is the paper's default; larger is earlier). A read fires when
    /// `now + load_time * beta * -ln(random()) >= due`, with `load_time` the duration of the
    /// load that wrote the value.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.config.early_refresh = Some(beta);
        self
    }

    /// Where the cache's random numbers (uniform in `0.0..1.0`) come from: jitter and early
    /// refresh. The default is `fastrand`'s thread-local generator; a seeded or fixed source
    /// makes tests reproducible.
    pub fn random(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// The clock (the default is [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Spawns background refreshes (and loads whose callers left at the soft timeout) on a
    /// runtime, so that they run to completion with nobody reading the key. Without it, they
    /// are kept by the entry and driven by later reads. The spawner's tasks must run to
    /// completion when their handle is dropped (the cache asks for detach mode).
    pub fn spawner(mut self, spawn: impl Spawn + Send + Sync + 'static) -> Self {
        self.spawn = Some(BoxSpawn::new(spawn));
        self
    }

    /// The timer for the soft and hard timeouts.
    pub fn timer<Sl>(mut self, sleep: Sl) -> Self
    where
        Sl: Sleep + Send + Sync + 'static,
        Sl::Timer: Send + 'static,
    {
        self.sleep = Some(BoxSleep::new(sleep));
        self
    }

    /// Soft timeout: a caller that waits this long for a load while an expired value within
    /// `max_stale` exists gets that value
    /// ([`Served::StaleOnTimeout`](super::Served::StaleOnTimeout)); the load goes on and fills
    /// the cache. Needs a [`timer`](Self::timer). A hard timeout shorter than this one wins.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.config.soft_timeout = Some(timeout);
        self
    }

    /// Hard timeout: a caller that waits this long for a load gets
    /// [`Error::TimedOut`](super::Error::TimedOut); the load goes on for its other callers.
    /// Needs a [`timer`](Self::timer).
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.config.hard_timeout = Some(timeout);
        self
    }
}

impl<K, V, E, S> CacheBuilder<K, V, E, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// The cache.
    ///
    /// # Panics
    ///
    /// When a soft or hard timeout was set without a [`timer`](Self::timer) (a programming
    /// error, caught at the first build).
    ///
    /// ```should_panic
    /// use std::time::Duration;
    /// coalescer::cache::Cache::<u8, u8>::builder().hard_timeout(Duration::from_secs(1)).build();
    /// ```
    pub fn build(self) -> Cache<K, V, E, S> {
        let timed = self.config.soft_timeout.is_some() || self.config.hard_timeout.is_some();
        assert!(!timed || self.sleep.is_some(), "a cache timeout needs a timer: call `CacheBuilder::timer`");
        Cache {
            inner: Arc::new(Inner::new(
                self.capacity,
                self.hasher,
                self.config,
                self.clock,
                self.random,
                self.spawn,
                self.sleep,
                self.name,
            )),
        }
    }
}

impl<K, V, E, S> fmt::Debug for CacheBuilder<K, V, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("capacity", &self.capacity)
            .field("config", &self.config)
            .field("spawner", &self.spawn.is_some())
            .field("timer", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}
