//! The contract of `Group::work` (work mode), proved on a real multi-threaded runtime with real
//! drops of futures mid-flight. Each test is named after the behaviour of DESIGN.md it proves.

mod common;

use coalescer::{Group, TryGroup};
use common::{Gate, Probe, poll_once, run, until};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

type G = Arc<Group<u32, u64>>;

/// Spawns a caller of `work(key)` whose work counts itself on `probe`, waits for `gate` and
/// returns `value`.
fn caller(
    group: &G,
    key: u32,
    probe: &Arc<Probe>,
    gate: &Gate,
    value: u64,
) -> tokio::task::JoinHandle<coalescer::Outcome<u64>> {
    let (group, probe, gate) = (group.clone(), probe.clone(), gate.wait());
    tokio::spawn(async move {
        let outcome = group.work(&key, || async move {
            let _running = probe.enter();
            gate.await;
            value
        });
        outcome.await.expect("no panic in this test")
    })
}

fn boom() -> u64 {
    panic!("database on fire")
}

#[test]
fn concurrent_callers_with_one_key_run_the_work_once() {
    run(async {
        let (group, probe, gate) = (G::default(), Arc::new(Probe::default()), Gate::new());
        let callers: Vec<_> = (0..64).map(|i| caller(&group, 7, &probe, &gate, 100 + i)).collect();
        until(|| group.counters().followers == 63).await;
        gate.open();
        let mut outcomes = Vec::new();
        for c in callers {
            outcomes.push(c.await.unwrap());
        }
        assert_eq!(probe.runs(), 1);
        let value = *outcomes[0].value();
        assert!(outcomes.iter().all(|o| *o.value() == value), "every caller got the leader's value");
        assert_eq!(outcomes.iter().filter(|o| o.is_leader()).count(), 1);
        assert!(outcomes.iter().all(|o| o.is_shared()), "64 callers shared one value");
        assert!(group.is_idle());
    });
}

#[test]
fn late_caller_after_completion_starts_a_new_flight() {
    run(async {
        let group = G::default();
        let runs = AtomicUsize::new(0);
        for round in 0..3 {
            let v = group.work(&1, || async { runs.fetch_add(1, SeqCst) as u64 }).await.unwrap();
            assert_eq!(*v.value(), round, "not a cache: each call after completion runs again");
            assert!(v.is_leader() && !v.is_shared());
            assert!(group.is_idle());
        }
        assert_eq!(group.counters().leaders, 3);
    });
}

#[test]
fn calls_with_different_keys_do_not_wait_on_each_other() {
    run(async {
        let (group, probe, blocked) = (G::default(), Arc::new(Probe::default()), Gate::new());
        let slow = caller(&group, 1, &probe, &blocked, 1);
        until(|| probe.running() == 1).await;
        // Key 2 completes while key 1's work is still held.
        let fast = group.work(&2, || async { 2 }).await.unwrap();
        assert_eq!((*fast.value(), fast.is_leader()), (2, true));
        assert_eq!(group.in_flight(), 1);
        blocked.open();
        assert_eq!(*slow.await.unwrap().value(), 1);
    });
}

/// Go's `TestForget`: after `forget`, a new call starts a new flight; the old flight's callers
/// get the old value; and the old leader does not remove the new flight's entry (Go issue 31420).
#[test]
fn forget_detaches_the_flight_and_removal_compares_identity() {
    run(async {
        let probe = Arc::new(Probe::default());
        let (group, first_gate, second_gate) = (G::default(), Gate::new(), Gate::new());
        let first = caller(&group, 5, &probe, &first_gate, 1);
        until(|| probe.running() == 1).await;
        assert!(group.forget(&5));
        let second = caller(&group, 5, &probe, &second_gate, 2);
        until(|| probe.running() == 2).await; // a forgotten flight may overlap the new one
        let third = caller(&group, 5, &probe, &second_gate, 3);
        until(|| group.counters().followers == 1).await; // the third joins the second flight
        first_gate.open();
        assert_eq!(*first.await.unwrap().value(), 1, "the old flight's caller got the old value");
        assert_eq!(group.in_flight(), 1, "the old leader did not remove the new flight");
        second_gate.open();
        assert_eq!(*second.await.unwrap().value(), 2);
        assert_eq!(*third.await.unwrap().value(), 2);
        assert!(group.is_idle());
        assert_eq!((group.counters().forgets, probe.runs()), (1, 2));
        assert!(!group.forget(&5), "nothing left to forget");
    });
}

