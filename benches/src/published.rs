//! The published Rust coalescers, each behind [`Coalesce`].

use crate::{BenchKey, Coalesce};
use core::convert::Infallible;
use core::future::Future;

/// Crate `async_singleflight` (`Group::work`): a tokio `Mutex<HashMap>` of `watch` receivers.
/// It takes the work as a future (built by every caller, polled by the leader only) and cannot
/// be pre-sized.
pub struct AsyncSingleflight<K = u64>(async_singleflight::Group<K, u64, Infallible>);

/// Crate `singleflight-async` (`SingleFlight::work`): a `parking_lot` map of weak slots, each
/// slot a tokio `Mutex` that the leader holds while the work runs. It joins when `work` is
/// called, not when polled, so it is called from an `async fn`. It cannot be pre-sized.
pub struct SingleflightAsync<K = u64>(singleflight_async::SingleFlight<K, u64>);

/// `moka::future::Cache::get_with`, moka's built-in coalescing of concurrent loads. It is a
/// cache, so [`Coalesce::reset`] invalidates the key.
pub struct MokaGetWith<K = u64>(moka::future::Cache<K, u64>);

impl<K> core::fmt::Debug for AsyncSingleflight<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AsyncSingleflight")
    }
}

impl<K> core::fmt::Debug for SingleflightAsync<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SingleflightAsync")
    }
}

impl<K> core::fmt::Debug for MokaGetWith<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MokaGetWith")
    }
}

impl<K: BenchKey> Coalesce for AsyncSingleflight<K> {
    const HASHER: &'static str = "own";
    const DEFAULT_HASHER: bool = true;
    type Key = K;

    const NAME: &'static str = "async_singleflight";

    fn with_capacity(_capacity: usize) -> Self {
        Self(async_singleflight::Group::new())
    }

    async fn call<F, Fut>(&self, key: K, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        let work = async move { Ok::<u64, Infallible>(work().await) };
        match self.0.work(&key, work).await {
            Ok(value) => value,
            Err(_) => unreachable!("the bench work never fails"),
        }
    }
}

impl<K: BenchKey> Coalesce for SingleflightAsync<K> {
    const HASHER: &'static str = "own";
    const DEFAULT_HASHER: bool = true;
    type Key = K;

    const NAME: &'static str = "singleflight-async";

    fn with_capacity(_capacity: usize) -> Self {
        Self(singleflight_async::SingleFlight::new())
    }

    async fn call<F, Fut>(&self, key: K, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work(key, work).await
    }
}

impl<K: BenchKey> Coalesce for MokaGetWith<K> {
    const HASHER: &'static str = "own";
    const DEFAULT_HASHER: bool = true;
    type Key = K;

    const NAME: &'static str = "moka get_with";
    const RESETS: bool = true;

    fn with_capacity(_capacity: usize) -> Self {
        // Room for every key of a run: entries leave by invalidation, never by eviction.
        Self(moka::future::Cache::new(1 << 24))
    }

    async fn call<F, Fut>(&self, key: K, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.get_with(key, async move { work().await }).await
    }

    async fn reset(&self, key: &K) {
        self.0.invalidate(key).await;
    }
}
