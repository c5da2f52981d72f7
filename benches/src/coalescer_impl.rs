//! The product: `coalescer::Group` in each of its modes.

use crate::{Coalesce, CoalesceBlocking};
use coalescer::Group;
use coalescer_tokio::GroupExt;
use core::future::Future;
use std::sync::Arc;

/// `Group::work` (restart mode: the work runs inside the leader's future), and
/// `Group::work_blocking` for the blocking scenarios.
#[derive(Debug)]
pub struct CoalescerWork(Group<u64, u64>);

/// `Group::work_shared`: the flight owns the work future and any waiter drives it.
#[derive(Debug)]
pub struct CoalescerShared(Group<u64, u64>);

impl Coalesce for CoalescerWork {
    const NAME: &'static str = "coalescer work";

    fn with_capacity(capacity: usize) -> Self {
        Self(Group::with_capacity(capacity))
    }

    // An `async fn` that builds the call inside: a future captured by an `async` block (or
    // passed as an argument) and then awaited is stored twice, which would double its size.
    async fn call<F, Fut>(&self, key: u64, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work(key, work).await.expect("the bench work never panics").into_value()
    }
}

impl Coalesce for CoalescerShared {
    const NAME: &'static str = "coalescer work_shared";

    fn with_capacity(capacity: usize) -> Self {
        Self(Group::with_capacity(capacity))
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work_shared(key, work).await.expect("the bench work never panics").into_value()
    }
}

/// Detached work through the tokio adapter (`GroupExt::work_spawned`, i.e. `work_detached` with
/// `Tokio::detach()`): the leader's work is spawned as a task of its own and runs to completion
/// even if every caller leaves.
#[derive(Debug)]
pub struct CoalescerDetached(Arc<Group<u64, u64>>);

impl Coalesce for CoalescerDetached {
    const NAME: &'static str = "coalescer detached (tokio)";

    fn with_capacity(capacity: usize) -> Self {
        Self(Arc::new(Group::with_capacity(capacity)))
    }

    async fn call<F, Fut>(&self, key: u64, work: F) -> u64
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.0.work_spawned(key, work).await.expect("the bench work never panics").into_value()
    }
}

impl CoalesceBlocking for CoalescerWork {
    const NAME: &'static str = "coalescer work_blocking";

    fn with_capacity(capacity: usize) -> Self {
        Self(Group::with_capacity(capacity))
    }

    fn call_blocking(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        self.0.work_blocking(key, work).expect("the bench work never panics").into_value()
    }
}
