//! Unwind safety: user code that panics anywhere but inside the work's `poll` (a value's
//! `Clone`, the work's `Drop`, a `Spawn` impl, a key's `Hash`/`Eq`), and the promotion race.
//! Each test is a regression test for a defect found by review (issue 11); each proves that
//! the outcome is the documented one: never a hang, a stuck key, a double finish or UB.

mod common;

use coalescer::{Aborted, Group, Outcome, Spawn};
use common::{AnyGroup, Gate, Mode, run, until};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// A value whose `Clone` panics once, when armed: the first clone after `arm` panics.
#[derive(Debug)]
struct Bomb {
    value: u64,
    armed: Arc<AtomicBool>,
}

impl Clone for Bomb {
    fn clone(&self) -> Self {
        if self.armed.swap(false, SeqCst) {
            panic!("Bomb::clone");
        }
        Self { value: self.value, armed: self.armed.clone() }
    }
}

fn bomb(armed: &Arc<AtomicBool>) -> Bomb {
    Bomb { value: 7, armed: armed.clone() }
}

/// A work future whose `Drop` panics (after it completed, or when it is cancelled).
struct DropBomb<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for DropBomb<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<F> Drop for DropBomb<F> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("work's Drop");
        }
    }
}

type Joined<V> = tokio::task::JoinHandle<Result<Outcome<V>, Aborted>>;

/// Awaits every task; returns (values, panics). No task may end in `Aborted`.
async fn settle<V: Send + 'static>(tasks: Vec<Joined<V>>) -> (Vec<V>, usize) {
    let (mut values, mut panics) = (Vec::new(), 0);
    for t in tasks {
        match t.await {
            Ok(Ok(outcome)) => values.push(outcome.into_value()),
            Ok(Err(aborted)) => panic!("a caller was aborted: {aborted}"),
            Err(e) if e.is_panic() => panics += 1,
            Err(e) => panic!("task failed: {e}"),
        }
    }
    (values, panics)
}

// ---------------------------------------------------------------------------------------------
// Defect 1: a value whose `Clone` panics while the result is handed out.

/// Starts `n` callers of one key in `mode`, the first leading; the leader waits for `gate`.
fn callers(group: &Arc<AnyGroup<Bomb>>, armed: &Arc<AtomicBool>, gate: &Gate, n: usize) -> Vec<Joined<Bomb>> {
    (0..n)
        .map(|_| {
            let (group, armed, gate) = (group.clone(), armed.clone(), gate.clone());
            tokio::spawn(async move {
                let work = move || async move {
                    gate.wait().await;
                    bomb(&armed)
                };
                group.work(1, work).await
            })
        })
        .collect()
}

fn clone_panic_releases_every_other_caller(shared: bool) {
    run(async move {
        let mode = if shared { Mode::Shared } else { Mode::Work };
        let (group, armed, gate) = (AnyGroup::new(mode), Arc::new(AtomicBool::new(true)), Gate::new());
        let tasks = callers(&group, &armed, &gate, 4);
        until(|| group.counters().followers == 3).await;
        gate.open();
        let (values, panics) = settle(tasks).await;
        // The one caller whose clone panicked sees the panic; the other three get the value.
        assert_eq!((values.len(), panics), (3, 1));
        assert!(values.iter().all(|b| b.value == 7));
        assert!(group.is_idle());
        // The key is free: the next call starts a new flight.
        let again = group.work(1, || async { Bomb { value: 8, armed: Arc::default() } }).await.unwrap();
        assert!(again.is_leader() && again.value().value == 8);
    });
}

#[test]
fn value_clone_panic_in_work_mode_releases_the_other_callers() {
    clone_panic_releases_every_other_caller(false);
}

#[test]
fn value_clone_panic_in_shared_mode_releases_the_other_callers() {
    clone_panic_releases_every_other_caller(true);
}

