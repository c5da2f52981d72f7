//! `Single`, the one-key coalescer without a map, shares the flight machinery with `Group`;
//! these tests prove the parts that differ: its slot, forget, and its twins of every mode.

mod common;

use coalescer::Single;
use common::{Gate, Probe, poll_once, run, until};
use std::sync::Arc;

#[test]
fn single_runs_concurrent_work_once_and_is_not_a_cache() {
    run(async {
        let (single, probe, gate) = (Arc::new(Single::<u64>::new()), Arc::new(Probe::default()), Gate::new());
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (single, probe, gate) = (single.clone(), probe.clone(), gate.wait());
                tokio::spawn(async move {
                    let work = single.work(|| async move {
                        let _running = probe.enter();
                        gate.await;
                        3
                    });
                    work.await.unwrap().into_value()
                })
            })
            .collect();
        until(|| single.counters().followers == 7).await;
        gate.open();
        for c in calls {
            assert_eq!(c.await.unwrap(), 3);
        }
        assert_eq!(probe.runs(), 1);
        assert!(single.is_idle());
        assert!(single.work(|| async { 4 }).await.unwrap().is_leader(), "the next call starts anew");
    });
}

#[test]
fn single_promotes_a_follower_when_its_leader_is_dropped() {
    run(async {
        let single = Arc::new(Single::<u64>::new());
        let mut leader = Box::pin(single.work(&std::future::pending));
        assert!(poll_once(&mut leader).is_pending());
        let follower = {
            let single = single.clone();
            tokio::spawn(async move { single.work(|| async { 5 }).await.unwrap() })
        };
        until(|| single.counters().followers == 1).await;
        drop(leader);
        let promoted = follower.await.unwrap();
        assert!(promoted.is_leader() && *promoted.value() == 5);
        assert!(single.is_idle());
    });
}

#[test]
fn single_forget_detaches_the_flight() {
    run(async {
        let single = Single::<u64>::new().shared();
        let mut old = Box::pin(single.work(|| async { 1 }));
        let mut held = Box::pin(single.work(std::future::pending));
        assert!(poll_once(&mut held).is_pending());
        assert!(single.forget());
        assert!(single.is_idle());
        assert_eq!(*single.work(|| async { 2 }).await.unwrap().value(), 2, "a new flight after forget");
        drop(held); // the old flight's last waiter: its work is dropped, the new slot untouched
        assert_eq!(*old.as_mut().await.unwrap().value(), 1);
        assert_eq!(single.counters().forgets, 1);
    });
}
