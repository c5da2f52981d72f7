//! The bound on keys in flight (`Group::max_in_flight`): a new key beyond it is refused with a
//! typed error or runs alone; joining a flight in the air is always allowed; each flight's
//! permit is given back exactly once, when the flight ends, whatever ended it.

mod common;

use coalescer::{Aborted, Cause, Group, Outcome, WhenFull};
use common::{Gate, Probe, poll_once, run, until};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

type G = Arc<Group<u32, u32>>;

fn bounded(limit: usize, when_full: WhenFull) -> G {
    Arc::new(Group::new().max_in_flight(limit, when_full))
}

/// A caller of `key` whose work waits for `gate`.
fn gated(group: &G, key: u32, gate: &Gate) -> tokio::task::JoinHandle<Result<Outcome<u32>, Aborted>> {
    let (group, gate) = (group.clone(), gate.clone());
    tokio::spawn(async move {
        group
            .work(&key, move || async move {
                gate.wait().await;
                key
            })
            .await
    })
}

/// Whether a call for a fresh key gets a permit right now (it is run to completion).
async fn admits_a_new_key(group: &G, key: u32) -> bool {
    match group.work(&key, || async { 0 }).await {
        Ok(_) => true,
        Err(aborted) if aborted.is_full() => false,
        Err(aborted) => panic!("unexpected {aborted}"),
    }
}

#[test]
fn a_new_key_beyond_the_bound_is_refused_with_a_typed_error() {
    run(async {
        let (group, gate) = (bounded(2, WhenFull::Reject), Gate::new());
        let (a, b) = (gated(&group, 1, &gate), gated(&group, 2, &gate));
        until(|| group.in_flight() == 2).await;
        let refused =
            group.work(&3, || async { unreachable!("refused calls run nothing") }).await.unwrap_err();
        assert_eq!(refused.cause(), Cause::Full { limit: 2 });
        assert!(refused.to_string().contains("2 keys in flight"));
        let try_group = Group::<u32, u32, _>::new().max_in_flight(0, WhenFull::Reject);
        let err = futures_lite::future::block_on(try_group.work(&1, || async { 1 })).unwrap_err();
        assert!(err.is_full());
        assert_eq!(group.counters().overflows, 1);
        gate.open();
        assert_eq!(*a.await.unwrap().unwrap().value(), 1);
        assert_eq!(*b.await.unwrap().unwrap().value(), 2);
        // Both permits came back: two new keys fit again.
        assert!(admits_a_new_key(&group, 3).await && admits_a_new_key(&group, 4).await);
    });
}

#[test]
fn joining_a_flight_in_the_air_is_always_allowed_at_the_bound() {
    run(async {
        let (group, gate) = (bounded(1, WhenFull::Reject), Gate::new());
        let leader = gated(&group, 1, &gate);
        until(|| group.in_flight() == 1).await;
        let followers: Vec<_> = (0..5).map(|_| gated(&group, 1, &gate)).collect();
        until(|| group.counters().followers == 5).await;
        gate.open();
        assert!(leader.await.unwrap().unwrap().is_shared());
        for f in followers {
            assert_eq!(*f.await.unwrap().unwrap().value(), 1);
        }
        assert_eq!(group.counters().overflows, 0);
    });
}

#[test]
fn a_call_beyond_the_bound_runs_alone_when_asked_to() {
    run(async {
        let (group, gate) = (bounded(1, WhenFull::RunAlone), Gate::new());
        let first = gated(&group, 1, &gate);
        until(|| group.in_flight() == 1).await;
        // Key 2 runs, uncoalesced: its flight is not in the map, so a second caller of key 2
        // runs its own work too.
        let alone = group.work(&2, || async { 20 }).await.unwrap();
        assert!(alone.is_leader() && !alone.is_shared() && *alone.value() == 20);
        let runs = Arc::new(AtomicUsize::new(0));
        let (r1, r2) = (runs.clone(), runs.clone());
        let (x, y) = tokio::join!(
            group.work(&3, move || async move { r1.fetch_add(1, SeqCst) as u32 }),
            group.work(&3, move || async move { r2.fetch_add(1, SeqCst) as u32 })
        );
        assert!(x.unwrap().is_leader() && y.unwrap().is_leader());
        assert_eq!(runs.load(SeqCst), 2);
        assert_eq!(group.in_flight(), 1);
        assert_eq!(group.counters().overflows, 3);
        // The same in a shared group: its flights run alone too.
        let shared = Group::<u32, u32>::new().max_in_flight(1, WhenFull::RunAlone).shared();
        let mut full = Box::pin(shared.work(&1, std::future::pending::<u32>));
        assert!(poll_once(&mut full).is_pending());
        let (r1, r2) = (runs.clone(), runs.clone());
        let (x, y) = tokio::join!(
            shared.work(&3, move || async move { r1.fetch_add(1, SeqCst) as u32 }),
            shared.work(&3, move || async move { r2.fetch_add(1, SeqCst) as u32 })
        );
        assert!(x.unwrap().is_leader() && y.unwrap().is_leader());
        assert_eq!(runs.load(SeqCst), 4);
        assert_eq!((shared.in_flight(), shared.counters().overflows), (1, 2));
        drop(full);
        assert!(shared.is_idle());
        gate.open();
        assert_eq!(*first.await.unwrap().unwrap().value(), 1);
        assert!(admits_a_new_key(&group, 4).await);
    });
}

