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
    /// The cache's name, for its metrics' `cache` label and its events (`"default"` unnamed).
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    name: std::borrow::Cow<'static, str>,
    /// Registered when a named cache is built, or at the first event of an unnamed one.
    #[cfg(feature = "metrics")]
    metrics: std::sync::OnceLock<[metrics::Counter; COUNTS]>,
}

/// The metric of each count, in [`Count`]'s order (OpenTelemetry's style; the operators'
/// figures follow from them: the hit ratio is `hits / (hits + stale_hits + misses)`, the
/// fallback rate `loads / (hits + stale_hits + misses)`, rebuilds per second the rate of
/// `refreshes`).
#[cfg(feature = "metrics")]
const METRICS: [(&str, &str); COUNTS] = [
    ("coalescer.cache.hits", "reads served fresh"),
    ("coalescer.cache.stale_hits", "reads served a stale value (while refreshing, or on failure)"),
    ("coalescer.cache.misses", "reads that found nothing to serve and waited for a load"),
    ("coalescer.cache.loads", "loads that wrote a value back"),
    ("coalescer.cache.refreshes", "background refreshes started"),
    ("coalescer.cache.fail_safe", "reads served the last good value after a failed load"),
    ("coalescer.cache.evictions", "entries evicted for capacity"),
];

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
    /// Counters for a cache called `name` (see the field); with `metrics`, a named cache's
    /// handles are registered now.
    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(unused_variables))]
    pub(crate) fn named(name: Option<std::borrow::Cow<'static, str>>) -> Self {
        let stats = Self {
            #[cfg(any(feature = "metrics", feature = "tracing"))]
            name: name.clone().unwrap_or(std::borrow::Cow::Borrowed("default")),
            ..Self::default()
        };
        #[cfg(feature = "metrics")]
        if name.is_some() {
            let _ = stats.metrics();
        }
        stats
    }

    #[cfg(feature = "metrics")]
    fn metrics(&self) -> &[metrics::Counter; COUNTS] {
        self.metrics.get_or_init(|| {
            METRICS.map(|(metric, description)| {
                metrics::describe_counter!(metric, metrics::Unit::Count, description);
                metrics::counter!(metric, "cache" => self.name.to_string())
            })
        })
    }

    pub(crate) fn record(&self, what: Count) {
        self.stripes[stripe()].0[what as usize].fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics()[what as usize].increment(1);
        #[cfg(feature = "tracing")]
        match what {
            Count::Refresh => tracing::debug!(cache = %self.name, "coalescer: cache refresh started"),
            Count::FailSafe => {
                tracing::info!(cache = %self.name, "coalescer: cache served a stale value on failure")
            }
            Count::Eviction => tracing::debug!(cache = %self.name, "coalescer: cache evicted an entry"),
            Count::Hit | Count::StaleHit | Count::Miss | Count::Load => {}
        }
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