#[test]
fn dropped_leader_promotes_exactly_one_follower_which_runs_its_own_work() {
    run(async {
        let (group, probe, gate) = (G::default(), Arc::new(Probe::default()), Gate::new());
        let leader_probe = probe.clone();
        let mut leader = Box::pin(group.work(&9, || async move {
            let _running = leader_probe.enter();
            std::future::pending::<u64>().await
        }));
        assert!(poll_once(&mut leader).is_pending());
        assert_eq!(probe.running(), 1);
        let followers: Vec<_> = (0..5).map(|i| caller(&group, 9, &probe, &gate, 10 + i)).collect();
        until(|| group.counters().followers == 5).await;
        drop(leader); // cancelled mid-flight: its work is dropped before the hand-over
        until(|| group.counters().promotions == 1).await;
        gate.open();
        let mut outcomes = Vec::new();
        for f in followers {
            outcomes.push(f.await.unwrap());
        }
        assert_eq!(probe.runs(), 2, "the dropped leader's run and exactly one promoted run");
        assert_eq!(probe.overlaps(), 0, "the promoted work started after the leader's was dropped");
        let promoted: Vec<_> = outcomes.iter().filter(|o| o.is_leader()).collect();
        assert_eq!(promoted.len(), 1);
        assert!(outcomes.iter().all(|o| o.value() == promoted[0].value()), "the others got its value");
        assert_eq!(group.counters().promotions, 1);
        assert!(group.is_idle());
    });
}

#[test]
fn dropped_leader_with_no_follower_frees_the_key() {
    run(async {
        let group = G::default();
        let mut leader = Box::pin(group.work(&3, std::future::pending::<u64>));
        assert!(poll_once(&mut leader).is_pending());
        assert_eq!(group.in_flight(), 1);
        drop(leader);
        assert!(group.is_idle());
        assert_eq!(*group.work(&3, || async { 4 }).await.unwrap().value(), 4);
    });
}

#[test]
fn dropped_follower_affects_nobody_and_leaks_nothing() {
    run(async {
        let group: Arc<Group<u32, Arc<String>>> = Arc::default();
        let value = Arc::new("report".to_string());
        let gate = Gate::new();
        let leader = {
            let (group, value, gate) = (group.clone(), value.clone(), gate.wait());
            tokio::spawn(async move {
                group
                    .work(&1, || async move {
                        gate.await;
                        value
                    })
                    .await
                    .unwrap()
            })
        };
        until(|| group.in_flight() == 1).await;
        let mut follower = Box::pin(group.work(&1, || async { unreachable!("a follower of a live leader") }));
        assert!(poll_once(&mut follower).is_pending());
        assert_eq!(group.counters().followers, 1);
        drop(follower);
        gate.open();
        let outcome = leader.await.unwrap();
        assert!(!outcome.is_shared(), "the dropped follower did not receive the value");
        drop(outcome);
        assert!(group.is_idle());
        assert_eq!(Arc::strong_count(&value), 1, "no clone of the value is left anywhere");
    });
}

