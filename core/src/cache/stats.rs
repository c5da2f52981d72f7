//! The cache's counters: one relaxed increment per event.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a cache's counters, totals since it was created.
///
/// Each read counts once as a hit, a stale hit or a miss; loads count executions of a loader
/// (whatever triggered them), so `loads <= misses + refreshes` and, under a stampede,
/// `loads` stays at one per key and expiry.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let cache = coalescer::cache::Cache::<u8, u8>::builder().build();
/// cache.get_with(1, || async { 1 }).await.unwrap();
/// cache.get_with(1, || async { 1 }).await.unwrap();
/// let c = cache.counters();
/// assert_eq!((c.misses, c.loads, c.hits), (1, 1, 1));
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheCounters {
    /// Reads served a fresh value (negatively cached errors included).
    pub hits: u64,
    /// Reads served a value past its refresh point or its expiry ([`Served::is_stale`]).
    ///
    /// [`Served::is_stale`]: super::Served::is_stale
    pub stale_hits: u64,
    /// Reads that found no usable value and waited for a load.
    pub misses: u64,
    /// Executions of a loader (a miss, an expiry, a refresh or a retry: each load once).
    pub loads: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Reads served a stale value because the load failed or outlasted the soft timeout.
    pub fail_safe: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    hits: AtomicU64,
    stale_hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    refreshes: AtomicU64,
    fail_safe: AtomicU64,
    evictions: AtomicU64,
}

/// What the cache counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Hit,
    StaleHit,
    Miss,
    Load,
    Refresh,
    FailSafe,
    Eviction,
}

impl Stats {
    pub(crate) fn record(&self, what: Count) {
        let counter = match what {
            Count::Hit => &self.hits,
            Count::StaleHit => &self.stale_hits,
            Count::Miss => &self.misses,
            Count::Load => &self.loads,
            Count::Refresh => &self.refreshes,
            Count::FailSafe => &self.fail_safe,
            Count::Eviction => &self.evictions,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.load(Relaxed),
            stale_hits: self.stale_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            loads: self.loads.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            fail_safe: self.fail_safe.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
        }
    }
}
