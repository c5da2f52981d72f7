//! The blocking API: plain threads park on the flight, and async and blocking callers share one
//! flight in both directions.

mod common;

use coalescer::Group;
use common::{Gate, Probe, run, until, until_blocking};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

#[test]
fn blocking_callers_on_threads_run_the_work_once() {
    let group = Arc::new(Group::<&str, u64>::new());
    let probe = Arc::new(Probe::default());
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (group, probe, release_rx, start) =
                (group.clone(), probe.clone(), release_rx.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                group.work_blocking(&"k", || {
                    let _running = probe.enter();
                    release_rx.lock().unwrap().recv().unwrap();
                    11
                })
            })
        })
        .collect();
    until_blocking(|| group.counters().followers == 7);
    release_tx.send(()).unwrap();
    for t in threads {
        assert_eq!(*t.join().unwrap().unwrap().value(), 11);
    }
    assert_eq!(probe.runs(), 1);
    assert!(group.is_idle());
}

#[test]
fn async_followers_share_a_blocking_leaders_flight() {
    let group = Arc::new(Group::<u8, u64>::new());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let leader = {
        let group = group.clone();
        thread::spawn(move || {
            group.work_blocking(&1, || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                21
            })
        })
    };
    entered_rx.recv().unwrap();
    let followers = {
        let group = group.clone();
        thread::spawn(move || {
            run(async move {
                let calls: Vec<_> = (0..4)
                    .map(|_| {
                        let group = group.clone();
                        tokio::spawn(async move { group.work(&1, || async { 0 }).await.unwrap() })
                    })
                    .collect();
                until(|| group.counters().followers == 4).await;
                release_tx.send(()).unwrap();
                for c in calls {
                    assert_eq!(*c.await.unwrap().value(), 21);
                }
            })
        })
    };
    followers.join().unwrap();
    assert!(leader.join().unwrap().unwrap().is_shared());
    assert!(group.is_idle());
}

#[test]
fn blocking_followers_share_an_async_leaders_flight() {
    run(async {
        let (group, gate) = (Arc::new(Group::<u8, u64>::new()), Gate::new());
        let leader = {
            let (group, gate) = (group.clone(), gate.wait());
            tokio::spawn(async move {
                group
                    .work(&1, || async move {
                        gate.await;
                        31
                    })
                    .await
                    .unwrap()
            })
        };
        until(|| group.in_flight() == 1).await;
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let group = group.clone();
                thread::spawn(move || group.work_blocking(&1, || 0).unwrap())
            })
            .collect();
        until(|| group.counters().followers == 3).await;
        gate.open();
        for t in threads {
            let outcome = tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
            assert_eq!((*outcome.value(), outcome.is_leader()), (31, false));
        }
        assert!(leader.await.unwrap().is_shared());
    });
}

#[test]
fn blocking_follower_drives_shared_work_after_its_async_leader_left() {
    let group = Arc::new(Group::<u8, u64>::new().shared());
    let (tx, rx) = thread_oneshot();
    let mut leader = Box::pin(group.work(&1, move || rx));
    assert!(common::poll_once(&mut leader).is_pending());
    let follower = {
        let group = group.clone();
        thread::spawn(move || group.work_blocking(&1, || 0).unwrap())
    };
    until_blocking(|| group.counters().followers == 1);
    drop(leader); // the async leader is gone; the work lives on in the flight
    tx.send(41).unwrap();
    assert_eq!(*follower.join().unwrap().value(), 41, "the parked thread drove the shared work");
    assert!(group.is_idle());
}

/// A runtime-free one-shot channel, so that a plain thread can drive the work.
fn thread_oneshot() -> (mpsc::SyncSender<u64>, impl std::future::Future<Output = u64> + Send + 'static) {
    let (tx, rx) = mpsc::sync_channel::<u64>(1);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let fut = std::future::poll_fn(move |cx| match rx.lock().unwrap().try_recv() {
        Ok(v) => std::task::Poll::Ready(v),
        Err(_) => {
            // Woken by the sender's thread below; a spurious wake only re-polls.
            let waker = cx.waker().clone();
            thread::spawn(move || {
                thread::yield_now();
                waker.wake();
            });
            std::task::Poll::Pending
        }
    });
    (tx, fut)
}

#[test]
fn reentrant_blocking_call_for_the_same_key_panics_instead_of_deadlocking() {
    let group = Arc::new(Group::<u8, u64>::new());
    let inner_calls = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        group.work_blocking(&1, || {
            inner_calls.fetch_add(1, SeqCst);
            group.work_blocking(&1, || 2).unwrap().into_value()
        })
    }));
    let payload = result.unwrap_err();
    let message =
        payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
    assert!(message.unwrap_or_default().contains("re-entrant"), "got {message:?}");
    assert_eq!(inner_calls.load(SeqCst), 1);
    assert!(group.is_idle(), "the panicked flight was removed");
    assert_eq!(*group.work_blocking(&1, || 3).unwrap().value(), 3);
}