#[test]
fn the_permit_comes_back_once_whatever_ends_the_flight() {
    run(async {
        let group = bounded(1, WhenFull::Reject);
        // A panic.
        let g = group.clone();
        let panicked = tokio::spawn(async move { g.work(&1, || async { panic!("boom") }).await }).await;
        assert!(panicked.unwrap_err().is_panic());
        assert!(admits_a_new_key(&group, 2).await);
        // A work-mode flight abandoned by its only caller.
        let mut abandoned = Box::pin(group.work(&3, std::future::pending::<u32>));
        assert!(poll_once(&mut abandoned).is_pending());
        assert!(!admits_a_new_key(&group, 4).await);
        drop(abandoned);
        assert!(admits_a_new_key(&group, 4).await);
        // Shared work abandoned by its only caller (the flight closes, then ends).
        let shared_group = Group::<u32, u32>::new().max_in_flight(1, WhenFull::Reject).shared();
        let mut shared = Box::pin(shared_group.work(&5, std::future::pending::<u32>));
        assert!(poll_once(&mut shared).is_pending());
        assert!(shared_group.work(&6, || async { 6 }).await.unwrap_err().is_full());
        drop(shared);
        assert_eq!(*shared_group.work(&6, || async { 6 }).await.unwrap().value(), 6);
        // A forgotten flight still counts until it ends.
        let gate = Gate::new();
        let forgotten = gated(&group, 7, &gate);
        until(|| group.in_flight() == 1).await;
        assert!(group.forget(&7));
        assert!(!admits_a_new_key(&group, 8).await, "a forgotten flight is still in the air");
        gate.open();
        assert_eq!(*forgotten.await.unwrap().unwrap().value(), 7);
        assert!(admits_a_new_key(&group, 8).await);
        // A cancelled leader whose follower is promoted keeps the one permit of the flight.
        let gate = Gate::new();
        let mut leader = Box::pin(group.work(&9, std::future::pending::<u32>));
        assert!(poll_once(&mut leader).is_pending());
        let follower = gated(&group, 9, &gate);
        until(|| group.counters().followers == 1).await;
        drop(leader);
        until(|| group.counters().promotions == 1).await;
        assert!(!admits_a_new_key(&group, 10).await);
        gate.open();
        assert_eq!(*follower.await.unwrap().unwrap().value(), 9);
        assert!(admits_a_new_key(&group, 10).await);
    });
}

/// Many tasks over many keys: never more keys run at once than the bound, and every permit
/// comes back.
#[test]
fn no_more_keys_run_at_once_than_the_bound_under_load() {
    run(async {
        const LIMIT: usize = 3;
        let group = bounded(LIMIT, WhenFull::Reject);
        let (probe, peak) = (Arc::new(Probe::default()), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let (group, probe, peak) = (group.clone(), probe.clone(), peak.clone());
                tokio::spawn(async move {
                    let mut refused = 0;
                    for round in 0..50u32 {
                        let key = (i * 7 + round) % 11;
                        let (probe, peak) = (probe.clone(), peak.clone());
                        let call = group.work(&key, move || async move {
                            let _running = probe.enter();
                            peak.fetch_max(probe.running(), SeqCst);
                            tokio::task::yield_now().await;
                            key
                        });
                        match call.await {
                            Ok(v) => assert_eq!(*v.value(), key),
                            Err(a) if a.is_full() => refused += 1,
                            Err(a) => panic!("{a}"),
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            refused += t.await.unwrap();
        }
        assert!(peak.load(SeqCst) <= LIMIT, "peak {} > {LIMIT}", peak.load(SeqCst));
        assert_eq!(group.counters().overflows, refused);
        assert!(group.is_idle());
        for key in 100..100 + LIMIT as u32 {
            let mut hold = Box::pin(group.work(&key, std::future::pending::<u32>));
            assert!(poll_once(&mut hold).is_pending());
            std::mem::forget(hold); // keep the permit for the rest of the test
        }
        assert!(!admits_a_new_key(&group, 200).await);
    });
}
