//! The cache's counters: one relaxed increment per event.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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

/// The live counters, striped over cache lines as the group's are: a thread counts on its own
/// stripe, so two threads hitting the cache at once do not write the same line; a snapshot adds
/// the stripes up.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    stripes: [Stripe; STRIPES],
}

/// Threads are spread over this many stripes.
const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; COUNTS]);

/// How many kinds of [`Count`] there are.
const COUNTS: usize = 7;

/// The calling thread's stripe: handed out round-robin the first time a thread counts.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local!(static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES);
    STRIPE.with(|s| *s)
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
        self.stripes[stripe()].0[what as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheCounters {
        let sum = |what: Count| self.stripes.iter().map(|s| s.0[what as usize].load(Relaxed)).sum::<u64>();
        CacheCounters {
            hits: sum(Count::Hit),
            stale_hits: sum(Count::StaleHit),
            misses: sum(Count::Miss),
            loads: sum(Count::Load),
            refreshes: sum(Count::Refresh),
            fail_safe: sum(Count::FailSafe),
            evictions: sum(Count::Eviction),
        }
    }
}
