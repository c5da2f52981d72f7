//! A loader cache that never stampedes: every load is a flight of a [`Group`](crate::Group),
//! so a key is loaded at most once at a time in the process, whatever triggered the load (a
//! miss, an expiry, a refresh ahead of expiry, a retry after an error).
//!
//! [`Cache`] adds to the coalescing what a cache in front of a slow source needs at the
//! *expiry edge* of a hot key, where a plain TTL cache sends every caller that arrives during
//! the reload to wait for it:
//!
//! - **Fresh hits** return at once: no wait, no load.
//! - **Time to live with jitter**: each write's expiry is spread randomly, so keys filled
//!   together do not expire together.
//! - **Stale-while-revalidate** (`refresh_after`): past the refresh point a read returns the
//!   cached value at once and starts one background refresh, which nobody waits for.
//! - **Fail-safe** (`max_stale`, `retry_after`): when a load fails, callers get the last good
//!   value, and the next attempt is throttled.
//! - **Early refresh** (`early_refresh`, XFetch): a hot key is refreshed, by chance rising
//!   toward its expiry, before any caller sees it expire.
//! - **Soft and hard timeouts**, **negative caching**, a **bound** with eviction, a [`Clock`]
//!   that tests drive, and [counters](CacheCounters).
//!
//! Every read says how it was [`Served`].
//!
//! # Examples
//!
//! ```
//! use coalescer::cache::{Cache, Served};
//! use std::time::Duration;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let reports = Cache::<String, u64>::builder()
//!     .time_to_live(Duration::from_secs(60))
//!     .refresh_after(Duration::from_secs(45))
//!     .build();
//! let report = reports.get_with("daily".to_string(), || async { 42 }).await.unwrap();
//! assert_eq!((*report.value(), report.served()), (42, Served::Loaded));
//! let again = reports.get_with("daily".to_string(), || async { unreachable!("a fresh hit never loads") });
//! assert_eq!(again.await.unwrap().served(), Served::Fresh);
//! # });
//! ```

mod builder;
mod clock;
mod entry;
mod error;
mod load;
mod refresh;
mod served;
mod stats;
mod store;

pub use builder::{CacheBuilder, DEFAULT_MAX_CAPACITY, DEFAULT_TIME_TO_LIVE};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use served::{Read, Served};
pub use stats::CacheCounters;

use crate::DefaultHashBuilder;
use load::Lookup;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use store::Inner;

/// A bounded loader cache whose loads are coalesced flights: see the [module docs](self).
///
/// `E` is the loaders' error type ([`Infallible`] for [`get_with`](Self::get_with)): the cache
/// fixes it because a load's error is shared with every caller of that load, and kept when
/// [negative caching](CacheBuilder::negative_ttl) is on. Cloning a `Cache` is cheap: the clones
/// share one cache.
///
/// # Refresh ahead
///
/// With [`refresh_after`](CacheBuilder::refresh_after), the first read past a value's refresh
/// point (and before its expiry) claims the key's refresh, returns the cached value
/// ([`Served::Refreshing`]) and starts the load; every other read meanwhile returns the cached
/// value too. The refresh is one of the key's flights, so it never runs twice at once, and a
/// caller that needs a value after the expiry joins it. It runs without a caller staying to
/// poll it:
///
/// - with a [spawner](CacheBuilder::spawner) it is spawned, and runs to completion even if
///   nobody reads the key again;
/// - without one, the entry keeps it, and each later read of the key polls it once if it was
///   woken (never waiting for it). It then progresses only while the key is read, and is
///   dropped (cancelled) with the entry.
///
/// Either way it never stalls behind a caller that stopped being polled: no caller drives it
/// alone.
///
/// # Invalidation
///
/// [`invalidate`](Self::invalidate) and [`insert`](Self::insert) win over the loads already in
/// the air: every write takes a new *generation*, and a load writes back only if the key still
/// holds the generation it started from. The callers of such a load still get its value; the
/// next read starts a new load.
///
/// # Cancel safety
///
/// Dropping a read's future never cancels a load another caller waits for, nor a background
/// refresh. Every load is shared work: the callers of a load all drive it, and it is dropped
/// only when its last caller leaves; a load whose every caller left is cancelled, and the key
/// is loaded anew by the next read (a refresh and a load whose caller left at the soft timeout
/// are kept by the entry or spawned, so they do not count as left).
///
/// # Unwind safety
///
/// A loader that panics releases everyone and caches nothing: the panic is resumed in the
/// caller that was polling the load, every other caller of that load gets
/// [`Error::Aborted`], the key is free, and its entry is left as it was (a background refresh
/// that panics leaves the stale value in place, and the read that polled it carries on). A
/// panic in a value's `Clone` happens in the caller that clones (outside every lock); a panic
/// in a [`Clock`], the random source, a `Spawn` or a `Sleep` propagates to the caller of the
/// cache method. The key's `Hash` and `Eq` must not panic (scc runs them under its bucket
/// locks).
///
/// # Errors
///
/// A read fails with [`Error`]: the load's error ([`Error::Failed`], when no value within
/// `max_stale` can be served instead), a negatively cached error ([`Error::Negative`]), a
/// panicked load ([`Error::Aborted`]), or the hard timeout ([`Error::TimedOut`]).
pub struct Cache<K, V, E = Infallible, S: BuildHasher = DefaultHashBuilder> {
    inner: Arc<Inner<K, V, E, S>>,
}