#[test]
fn value_clone_panic_with_a_blocking_leader_releases_the_followers() {
    run(async {
        let (group, armed) = (Arc::new(Group::<u32, Bomb>::new()), Arc::new(AtomicBool::new(true)));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let leader = {
            let (group, armed) = (group.clone(), armed.clone());
            std::thread::spawn(move || {
                group.work_blocking(&1, || {
                    go_rx.recv().unwrap();
                    bomb(&armed)
                })
            })
        };
        until(|| group.counters().leaders == 1).await;
        let followers: Vec<Joined<Bomb>> = (0..3)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move { group.work(&1, || async { unreachable!("follows") }).await })
            })
            .collect();
        until(|| group.counters().followers == 3).await;
        go_tx.send(()).unwrap();
        let leader = tokio::task::spawn_blocking(move || leader.join()).await.unwrap();
        let (values, panics) = settle(followers).await;
        // Exactly one of the four reads panicked, in whichever caller made it.
        assert_eq!(values.len() + usize::from(leader.is_ok()), 3);
        assert_eq!(panics + usize::from(leader.is_err()), 1);
        assert!(group.is_idle());
    });
}

#[test]
fn value_clone_panic_in_a_detached_flight_releases_the_callers() {
    run(async {
        let (group, armed, gate) = (
            Arc::new(Group::<u32, Bomb>::new().detached(common::Detach)),
            Arc::new(AtomicBool::new(true)),
            Gate::new(),
        );
        let tasks: Vec<Joined<Bomb>> = (0..3)
            .map(|_| {
                let (group, armed, gate) = (group.clone(), armed.clone(), gate.clone());
                tokio::spawn(async move {
                    group
                        .work(&1, move || async move {
                            gate.wait().await;
                            bomb(&armed)
                        })
                        .await
                })
            })
            .collect();
        until(|| group.counters().followers == 2).await;
        gate.open();
        let (values, panics) = settle(tasks).await;
        assert_eq!((values.len(), panics), (2, 1));
        until(|| group.is_idle()).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Defect 2: shared (or detached) work whose `Drop` panics.

/// Starts `n` callers of key 1 in `mode`; the work waits for `gate`, returns 42, and its
/// future's `Drop` panics.
fn drop_bomb_callers(group: &Arc<AnyGroup<u64>>, gate: &Gate, n: usize) -> Vec<Joined<u64>> {
    (0..n)
        .map(|_| {
            let (group, gate) = (group.clone(), gate.clone());
            tokio::spawn(async move {
                let work = move || {
                    DropBomb(Box::pin(async move {
                        gate.wait().await;
                        42
                    }))
                };
                group.work(1, work).await
            })
        })
        .collect()
}

#[test]
fn shared_work_drop_panic_after_completion_still_publishes_and_frees_the_key() {
    run(async {
        let (group, gate) = (AnyGroup::new(Mode::Shared), Gate::new());
        let tasks = drop_bomb_callers(&group, &gate, 4);
        until(|| group.counters().followers == 3).await;
        gate.open();
        let (values, panics) = settle(tasks).await;
        // The work's value is published; the caller that dropped the work sees its panic.
        assert_eq!((values, panics), (vec![42; 3], 1));
        assert!(group.is_idle());
        assert_eq!(group.counters().panics, 1);
        assert_eq!(*group.work(1, || async { 5 }).await.unwrap().value(), 5);
    });
}

#[test]
fn abandoned_shared_work_whose_drop_panics_still_frees_the_key() {
    run(async {
        let group = Arc::new(Group::<u32, u64>::new().shared());
        let mut caller =
            Box::pin(group.work(&1, || DropBomb(Box::pin(async { std::future::pending::<u64>().await }))));
        assert!(common::poll_once(&mut caller).is_pending());
        // The last caller leaves: the work is dropped, and its `Drop` panics out of this drop.
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(caller)));
        assert!(dropped.is_err(), "the work's Drop panic propagates to the caller that dropped it");
        assert!(group.is_idle(), "the key is free after the abandoned work's Drop panicked");
        assert_eq!(group.counters().cancellations, 1);
        let next = group.work(&1, || async { 9 }).await.unwrap();
        assert!(next.is_leader() && *next.value() == 9);
    });
}

#[test]
fn work_mode_drop_panic_after_completion_still_publishes() {
    run(async {
        let (group, gate) = (AnyGroup::new(Mode::Work), Gate::new());
        let tasks = drop_bomb_callers(&group, &gate, 3);
        until(|| group.counters().followers == 2).await;
        gate.open();
        let (values, panics) = settle(tasks).await;
        assert_eq!((values, panics), (vec![42; 2], 1));
        assert!(group.is_idle());
        // The value was published: nobody was promoted to run the work again.
        assert_eq!(group.counters().promotions, 0);
    });
}

#[test]
fn detached_work_drop_panic_after_completion_still_publishes() {
    run(async {
        let (group, gate) = (AnyGroup::new(Mode::Detached), Gate::new());
        let tasks = drop_bomb_callers(&group, &gate, 3);
        until(|| group.counters().followers == 2).await;
        gate.open();
        let (values, panics) = settle(tasks).await;
        assert_eq!((values, panics), (vec![42; 3], 0));
        until(|| group.is_idle()).await;
        assert_eq!(group.counters().panics, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// Defect 3: a lost wake-up at promotion (the CAS that fails because the count changed). The
// interleaving is narrow; this test hammers it with real threads, and the loom model
// `promotion_survives_concurrent_join_and_leave` explores it exhaustively.

#[test]
fn promotion_survives_followers_joining_and_leaving_at_once() {
    run(async {
        let group = Arc::new(Group::<u32, u64>::new());
        for round in 0..300u64 {
            let (started, gate) = (Arc::new(AtomicBool::new(false)), Gate::new());
            let mut leader = {
                let (group, started) = (group.clone(), started.clone());
                tokio::spawn(async move {
                    group
                        .work(&1, move || async move {
                            started.store(true, SeqCst);
                            std::future::pending::<u64>().await
                        })
                        .await
                })
            };
            until(|| started.load(SeqCst)).await;
            let stayer = {
                let group = group.clone();
                tokio::spawn(async move { group.work(&1, move || async move { round }).await })
            };
            let leaver = {
                let (group, gate) = (group.clone(), gate.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        r = group.work(&1, move || async move { round }) => Some(r),
                        () = gate.wait() => None,
                    }
                })
            };
            until(|| group.counters().followers >= 2 * round + 2).await;
            // The leader goes, a follower leaves and another joins, all at once.
            leader.abort();
            gate.open();
            let joiner = {
                let group = group.clone();
                tokio::spawn(async move { group.work(&1, move || async move { round }).await })
            };
            let _ = (&mut leader).await;
            let _ = leaver.await.unwrap();
            assert_eq!(*stayer.await.unwrap().unwrap().value(), round);
            assert_eq!(*joiner.await.unwrap().unwrap().value(), round);
            until(|| group.is_idle()).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Defect 4: a `Spawn` that panics after handing the task over: two would-be finishers.

std::thread_local! {
    /// Set on the thread that runs the detached task in the test below.
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Where the task is: `reached` opens when the task is handing its value out (or has finished);
/// the task's clone, if it makes one, waits for `release`.
struct Race {
    reached: Gate,
    release: Gate,
    task_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A value whose `Clone`, on the task's thread, stops inside the task's hand-out.
#[derive(Debug)]
struct Slow(u64, Arc<Race>);

impl std::fmt::Debug for Race {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Race")
    }
}

impl Clone for Slow {
    fn clone(&self) -> Self {
        if IN_TASK.with(std::cell::Cell::get) {
            self.1.reached.open();
            futures_lite::future::block_on(self.1.release.wait());
        }
        Self(self.0, self.1.clone())
    }
}

/// Runs the task on a thread of its own, waits until the task is handing its value out (or
/// is done), then panics: the leader's failure path and the task's completion race.
#[derive(Clone)]
struct SpawnThenPanic(Arc<Race>);

impl Spawn for SpawnThenPanic {
    type Task = ();
    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) {
        let race = self.0.clone();
        let thread = std::thread::spawn(move || {
            IN_TASK.with(|t| t.set(true));
            futures_lite::future::block_on(task);
            race.reached.open();
        });
        *self.0.task_thread.lock().unwrap() = Some(thread);
        futures_lite::future::block_on(self.0.reached.wait());
        panic!("spawn panicked after handing the task over");
    }
    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

#[test]
fn spawn_panicking_after_handing_over_finishes_the_flight_once() {
    run(async {
        let race =
            Arc::new(Race { reached: Gate::new(), release: Gate::new(), task_thread: Default::default() });
        let group = Arc::new(Group::<u32, Slow>::new().detached(SpawnThenPanic(race.clone())));
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel::<()>();
        // The leader's `spawn` blocks its thread: a blocking thread, not a runtime worker.
        let leader = {
            let (group, race) = (group.clone(), race.clone());
            tokio::task::spawn_blocking(move || {
                let value = Slow(42, race.clone());
                futures_lite::future::block_on(group.work(&1, move || async move {
                    joined_rx.await.unwrap();
                    value
                }))
            })
        };
        until(|| group.counters().leaders == 1).await;
        let follower = {
            let group = group.clone();
            tokio::spawn(async move { group.work(&1, || async { unreachable!("follows") }).await })
        };
        until(|| group.counters().followers == 1).await;
        joined_tx.send(()).unwrap();
        // The leader resumes its spawn's panic; only then may the task go on.
        assert!(leader.await.unwrap_err().is_panic());
        race.release.open();
        let thread = race.task_thread.lock().unwrap().take().unwrap();
        let task = tokio::task::spawn_blocking(move || thread.join()).await.unwrap();
        assert!(task.is_ok(), "the task must not finish a flight that was already finished");
        // Exactly one of the two finishers published: the follower got its result, whichever.
        match follower.await.unwrap() {
            Ok(outcome) => assert_eq!(outcome.value().0, 42),
            Err(aborted) => assert!(aborted.is_panic()),
        }
        until(|| group.is_idle()).await;
    });
}

// ---------------------------------------------------------------------------------------------
// Keys whose `Hash` or `Eq` panic.

/// A key whose `Hash` panics while `PANIC_HASH` is set.
#[derive(Clone, Debug)]
struct Touchy(u32, Arc<AtomicBool>);

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Touchy {}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.1.load(SeqCst) {
            panic!("Touchy::hash");
        }
        self.0.hash(state);
    }
}

#[test]
fn key_hash_panic_after_joining_never_wedges_the_key() {
    run(async {
        let (group, touchy, gate) =
            (Arc::new(Group::<Touchy, u64>::new()), Arc::new(AtomicBool::new(false)), Gate::new());
        let key = Touchy(1, touchy.clone());
        let leader = {
            let (group, key, gate) = (group.clone(), key.clone(), gate.clone());
            tokio::spawn(async move {
                group
                    .work(&key, move || async move {
                        gate.wait().await;
                        1
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 1).await;
        // From now on the key's `Hash` panics: the core must not need it to end the flight.
        touchy.store(true, SeqCst);
        gate.open();
        assert_eq!(*leader.await.unwrap().unwrap().value(), 1);
        assert!(group.is_idle());
        // A call whose key cannot be hashed panics in that caller and changes nothing.
        let k = key.clone();
        let g = group.clone();
        let panicked = tokio::spawn(async move { g.work(&k, || async { 2 }).await }).await;
        assert!(panicked.unwrap_err().is_panic());
        assert!(group.is_idle());
        touchy.store(false, SeqCst);
        assert!(group.work(&key, || async { 3 }).await.unwrap().is_leader());
    });
}

/// A key whose `Clone` panics while its flag is set: the clone a leader makes of its borrowed
/// key for the map.
#[derive(Debug)]
struct CloneBomb(u32, Arc<AtomicBool>);

impl Clone for CloneBomb {
    fn clone(&self) -> Self {
        assert!(!self.1.load(SeqCst), "CloneBomb::clone");
        Self(self.0, self.1.clone())
    }
}
impl PartialEq for CloneBomb {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for CloneBomb {}
impl Hash for CloneBomb {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Calls take the key by reference and a leader clones it for the map, outside any lock and
/// before it takes a permit of the group's bound: a panicking `Clone` panics in that caller,
/// which joined nothing, holds no permit, and left the group as it was. A follower never
/// clones the key.
#[test]
fn key_clone_panic_at_a_leaders_join_leaves_nothing_behind() {
    run(async {
        let bomb = Arc::new(AtomicBool::new(false));
        let group = Arc::new(Group::<CloneBomb, u64>::new().max_in_flight(1, coalescer::WhenFull::Reject));
        let key = CloneBomb(1, bomb.clone());
        bomb.store(true, SeqCst);
        let (g, k) = (group.clone(), CloneBomb(1, bomb.clone()));
        let panicked = tokio::spawn(async move { g.work(&k, || async { 1 }).await }).await;
        assert!(panicked.unwrap_err().is_panic(), "the leader's clone of its key panicked in it");
        assert!(group.is_idle());
        assert_eq!(group.counters().leaders, 0, "it led nothing");
        // Its permit was never taken: the bound still admits a key. A follower of that flight
        // never clones its key, so it joins while clones still panic.
        bomb.store(false, SeqCst);
        let gate = Gate::new();
        let leader = {
            let (group, gate) = (group.clone(), gate.clone());
            tokio::spawn(async move {
                let key = CloneBomb(2, Arc::new(AtomicBool::new(false)));
                group
                    .work(&key, move || async move {
                        gate.wait().await;
                        2
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 1).await;
        bomb.store(true, SeqCst);
        let follower = {
            let group = group.clone();
            tokio::spawn(async move {
                let key = CloneBomb(2, bomb);
                group.work(&key, || async { unreachable!("follows") }).await
            })
        };
        until(|| group.counters().followers == 1).await;
        gate.open();
        assert_eq!(*leader.await.unwrap().unwrap().value(), 2);
        assert_eq!(*follower.await.unwrap().unwrap().value(), 2);
        assert!(group.is_idle());
        drop(key);
    });
}

/// A key whose `Drop` calls back into its group: run inside a bucket lock, it would deadlock.
#[derive(Clone)]
struct ReentrantKey(u32, Option<Arc<Group<ReentrantKey, u64>>>, Arc<AtomicUsize>);

impl PartialEq for ReentrantKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for ReentrantKey {}
impl Hash for ReentrantKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl Drop for ReentrantKey {
    fn drop(&mut self) {
        // Looking at the group from a key's `Drop` must not deadlock on a bucket lock.
        if let Some(group) = &self.1 {
            let _ = group.in_flight();
            let _ = group.forget(&ReentrantKey(self.0, None, self.2.clone()));
            self.2.fetch_add(1, SeqCst);
        }
    }
}

#[test]
fn key_drop_runs_outside_the_table_lock() {
    run(async {
        let group = Arc::new(Group::<ReentrantKey, u64>::new());
        let drops = Arc::new(AtomicUsize::new(0));
        let gate = Gate::new();
        let key = || ReentrantKey(1, Some(group.clone()), drops.clone());
        let leader = {
            let (group, key, gate) = (group.clone(), key(), gate.clone());
            tokio::spawn(async move {
                group
                    .work(&key, move || async move {
                        gate.wait().await;
                        1
                    })
                    .await
            })
        };
        until(|| group.counters().leaders == 1).await;
        let follower = {
            let (group, key) = (group.clone(), key());
            tokio::spawn(async move { group.work(&key, || async { 2 }).await })
        };
        until(|| group.counters().followers == 1).await;
        gate.open();
        assert_eq!(*leader.await.unwrap().unwrap().value(), 1);
        assert_eq!(*follower.await.unwrap().unwrap().value(), 1);
        assert!(drops.load(SeqCst) >= 2);
    });
}
