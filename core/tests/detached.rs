//! Detached flights whose spawner aborts the task when the last caller leaves: the key stays
//! taken (closing) until the runtime has dropped the aborted task, so that the key's next
//! execution never overlaps the old one.

mod common;

use coalescer::{Group, Spawn};
use common::{Hold, poll_once, run};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

type Graveyard = Arc<Mutex<Vec<Pin<Box<dyn Future<Output = ()> + Send>>>>>;

/// A spawner whose tasks are never polled and whose abort is slow: dropping the handle moves
/// the task into a graveyard that the test empties when it likes (a runtime that drops an
/// aborted task later, on another thread, as tokio and async-std do).
#[derive(Clone)]
struct SlowAbort(Graveyard);

/// The task's handle: on drop (the abort), the task goes to the graveyard.
struct Handle(Option<Pin<Box<dyn Future<Output = ()> + Send>>>, Graveyard);

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            self.1.lock().unwrap().push(task);
        }
    }
}

impl Spawn for SlowAbort {
    type Task = Handle;
    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) -> Handle {
        Handle(Some(Box::pin(task)), self.0.clone())
    }
    fn aborts_when_abandoned(&self) -> bool {
        true
    }
}

#[test]
fn an_abandoned_abortable_flight_keeps_its_key_until_its_task_is_dropped() {
    run(async {
        let graveyard = Graveyard::default();
        let group = Arc::new(Group::<u32, u32>::new().detached(SlowAbort(graveyard.clone())));
        let mut first = Box::pin(group.work(&1, || async { 1 }));
        assert!(poll_once(&mut first).is_pending());
        drop(first); // the last caller leaves: the task is aborted, but not dropped yet
        assert_eq!(graveyard.lock().unwrap().len(), 1);
        // The key is still taken: a new call waits for the old task to go.
        let mut next = Box::pin(group.work(&1, || async { 2 }));
        assert!(poll_once(&mut next).is_pending());
        assert_eq!(group.counters().leaders, 1, "the new call must not lead while the old task lives");
        // The runtime drops the aborted task: the flight ends and the key is free.
        let old = graveyard.lock().unwrap().pop().unwrap();
        drop(old);
        assert!(poll_once(&mut next).is_pending()); // it now leads; its own task is not polled
        assert_eq!(group.counters().leaders, 2);
        let c = group.counters();
        assert_eq!((c.cancellations, c.shutdowns), (1, 0));
    });
}

/// A waker that counts its wakes; `Arc::strong_count` tells who still holds it.
#[derive(Default)]
struct Counted(AtomicUsize);

impl Wake for Counted {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn a_detached_leader_is_woken_by_its_task_and_a_cancelled_one_leaves_no_waker_behind() {
    let spawner = Hold::default();
    let group = Arc::new(Group::<u32, u32>::new().detached(spawner.clone()));

    // The leader waits for its task: the flight keeps its waker until the task ends.
    let counted = Arc::new(Counted::default());
    let waker = Waker::from(counted.clone());
    let mut leader = Box::pin(group.work(&1, || async { 1 }));
    assert!(leader.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    assert_eq!(Arc::strong_count(&counted), 3, "the flight holds the waiting leader's waker");
    spawner.run_task();
    assert_eq!(counted.0.load(SeqCst), 1, "the task's end woke the leader once");
    assert_eq!(Arc::strong_count(&counted), 2, "the wake used up the flight's clone");
    let got = match leader.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(got) => got.expect("the work returns"),
        Poll::Pending => panic!("the flight ended"),
    };
    assert!(got.is_leader() && *got.value() == 1);

    // A leader dropped while its task runs takes its waker out of the flight: the task (which
    // lives on) keeps nothing of the caller that walked away, and does not wake it.
    let counted = Arc::new(Counted::default());
    let waker = Waker::from(counted.clone());
    let mut leader = Box::pin(group.work(&2, || async { 2 }));
    assert!(leader.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
    assert_eq!(Arc::strong_count(&counted), 3);
    drop(leader);
    assert_eq!(Arc::strong_count(&counted), 2, "the cancelled leader's waker is still held");
    spawner.run_task();
    assert_eq!(counted.0.load(SeqCst), 0, "the cancelled leader was woken");
    assert!(group.is_idle());
    assert_eq!(group.counters().leaders, 2);
}