impl<K, V, E, S: BuildHasher> Clone for Cache<K, V, E, S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<K, V, E> Cache<K, V, E, DefaultHashBuilder> {
    /// A builder with the defaults (see [`CacheBuilder`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u64, String>::builder().max_capacity(100).build();
    /// assert!(cache.is_empty());
    /// ```
    pub fn builder() -> CacheBuilder<K, V, E, DefaultHashBuilder> {
        CacheBuilder::new()
    }
}

impl<K, V, E, S> Cache<K, V, E, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// The value of `key`: cached, or loaded by `loader` in one flight with every concurrent
    /// caller for `key` (moka's idiom). Only the caller that starts the load calls `loader`.
    ///
    /// # Cancel safety
    ///
    /// See the type's `# Cancel safety`: dropping this future never cancels a load that another
    /// caller or the cache still waits for.
    ///
    /// # Panics
    ///
    /// When the loader panics while this caller polls it, the panic is resumed here (the other
    /// callers get [`Error::Aborted`]); nothing is cached.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let cache = coalescer::cache::Cache::<u32, u64>::builder().build();
    /// let v = cache.get_with(3, || async { 9 }).await.unwrap();
    /// assert_eq!(v.into_value(), 9);
    /// # });
    /// ```
    pub async fn get_with<F, Fut>(&self, key: K, loader: F) -> Result<Read<V>, Error<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.try_get_with(key, move || {
            let fut = loader();
            async move { Ok(fut.await) }
        })
        .await
    }

    /// The fallible form of [`get_with`](Self::get_with): an `Err` from `loader` is shared with
    /// the callers of that load and never cached (unless [negative
    /// caching](CacheBuilder::negative_ttl) is on); with [`max_stale`](CacheBuilder::max_stale)
    /// they get the last good value instead.
    ///
    /// # Cancel safety
    ///
    /// As for [`get_with`](Self::get_with).
    ///
    /// # Panics
    ///
    /// As for [`get_with`](Self::get_with).
    ///
    /// # Errors
    ///
    /// See the type's `# Errors`.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// use coalescer::cache::Cache;
    /// let cache = Cache::<&str, u32, std::num::ParseIntError>::builder().build();
    /// assert!(cache.try_get_with("x", || async { "x".parse() }).await.unwrap_err().is_failed());
    /// assert_eq!(*cache.try_get_with("7", || async { "7".parse() }).await.unwrap().value(), 7);
    /// # });
    /// ```
    pub async fn try_get_with<F, Fut>(&self, key: K, loader: F) -> Result<Read<V>, Error<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let inner = &self.inner;
        let (lookup, seen) = inner.lookup(&key, inner.now());
        match lookup {
            Lookup::Done(read) => read,
            Lookup::Refresh(read) => {
                inner.refresh(key, seen, loader);
                Ok(read)
            }
            Lookup::Load { stale } => {
                let fut = inner.load(key.clone(), seen, loader);
                inner.wait(key, fut, stale).await
            }
        }
    }

    /// The blocking twin of [`get_with`](Self::get_with): a miss runs `loader` on this thread
    /// when this caller leads, and parks otherwise. Async and blocking callers share loads.
    /// The timeouts do not apply (a thread is not cancelled). A background refresh is spawned
    /// with the cache's spawner, or runs on a thread of its own.
    ///
    /// # Panics
    ///
    /// When `loader` panics on this thread, the other callers get [`Error::Aborted`] and the
    /// panic is resumed here; nothing is cached.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, String>::builder().build();
    /// assert_eq!(cache.get_with_blocking(1, || "one".to_string()).unwrap().value(), "one");
    /// ```
    pub fn get_with_blocking<F>(&self, key: K, loader: F) -> Result<Read<V>, Error<E>>
    where
        F: FnOnce() -> V + Send + 'static,
    {
        self.try_get_with_blocking(key, move || Ok(loader()))
    }

    /// The blocking twin of [`try_get_with`](Self::try_get_with).
    ///
    /// # Panics
    ///
    /// As for [`get_with_blocking`](Self::get_with_blocking).
    ///
    /// # Errors
    ///
    /// See the type's `# Errors` ([`Error::TimedOut`] aside).
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, u8, &str>::builder().build();
    /// assert!(cache.try_get_with_blocking(1, || Err("down")).unwrap_err().is_failed());
    /// ```
    pub fn try_get_with_blocking<F>(&self, key: K, loader: F) -> Result<Read<V>, Error<E>>
    where
        F: FnOnce() -> Result<V, E> + Send + 'static,
    {
        let inner = &self.inner;
        let (lookup, seen) = inner.lookup(&key, inner.now());
        match lookup {
            Lookup::Done(read) => read,
            Lookup::Refresh(read) => {
                inner.refresh_blocking(key, seen, loader);
                Ok(read)
            }
            Lookup::Load { .. } => {
                inner.stats.record(stats::Count::Miss);
                let output = inner.load_blocking(key.clone(), seen, loader);
                inner.conclude(&key, output)
            }
        }
    }

    /// Writes `value` for `key`. It wins over any load of `key` in the air (that load's callers
    /// still get its value; it is not written back).
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, u8>::builder().build();
    /// cache.insert(1, 10);
    /// assert_eq!(cache.peek(&1), Some(10));
    /// ```
    pub fn insert(&self, key: K, value: V) {
        self.inner.insert(key, value);
    }

    /// Removes `key`'s value. It wins over any load of `key` in the air: that load is not
    /// written back (its callers still get its value), and the next read loads anew.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, u8>::builder().build();
    /// cache.insert(1, 10);
    /// cache.invalidate(&1);
    /// assert_eq!(cache.peek(&1), None);
    /// ```
    pub fn invalidate(&self, key: &K) {
        self.inner.invalidate(key);
    }

    /// The value of `key` if it is cached and not expired; never loads, never refreshes, and
    /// is not counted.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, u8>::builder().build();
    /// assert_eq!(cache.peek(&1), None);
    /// ```
    pub fn peek(&self, key: &K) -> Option<V> {
        let now = self.inner.now();
        let slot = self.inner.slot(key)?;
        if now >= slot.expires_at {
            return None;
        }
        slot.value().cloned()
    }
}

impl<K, V, E, S> Cache<K, V, E, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// How many entries the cache holds: values (expired ones too, until they are overwritten
    /// or evicted), negatively cached errors, and the tombstones of invalidations with a load
    /// in the air. Reads the whole bucket array: for metrics and tests.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, u8>::builder().build();
    /// cache.insert(1, 1);
    /// assert_eq!(cache.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether the cache holds no entry.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(coalescer::cache::Cache::<u8, u8>::builder().build().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// The counters since the cache was created.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = coalescer::cache::Cache::<u8, u8>::builder().build();
    /// assert_eq!(cache.counters(), coalescer::cache::CacheCounters::default());
    /// ```
    pub fn counters(&self) -> CacheCounters {
        self.inner.stats.snapshot()
    }

    /// How many loads are in the air (the group's flights, refreshes included).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(coalescer::cache::Cache::<u8, u8>::builder().build().loading(), 0);
    /// ```
    pub fn loading(&self) -> usize {
        self.inner.group.in_flight()
    }
}

impl<K, V, E, S> fmt::Debug for Cache<K, V, E, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.inner.map.len())
            .field("loading", &self.inner.group.in_flight())
            .field("counters", &self.inner.stats.snapshot())
            .finish_non_exhaustive()
    }
}
