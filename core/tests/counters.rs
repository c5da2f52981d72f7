//! What the counters say about flights that end without a value: each end is counted once, as
//! what it was.

mod common;

use coalescer::{Group, Spawn};
use common::{poll_once, run, until};
use std::future::Future;
use std::sync::Arc;

/// Spawns on tokio; dropping the task's handle aborts it (abort when abandoned). Sends on
/// `ended` once the whole task (the work, then the flight's handle) has been dropped.
#[derive(Clone)]
struct Abortable(Option<tokio::sync::mpsc::UnboundedSender<()>>);

/// The spawned task, then a message: fields drop in order.
struct Then<F> {
    task: std::pin::Pin<Box<F>>,
    ended: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl<F: Future> Future for Then<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.task.as_mut().poll(cx)
    }
}

impl<F> Drop for Then<F> {
    fn drop(&mut self) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(());
        }
    }
}

/// Aborts its tokio task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Spawn for Abortable {
    type Task = AbortOnDrop;
    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(Then { task: Box::pin(task), ended: self.0.clone() }))
    }
    fn aborts_when_abandoned(&self) -> bool {
        true
    }
}

#[test]
fn an_abandoned_abortable_flight_counts_a_cancellation_and_no_shutdown() {
    run(async {
        let group = Arc::new(Group::<u32, u32>::new().detached(Abortable(None)));
        let mut caller = Box::pin(group.work(&1, std::future::pending::<u32>));
        assert!(poll_once(&mut caller).is_pending());
        drop(caller);
        until(|| group.is_idle()).await;
        let counters = group.counters();
        assert_eq!((counters.cancellations, counters.shutdowns), (1, 0));
    });
}

/// A forgotten flight is no longer current; its abandonment is still a cancellation, and the
/// task's end after its abort is not a shutdown.
#[test]
fn a_forgotten_then_abandoned_abortable_flight_counts_a_cancellation_and_no_shutdown() {
    run(async {
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let group = Arc::new(Group::<u32, u32>::new().detached(Abortable(Some(ended_tx))));
        let mut caller = Box::pin(group.work(&1, std::future::pending::<u32>));
        assert!(poll_once(&mut caller).is_pending());
        assert!(group.forget(&1));
        drop(caller);
        ended.recv().await.unwrap();
        // The task's own handle ends the flight once the runtime drops the aborted task.
        let counters = group.counters();
        assert_eq!((counters.cancellations, counters.shutdowns, counters.forgets), (1, 0, 1));
    });
}