#[test]
fn leader_panic_releases_followers_with_a_typed_error_and_frees_the_key() {
    run(async {
        let (group, gate) = (G::default(), Gate::new());
        let leader = {
            let (group, gate) = (group.clone(), gate.wait());
            tokio::spawn(async move {
                group
                    .work(&2, || async move {
                        gate.await;
                        boom()
                    })
                    .await
            })
        };
        until(|| group.in_flight() == 1).await;
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move { group.work(&2, || async { 0 }).await })
            })
            .collect();
        until(|| group.counters().followers == 3).await;
        gate.open();
        assert!(leader.await.unwrap_err().is_panic(), "the panic propagates in the caller that ran the work");
        for f in followers {
            let err = f.await.unwrap().unwrap_err();
            assert!(err.is_panic());
            assert_eq!(err.message(), Some("database on fire"));
        }
        assert!(group.is_idle(), "a panicked flight's entry is removed");
        assert_eq!(*group.work(&2, || async { 5 }).await.unwrap().value(), 5, "the key is not poisoned");
        assert_eq!(group.counters().panics, 1);
    });
}

#[test]
fn fallible_work_shares_the_error_without_clone_and_never_retains_it() {
    #[derive(Debug)]
    struct Down; // deliberately not Clone
    run(async {
        let group: Arc<TryGroup<u32, u64, Down>> = Arc::default();
        let gate = Gate::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let (group, gate, runs) = (group.clone(), gate.wait(), runs.clone());
                tokio::spawn(async move {
                    group
                        .try_work(&1, || async move {
                            runs.fetch_add(1, SeqCst);
                            gate.await;
                            Err::<u64, _>(Down)
                        })
                        .await
                })
            })
            .collect();
        until(|| group.counters().followers == 3).await;
        gate.open();
        let mut errors = Vec::new();
        for c in calls {
            match c.await.unwrap().unwrap_err() {
                coalescer::Error::Failed(e) => errors.push(e),
                other => panic!("expected the work's error, got {other:?}"),
            }
        }
        assert_eq!(runs.load(SeqCst), 1);
        assert!(errors.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])), "one error, shared");
        drop(errors);
        let ok = group.try_work(&1, || async { Ok::<_, Down>(8) }).await.unwrap();
        assert_eq!((*ok.value(), ok.is_leader()), (8, true), "the error was not retained");
    });
}

#[test]
fn shared_flag_tells_whether_the_value_went_to_more_than_one_caller() {
    run(async {
        let (group, probe, gate) = (G::default(), Arc::new(Probe::default()), Gate::new());
        let alone = group.work(&1, || async { 1 }).await.unwrap();
        assert!(alone.is_leader() && !alone.is_shared());
        let leader = caller(&group, 2, &probe, &gate, 2);
        until(|| probe.running() == 1).await;
        let follower = caller(&group, 2, &probe, &gate, 0);
        until(|| group.counters().followers == 1).await;
        gate.open();
        let (leader, follower) = (leader.await.unwrap(), follower.await.unwrap());
        assert!(leader.is_leader() && leader.is_shared());
        assert!(!follower.is_leader() && follower.is_shared());
    });
}

#[test]
fn counters_count_leaders_followers_promotions_panics_and_forgets() {
    run(async {
        let group = G::default();
        assert_eq!(group.work(&1, || async { 1 }).await.unwrap().into_value(), 1);
        let mut leader = Box::pin(group.work(&2, std::future::pending));
        assert!(poll_once(&mut leader).is_pending());
        let follower = {
            let group = group.clone();
            tokio::spawn(async move { group.work(&2, || async { 2 }).await.unwrap() })
        };
        until(|| group.counters().followers == 1).await;
        drop(leader);
        assert_eq!(follower.await.unwrap().into_value(), 2);
        let mut forgotten = Box::pin(group.work(&3, std::future::pending));
        assert!(poll_once(&mut forgotten).is_pending());
        assert!(group.forget(&3));
        drop(forgotten);
        let c = group.counters();
        assert_eq!((c.leaders, c.followers, c.promotions, c.panics, c.forgets), (3, 1, 1, 0, 1));
        assert_eq!(c.cancellations, 1, "the forgotten flight's leader left with nobody waiting");
        assert!((c.shared_ratio() - 0.25).abs() < 1e-9);
        assert!(group.is_idle());
    });
}
