//! How many times a flight clones its value: never for a lone caller, once per follower when
//! the callers read one after another (the last reader takes the stored value). Two readers
//! that read at the same instant may both clone, so the bound under a race is one more.

mod common;

use coalescer::Group;
use common::{poll_once, run, until};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::Poll;

/// A value that counts its clones.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, SeqCst);
        Self(self.0.clone())
    }
}

fn counted() -> (Counted, Arc<AtomicUsize>) {
    let clones = Arc::new(AtomicUsize::new(0));
    (Counted(clones.clone()), clones)
}

#[test]
fn a_lone_caller_gets_its_value_without_a_clone_in_every_mode() {
    run(async {
        let group = Arc::new(Group::<u32, Counted>::new());
        let (v, clones) = counted();
        assert!(group.work(&1, || async { v }).await.unwrap().is_leader());
        let (v, shared) = counted();
        let shared_group = Group::<u32, Counted>::new().shared();
        assert!(shared_group.work(&2, || async { v }).await.unwrap().is_leader());
        let (v, detached) = counted();
        let detached_group = Arc::new(Group::<u32, Counted>::new().detached(common::Detach));
        assert!(detached_group.work(&3, || async { v }).await.unwrap().is_leader());
        let (v, blocking) = counted();
        let g = group.clone();
        assert!(
            tokio::task::spawn_blocking(move || g.work_blocking(&4, || v).unwrap())
                .await
                .unwrap()
                .is_leader()
        );
        let counts = [&clones, &shared, &detached, &blocking].map(|c| c.load(SeqCst));
        assert_eq!(counts, [0; 4], "work, shared, detached, blocking");
    });
}

/// `n` followers read one after another (polled by hand, in turn): exactly `n` clones.
macro_rules! followers_in_turn_cost_one_clone_each {
    ($group:expr) => {{
        const N: usize = 5;
        let group = $group;
        let (v, clones) = counted();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let work = move || async move {
            rx.await.unwrap();
            v
        };
        let mut leader = Box::pin(group.work(&1, work));
        assert!(poll_once(&mut leader).is_pending());
        let never = || async { unreachable!("followers do not run their work") };
        let mut followers: Vec<_> = (0..N).map(|_| Box::pin(group.work(&1, never))).collect();
        for f in &mut followers {
            assert!(poll_once(f).is_pending());
        }
        tx.send(()).unwrap();
        let Poll::Ready(Ok(outcome)) = poll_once(&mut leader) else { panic!("the leader finishes") };
        assert!(outcome.is_leader() && outcome.is_shared());
        for f in &mut followers {
            assert!(matches!(poll_once(f), Poll::Ready(Ok(ref o)) if !o.is_leader() && o.is_shared()));
        }
        assert_eq!(clones.load(SeqCst), N);
    }};
}

#[test]
fn followers_reading_in_turn_cost_one_clone_each_in_work_mode() {
    followers_in_turn_cost_one_clone_each!(Group::<u32, Counted>::new());
}

#[test]
fn followers_reading_in_turn_cost_one_clone_each_in_shared_mode() {
    followers_in_turn_cost_one_clone_each!(Group::<u32, Counted>::new().shared());
}

/// Real concurrency: the callers of a detached flight read as they are woken; at most one clone
/// per follower, plus one when the last two read at once.
#[test]
fn concurrent_followers_cost_at_most_one_clone_each_plus_one() {
    run(async {
        const N: usize = 8;
        let group = Arc::new(Group::<u32, Counted>::new().detached(common::Detach));
        let (v, clones) = counted();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .work(&1, move || async move {
                        rx.await.unwrap();
                        v
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 1).await;
        let followers: Vec<_> = (0..N)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move { group.work(&1, || async { unreachable!() }).await })
            })
            .collect();
        until(|| group.counters().followers == N as u64).await;
        tx.send(()).unwrap();
        assert!(leader.await.unwrap().unwrap().is_shared());
        for f in followers {
            assert!(!f.await.unwrap().unwrap().is_leader());
        }
        let n = clones.load(SeqCst);
        assert!((N..=N + 1).contains(&n), "{n} clones for {N} followers");
    });
}
