//! The product: `coalescer::Group` in each of its modes, with any key type and hasher (the
//! timed scenarios use `u64` keys and the default hasher).
//!
//! Keys: `work` takes the key by reference (issue 17); `Coalesce::call` still hands each call an
//! owned key, which the call below borrows, so the `String` rows include the caller's own
//! `String` (made per call, as by a caller that builds its key) plus whatever copy the group
//! keeps. LEAD: to measure a caller that already holds its key, make `Coalesce::call` take
//! `&Self::Key` and pass `key` straight through here.

use crate::{BenchHasher, BenchKey, Coalesce, CoalesceBlocking, FoldHash};
use coalescer::{DetachedGroup, Group, SharedGroup};
use coalescer_tokio::Tokio;
use core::future::Future;
use std::sync::Arc;

/// `Group::work` (restart mode: the work runs inside the leader's future), and
/// `Group::work_blocking` for the blocking scenarios.
#[derive(Debug)]
pub struct CoalescerWork<K: BenchKey = u64, S: BenchHasher = FoldHash>(Group<K, u64, S>);

/// `Group::work_shared`: the flight owns the work future and any waiter drives it.
#[derive(Debug)]
pub struct CoalescerShared<K: BenchKey = u64, S: BenchHasher = FoldHash>(SharedGroup<K, u64, S>);

/// Detached work through the tokio adapter (a group made `.detached(Tokio::detach())`): the
/// leader's work is spawned as a task of its own and runs to completion even if every caller
/// leaves.
#[derive(Debug)]
pub struct CoalescerDetached<K: BenchKey = u64, S: BenchHasher = FoldHash>(
    Arc<DetachedGroup<K, u64, Tokio, S>>,
);

fn group<K: BenchKey, S: BenchHasher>(capacity: usize) -> Group<K, u64, S> {
    Group::with_capacity_and_hasher(capacity, S::default())
}

impl<K: BenchKey, S: BenchHasher> Coalesce for CoalescerWork<K, S> {
    const NAME: &'static str = "coalescer work";
    const HASHER: &'static str = S::LABEL;
    const DEFAULT_HASHER: bool = S::COALESCER_DEFAULT;
    type Key = K;

    fn with_capacity(capacity: usize) -> Self {
        Self(group(capacity))
    }

    // An `async fn` that builds the call inside: a future captured by an `async` block (or
    // passed as an argument) and then awaited is stored twice, which would double its size.
    async fn call<F, Fut>(&self, key: K, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work(&key, work).await.expect("the bench work never panics").into_value()
    }
}

impl<K: BenchKey, S: BenchHasher> Coalesce for CoalescerShared<K, S> {
    const NAME: &'static str = "coalescer work_shared";
    const HASHER: &'static str = S::LABEL;
    const DEFAULT_HASHER: bool = S::COALESCER_DEFAULT;
    type Key = K;

    fn with_capacity(capacity: usize) -> Self {
        Self(group(capacity).shared())
    }

    async fn call<F, Fut>(&self, key: K, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work(&key, work).await.expect("the bench work never panics").into_value()
    }
}

impl<K: BenchKey, S: BenchHasher> Coalesce for CoalescerDetached<K, S> {
    const NAME: &'static str = "coalescer detached (tokio)";
    const HASHER: &'static str = S::LABEL;
    const DEFAULT_HASHER: bool = S::COALESCER_DEFAULT;
    type Key = K;

    fn with_capacity(capacity: usize) -> Self {
        Self(Arc::new(group(capacity).detached(Tokio::detach())))
    }

    async fn call<F, Fut>(&self, key: K, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work(&key, work).await.expect("the bench work never panics").into_value()
    }
}

impl CoalesceBlocking for CoalescerWork {
    const NAME: &'static str = "coalescer work_blocking";

    fn with_capacity(capacity: usize) -> Self {
        Self(Group::with_capacity(capacity))
    }

    fn call_blocking(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        self.0.work_blocking(&key, work).expect("the bench work never panics").into_value()
    }
}
