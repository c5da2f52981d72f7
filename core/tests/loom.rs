//! Loom models of the flight protocol.
//!
//! Each test races two or three loom threads over one key and checks one ordering claim of the
//! crate: no lost wake-up, one execution at a time per key, a promoted follower, `forget` keeping
//! the new flight's entry, panics releasing the followers, and nothing left behind (the group is
//! idle, every work future and every value is dropped exactly once).
//!
//! Build and run them with `ci/loom.sh`, which sets `RUSTFLAGS="--cfg loom"` (the crate's sync
//! shim, scc and event-listener then use loom's types) and builds in release mode into a target
//! directory of its own. The exploration is bounded: at most [`PREEMPTION_BOUND`] (3)
//! preemptions per execution, [`HEAVY_PREEMPTION_BOUND`] (2) for the three largest models, unless
//! `LOOM_MAX_PREEMPTIONS` says otherwise. Each model prints how many executions it explored.
//!
//! How the models are put together:
//!
//! * The groups use a fixed hasher (loom replays executions; a random hasher would differ
//!   between them) and live in a `std` `Arc` that the model's main thread drops last, after
//!   checking that the group is idle.
//! * A caller that must hold a role (the leader, a waiting follower) is polled once by hand,
//!   with a no-op waker, before the racing threads start; the others run to the end under
//!   `loom::future::block_on`, which reports a lost wake-up as a deadlock.
//! * The work is a [`Job`]: it checks on its first poll that no other execution of the key is
//!   running, and counts its creations, completions and drops in a [`Probe`]. The values carry
//!   the id of the job that made them and count their live clones. The running count is a loom
//!   atomic, so that loom orders one execution's start against another's end (its partial-order
//!   reduction skips reorderings of operations it cannot see, and would miss an overlap); the
//!   other counts are `std` atomics, which add no interleavings and no synchronisation.
//! * Flights live in loom's `Arc` (the sync shim), so loom also fails a model that leaks one.
//! * Each model names the branches of its race (the follower joined in time or came after, the
//!   forget found the flight or not, ...) and fails if an exploration never reached one of
//!   them: a model that never reaches the race it is named after proves nothing.
#![cfg(loom)]

mod loom_support;

use coalescer::{Aborted, Group, Outcome, Single, Spawn, WhenFull};
use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, AtomicUsize as LoomUsize};
use loom::thread;
use loom_support::Seen;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The preemption bound of the models, unless `LOOM_MAX_PREEMPTIONS` overrides it: three
/// preemptions interleave a join, a leave, a publish and a wake of two threads in any order.
/// `ci/loom.sh` states the same bounds.
const PREEMPTION_BOUND: usize = 3;

/// The bound of the three models whose state space is the largest: the detached-mode model
/// (its spawned tasks add a third and a fourth thread) and the two with self-waking shared work.
/// At bound 3 they take 150 s, 55 s and 76 s on two cores; at bound 2, 5 to 15 s each.
const HEAVY_PREEMPTION_BOUND: usize = 2;

/// The one key the models race on.
const KEY: u8 = 7;

/// Marks the panics the models raise on purpose (the panic hook keeps them quiet).
const DELIBERATE: &str = "deliberate panic in the work";

type Fixed = BuildHasherDefault<DefaultHasher>;
type TestGroup<M = coalescer::mode::Inline> = Group<u8, Val, Fixed, M>;

/// Explores `f` with the models' preemption bound, then checks that the exploration reached
/// every branch in `expected` (a model that never reaches the race it is named after proves
/// nothing). `f` marks the branches it takes with [`Seen::hit`].
fn check(expected: &[usize], f: impl Fn(&Seen) + Sync + Send + 'static) {
    check_bounded(PREEMPTION_BOUND, expected, f);
}

/// [`check`] with another default preemption bound.
fn check_bounded(bound: usize, expected: &[usize], f: impl Fn(&Seen) + Sync + Send + 'static) {
    quiet_deliberate_panics();
    loom_support::explore(bound, expected, f);
}

fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<&str>().copied();
            if message != Some(DELIBERATE) {
                previous(info);
            }
        }));
    });
}

fn new_group() -> Arc<TestGroup> {
    Arc::new(Group::with_capacity_and_hasher(1, Fixed::default()))
}

fn new_shared_group() -> Arc<TestGroup<coalescer::mode::Shared>> {
    Arc::new(Group::with_capacity_and_hasher(1, Fixed::default()).shared())
}

fn new_detached_group<Sp: Spawn>(spawner: Sp) -> Arc<TestGroup<coalescer::mode::Detached<Sp>>> {
    Arc::new(Group::with_capacity_and_hasher(1, Fixed::default()).detached(spawner))
}

/// Checks that `group` is idle, then drops it (inside the model, on its main thread).
fn finish_group<M>(group: Arc<TestGroup<M>>) {
    assert!(group.is_idle(), "an entry was left behind: {group:?}");
    let group = Arc::try_unwrap(group).expect("a thread still holds the group");
    drop(group);
}

/// Polls `fut` once with a no-op waker: a caller that joins and then stalls.
fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Spins (yielding to loom) until `flag` reaches `n`.
fn wait_for(flag: &LoomUsize, n: usize) {
    while flag.load(SeqCst) < n {
        thread::yield_now();
    }
}

/// What the models count, shared by the jobs of one flight lineage.
#[derive(Default)]
struct Counts {
    created: AtomicUsize,
    started: AtomicUsize,
    running: LoomUsize,
    completed: AtomicUsize,
    dropped: AtomicUsize,
    live_values: AtomicUsize,
}

#[derive(Clone, Default)]
struct Probe(Arc<Counts>);

impl Probe {
    fn job(&self, id: u32, plan: Plan) -> Job {
        self.0.created.fetch_add(1, SeqCst);
        Job { id, plan: Box::new(plan), probe: self.clone(), started: false, finished: false }
    }

    /// A closure for `work`/shared-mode `work` that makes job `id`.
    fn work(&self, id: u32, plan: Plan) -> impl FnOnce() -> Job + Send + 'static {
        let probe = self.clone();
        move || probe.job(id, plan)
    }

    /// A closure for `work_blocking` that runs job `id` to its end on the calling thread.
    fn blocking(&self, id: u32) -> impl FnOnce() -> Val + Send + 'static {
        let probe = self.clone();
        move || match poll_once(std::pin::pin!(probe.job(id, Plan::Ready))) {
            Poll::Ready(value) => value,
            Poll::Pending => unreachable!("a ready job is done on its first poll"),
        }
    }

    fn created(&self) -> usize {
        self.0.created.load(SeqCst)
    }

    fn completed(&self) -> usize {
        self.0.completed.load(SeqCst)
    }

    fn started(&self) -> usize {
        self.0.started.load(SeqCst)
    }

    /// Every job made was dropped exactly once, none is running, every value is gone.
    fn assert_clean(&self) {
        let c = &self.0;
        assert_eq!(c.running.load(SeqCst), 0, "a job is still running");
        assert_eq!(
            c.created.load(SeqCst),
            c.dropped.load(SeqCst),
            "a work future was leaked or dropped twice"
        );
        assert_eq!(c.live_values.load(SeqCst), 0, "a value was leaked");
    }
}

/// A value that says which job made it and counts its live clones.
struct Val {
    id: u32,
    probe: Probe,
}

impl Val {
    fn new(id: u32, probe: &Probe) -> Self {
        probe.0.live_values.fetch_add(1, SeqCst);
        Self { id, probe: probe.clone() }
    }
}

impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Val({})", self.id)
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        Self::new(self.id, &self.probe)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.probe.0.live_values.fetch_sub(1, SeqCst);
    }
}

/// The id of the job whose value a caller got.
fn id(outcome: &Outcome<Val>) -> u32 {
    outcome.value().id
}

/// A gate the work waits on: opened (and its waiter woken) by another thread.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: loom::future::AtomicWaker,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, SeqCst);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.open.load(SeqCst) {
            return Poll::Ready(());
        }
        self.waker.register_by_ref(cx.waker());
        if self.open.load(SeqCst) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// How a job behaves when polled.
#[derive(Clone)]
enum Plan {
    /// Done on its first poll.
    Ready,
    /// Pending (after waking itself) on the first poll, done on the second.
    Yield,
    /// Pending forever, never wakes.
    Stuck,
    /// Pending (after waking itself) on the first poll, panics on the second.
    YieldThenPanic,
    /// Panics when polled.
    Panic,
    /// Done once the gate is open.
    Gated(Arc<Gate>),
    /// Panics once the gate is open.
    GatedPanic(Arc<Gate>),
}

/// The work of the models. Small enough (three words) that a shared flight stores it in itself
/// rather than boxing it (it does so for work of up to four words, and adds one), so that the
/// shared-work models check that path; `loom_batch`'s models check boxed work.
struct Job {
    id: u32,
    plan: Box<Plan>,
    probe: Probe,
    started: bool,
    finished: bool,
}

const _: () = assert!(size_of::<Job>() <= 3 * size_of::<usize>(), "a shared flight stores a job in itself");

impl Future for Job {
    type Output = Val;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Val> {
        let this = &mut *self;
        let counts = &this.probe.0;
        if !this.started {
            this.started = true;
            counts.started.fetch_add(1, SeqCst);
            let running = counts.running.fetch_add(1, SeqCst) + 1;
            assert_eq!(running, 1, "two executions of one key overlap");
        }
        match &*this.plan {
            Plan::Ready => {}
            Plan::Yield => {
                *this.plan = Plan::Ready;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Plan::Stuck => return Poll::Pending,
            Plan::YieldThenPanic => {
                *this.plan = Plan::Panic;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Plan::Panic => std::panic::panic_any(DELIBERATE),
            Plan::Gated(gate) => {
                if gate.poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            Plan::GatedPanic(gate) => {
                if gate.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                std::panic::panic_any(DELIBERATE)
            }
        }
        this.finished = true;
        counts.running.fetch_sub(1, SeqCst);
        counts.completed.fetch_add(1, SeqCst);
        Poll::Ready(Val::new(this.id, &this.probe))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let counts = &self.probe.0;
        if self.started && !self.finished {
            counts.running.fetch_sub(1, SeqCst);
        }
        counts.dropped.fetch_add(1, SeqCst);
    }
}

/// Runs `f` on a new loom thread with clones of the group and the probe.
fn spawn_with<G: Send + Sync + 'static, T: Send + 'static>(
    group: &Arc<G>,
    probe: &Probe,
    f: impl FnOnce(Arc<G>, Probe) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (group, probe) = (group.clone(), probe.clone());
    thread::spawn(move || f(group, probe))
}

/// A call that joined (as leader or follower) and is left pending, polled once.
fn joined<F: Future>(fut: F) -> Pin<Box<F>> {
    let mut fut = Box::pin(fut);
    assert!(poll_once(fut.as_mut()).is_pending(), "the call finished on its first poll");
    fut
}

// ---------------------------------------------------------------------------------------------
// 1. Completion and joining.
// ---------------------------------------------------------------------------------------------

/// The leader completes while a follower joins. The follower either joined in time and gets the
/// leader's value (it is woken: a lost wake-up deadlocks `block_on`, which loom reports), or
/// came after the entry was removed and ran its own work. The `shared` flags agree.
#[test]
fn leader_completes_while_follower_joins() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Yield)));
        let follower = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(2, Plan::Ready))).expect("nothing panics")
        });
        let led = block_on(leader).expect("nothing panics");
        let followed = follower.join().unwrap();
        assert!(led.is_leader() && id(&led) == 1);
        if followed.is_leader() {
            assert_eq!(id(&followed), 2, "a leader got another flight's value");
            assert!(!led.is_shared() && !followed.is_shared());
            assert_eq!(probe.completed(), 2);
            seen.hit(1);
        } else {
            assert_eq!(id(&followed), 1, "a follower got another flight's value");
            assert!(led.is_shared() && followed.is_shared());
            assert_eq!(probe.completed(), 1);
            seen.hit(0);
        }
        drop((led, followed));
        finish_group(group);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// 2. A dropped leader.
// ---------------------------------------------------------------------------------------------

/// The leader is dropped while a follower joins: the follower is promoted (if it joined in
/// time) or leads a new flight; either way it runs its own work, only after the leader's work
/// was dropped, and gets its own value.
#[test]
fn leader_dropped_while_follower_joins() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Stuck)));
        let follower = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(2, Plan::Ready))).expect("nothing panics")
        });
        drop(leader);
        let followed = follower.join().unwrap();
        assert!(followed.is_leader() && !followed.is_shared() && id(&followed) == 2);
        let c = group.counters();
        assert_eq!(c.promotions, c.followers, "a follower of a vacated flight was not promoted");
        assert_eq!(c.leaders + c.promotions, 2);
        assert_eq!((probe.started(), probe.completed()), (2, 1));
        seen.hit(usize::from(c.promotions == 0));
        drop(followed);
        finish_group(group);
        probe.assert_clean();
    });
}

/// The leader is dropped while one follower leaves and another waits: the waiting follower
/// gets a value (its own when promoted, or the leaving one's when that one was promoted first
/// and finished within its single poll), and the entry is removed. The leaver's single poll may
/// also find the flight finished and take its value.
#[test]
fn leader_dropped_while_follower_leaves() {
    check(&[0, 1, 2, 3], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Stuck)));
        let stayer = joined(group.work(&KEY, probe.work(3, Plan::Ready)));
        let leaver = spawn_with(&group, &probe, |group, probe| {
            let mut leaver = Box::pin(group.work(&KEY, probe.work(2, Plan::Ready)));
            match poll_once(leaver.as_mut()) {
                Poll::Ready(result) => Some(id(&result.expect("nothing panics"))),
                Poll::Pending => None, // dropped here: the follower leaves
            }
        });
        drop(leader);
        let stayed = block_on(stayer).expect("nothing panics");
        let left = leaver.join().unwrap();
        match (id(&stayed), left) {
            (3, None) => {
                assert!(stayed.is_leader());
                assert_eq!(probe.completed(), 1);
                seen.hit(0);
            }
            (3, Some(2)) => {
                // The leaver came after the stayer's promoted work had finished.
                assert!(stayed.is_leader());
                assert_eq!(probe.completed(), 2);
                seen.hit(1);
            }
            (3, Some(3)) => {
                // The leaver joined in time and found the stayer's promoted work finished.
                assert!(stayed.is_leader() && stayed.is_shared());
                assert_eq!(probe.completed(), 1);
                seen.hit(3);
            }
            (2, Some(2)) => {
                assert!(!stayed.is_leader() && stayed.is_shared());
                assert_eq!(probe.completed(), 1);
                seen.hit(2);
            }
            other => panic!("impossible outcome (stayer's value, leaver's value): {other:?}"),
        }
        drop(stayed);
        finish_group(group);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Promotion.
// ---------------------------------------------------------------------------------------------

/// Two followers wait on a leader that is dropped; they race to be promoted. Exactly one wins
/// and runs its work; the other gets that value. (The second follower, on its own thread, may
/// also join only after the first one's promoted work finished: then it leads a new flight.)
#[test]
fn followers_race_for_promotion_after_leader_dropped() {
    check(&[0, 1, 2], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Stuck)));
        let first = joined(group.work(&KEY, probe.work(2, Plan::Ready)));
        let second = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(3, Plan::Ready))).expect("nothing panics")
        });
        drop(leader);
        let first = block_on(first).expect("nothing panics");
        let second = second.join().unwrap();
        let c = group.counters();
        if id(&first) == id(&second) {
            assert_eq!(
                u8::from(first.is_leader()) + u8::from(second.is_leader()),
                1,
                "not exactly one follower was promoted"
            );
            assert!(first.is_shared() && second.is_shared());
            assert_eq!((c.followers, c.promotions, probe.completed()), (2, 1, 1));
            seen.hit(if second.is_leader() { 1 } else { 0 });
        } else {
            // The second came after the first, promoted, had finished.
            assert!(first.is_leader() && id(&first) == 2 && second.is_leader() && id(&second) == 3);
            assert_eq!((c.leaders, c.followers, c.promotions, probe.completed()), (2, 1, 1, 2));
            seen.hit(2);
        }
        drop((first, second));
        finish_group(group);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Forget.
// ---------------------------------------------------------------------------------------------

/// `forget` races the old leader's completion; a new caller then leads a new flight. The old
/// leader, finishing later, must not remove the new flight's entry (identity, not key). The two
/// executions may overlap (that is what `forget` is for), so each has its own probe.
#[test]
fn forget_races_completion_old_leader_keeps_new_entry() {
    check(&[0, 1], |seen| {
        let (group, old, new) = (new_group(), Probe::default(), Probe::default());
        let done = Arc::new(LoomUsize::new(0));
        let leader = joined(group.work(&KEY, old.work(1, Plan::Yield)));
        let newcomer = {
            let done = done.clone();
            spawn_with(&group, &new, move |group, new| {
                let forgot = group.forget(&KEY);
                let call = joined(group.work(&KEY, new.work(2, Plan::Yield)));
                wait_for(&done, 1);
                assert_eq!(group.in_flight(), 1, "the old leader removed the new flight's entry");
                let got = block_on(call).expect("nothing panics");
                assert!(got.is_leader() && id(&got) == 2);
                forgot
            })
        };
        let led = block_on(leader).expect("nothing panics");
        assert!(led.is_leader() && id(&led) == 1);
        done.fetch_add(1, SeqCst);
        let forgot = newcomer.join().unwrap();
        assert_eq!(group.counters().forgets, u64::from(forgot));
        seen.hit(usize::from(forgot));
        drop(led);
        finish_group(group);
        old.assert_clean();
        new.assert_clean();
    });
}

/// `forget` races a dropped leader whose follower is promoted inside the forgotten flight: the
/// follower gets the old flight's value (its own work's), and the new flight's entry stays.
#[test]
fn forget_races_leader_drop_promotion_stays_in_old_flight() {
    check(&[0, 1], |seen| {
        let (group, old, new) = (new_group(), Probe::default(), Probe::default());
        let done = Arc::new(LoomUsize::new(0));
        let leader = joined(group.work(&KEY, old.work(1, Plan::Stuck)));
        let follower = joined(group.work(&KEY, old.work(2, Plan::Ready)));
        let newcomer = {
            let done = done.clone();
            spawn_with(&group, &new, move |group, new| {
                let forgot = group.forget(&KEY);
                let call = joined(group.work(&KEY, new.work(3, Plan::Yield)));
                wait_for(&done, 1);
                assert_eq!(group.in_flight(), 1, "the old flight removed the new flight's entry");
                (forgot, block_on(call).expect("nothing panics"))
            })
        };
        drop(leader);
        let promoted = block_on(follower).expect("nothing panics");
        assert!(promoted.is_leader() && id(&promoted) == 2);
        done.fetch_add(1, SeqCst);
        let (forgot, got) = newcomer.join().unwrap();
        assert!(got.is_leader() && id(&got) == 3);
        seen.hit(usize::from(forgot));
        drop((promoted, got));
        finish_group(group);
        old.assert_clean();
        new.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Panics.
// ---------------------------------------------------------------------------------------------

/// The leader's work panics while a follower joins: the panic is resumed in the leader, the
/// follower (if it joined in time) is released at once with `Aborted`, and the key is free.
#[test]
fn leader_panics_while_follower_joins() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::YieldThenPanic)));
        let follower =
            spawn_with(&group, &probe, |group, probe| block_on(group.work(&KEY, probe.work(2, Plan::Ready))));
        let panicked = catch_unwind(AssertUnwindSafe(|| block_on(leader)));
        let payload = panicked.expect_err("the work's panic is resumed in the leader");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&DELIBERATE));
        match follower.join().unwrap() {
            Err(aborted) => {
                assert_aborted_by_panic(&aborted);
                seen.hit(0);
            }
            Ok(got) => {
                assert!(got.is_leader() && id(&got) == 2);
                seen.hit(1);
            }
        }
        assert_eq!(group.counters().panics, 1);
        finish_group(group);
        probe.assert_clean();
    });
}

fn assert_aborted_by_panic(aborted: &Aborted) {
    assert!(aborted.is_panic(), "{aborted:?}");
    assert_eq!(aborted.message(), Some(DELIBERATE));
}

// ---------------------------------------------------------------------------------------------
// 6. The last waiter.
// ---------------------------------------------------------------------------------------------

/// The leader and its only follower both leave: the entry is removed by the last one out, and
/// every work future is dropped exactly once.
#[test]
fn last_waiter_leaves_entry_removed_once() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Stuck)));
        let follower = spawn_with(&group, &probe, |group, probe| {
            drop(joined(group.work(&KEY, probe.work(2, Plan::Stuck))));
        });
        drop(leader);
        follower.join().unwrap();
        assert_eq!(probe.completed(), 0);
        seen.hit(usize::from(group.counters().followers == 0));
        finish_group(group);
        probe.assert_clean();
    });
}

/// The same on `Single`, whose slot is a mutex rather than a map bucket.
#[test]
fn single_last_waiter_leaves_slot_cleared_once() {
    check(&[], |_| {
        let (single, probe) = (Arc::new(Single::<Val>::new()), Probe::default());
        let leader = joined(single.work(probe.work(1, Plan::Stuck)));
        let follower = {
            let (single, probe) = (single.clone(), probe.clone());
            thread::spawn(move || drop(joined(single.work(probe.work(2, Plan::Stuck)))))
        };
        drop(leader);
        follower.join().unwrap();
        assert!(single.is_idle());
        drop(single);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Shared work.
// ---------------------------------------------------------------------------------------------

/// Shared work: the leader drives the work once and then stalls (is never polled again). When
/// the work's waker fires, the flight wakes the follower, which drives the same work future to
/// its end; the stalled leader later finds the value.
#[test]
fn shared_stalled_driver_hands_over_to_waiter() {
    check(&[], |_| {
        let (group, probe, gate) = (new_shared_group(), Probe::default(), Arc::new(Gate::default()));
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Gated(gate.clone()))));
        let follower = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(2, Plan::Yield))).expect("nothing panics")
        });
        gate.open();
        let followed = follower.join().unwrap();
        assert!(!followed.is_leader() && followed.is_shared() && id(&followed) == 1);
        let led = block_on(leader).expect("nothing panics");
        assert!(led.is_leader() && led.is_shared() && id(&led) == 1);
        assert_eq!((probe.created(), probe.completed()), (1, 1));
        drop((led, followed));
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work: the leader drives the work once and is dropped. A follower that joined in time
/// drives the same work to its end (no restart); one that came after the leader, the last
/// caller, had cancelled the work leads a new flight.
#[test]
fn shared_dropped_driver_hands_over_to_waiter() {
    check(&[0, 1], |seen| {
        let (group, probe, gate) = (new_shared_group(), Probe::default(), Arc::new(Gate::default()));
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Gated(gate.clone()))));
        let follower = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(2, Plan::Yield))).expect("nothing panics")
        });
        drop(leader);
        gate.open();
        let followed = follower.join().unwrap();
        if id(&followed) == 1 {
            assert!(!followed.is_leader() && !followed.is_shared());
            assert_eq!((probe.created(), probe.completed()), (1, 1), "the work was restarted");
            seen.hit(0);
        } else {
            assert!(followed.is_leader() && id(&followed) == 2);
            assert_eq!((probe.created(), probe.completed()), (2, 1));
            seen.hit(1);
        }
        drop(followed);
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work: both callers leave while the work's waker fires. The last one out cancels the
/// work: it is dropped exactly once, never polled to its end, and the key is free.
#[test]
fn shared_last_waiter_cancel_drops_work_once() {
    check(&[0, 1], |seen| {
        let (group, probe, gate) = (new_shared_group(), Probe::default(), Arc::new(Gate::default()));
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Gated(gate.clone()))));
        let follower = {
            let gate = gate.clone();
            spawn_with(&group, &probe, move |group, probe| {
                let call = joined(group.work(&KEY, probe.work(2, Plan::Stuck)));
                gate.open();
                drop(call);
            })
        };
        drop(leader);
        follower.join().unwrap();
        assert_eq!(probe.completed(), 0);
        seen.hit(usize::from(group.counters().followers == 0));
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work: the work's waker fires (from another thread) while the driver may be polling
/// the work. A wake that lands during a poll makes the driver poll again; one that lands
/// between polls wakes the waiter. Either way nothing is lost (`block_on` would deadlock).
#[test]
fn shared_wake_during_poll_is_not_lost() {
    check(&[], |_| {
        let (group, probe, gate) = (new_shared_group(), Probe::default(), Arc::new(Gate::default()));
        let opener = {
            let gate = gate.clone();
            thread::spawn(move || gate.open())
        };
        let got = block_on(group.work(&KEY, probe.work(1, Plan::Gated(gate.clone()))));
        assert_eq!(id(&got.expect("nothing panics")), 1);
        opener.join().unwrap();
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work that yields (wakes itself and returns `Pending`) while two callers wait on it:
/// whichever polls it, it runs once and both get its value; neither misses the wake.
#[test]
fn shared_yielding_work_two_drivers_one_execution() {
    check_bounded(HEAVY_PREEMPTION_BOUND, &[0, 1], |seen| {
        let (group, probe) = (new_shared_group(), Probe::default());
        let other = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(2, Plan::Yield))).expect("nothing panics")
        });
        let mine = block_on(group.work(&KEY, probe.work(1, Plan::Yield))).expect("nothing panics");
        let other = other.join().unwrap();
        if id(&mine) == id(&other) {
            assert!(mine.is_leader() != other.is_leader() && mine.is_shared() && other.is_shared());
            assert_eq!(probe.completed(), 1);
            seen.hit(0);
        } else {
            assert!(mine.is_leader() && other.is_leader());
            assert_eq!(probe.completed(), 2);
            seen.hit(1);
        }
        drop((mine, other));
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work that yields (wakes itself while it is polled) under a driver that is dropped
/// right after that poll, while another caller waits: the pending wake must reach the waiter,
/// which then drives the work to its end (a lost wake leaves it asleep: loom reports the
/// deadlock). It found the hang fixed in 5334d4a (at bound 2, on the commit before the fix).
#[test]
fn shared_yielding_driver_dropped_waiter_still_woken() {
    check_bounded(HEAVY_PREEMPTION_BOUND, &[0, 1], |seen| {
        let (group, probe) = (new_shared_group(), Probe::default());
        let mut leader = Box::pin(group.work(&KEY, probe.work(1, Plan::Yield)));
        let other = spawn_with(&group, &probe, |group, probe| {
            block_on(group.work(&KEY, probe.work(2, Plan::Yield))).expect("nothing panics")
        });
        let _ = poll_once(leader.as_mut());
        drop(leader);
        let other = other.join().unwrap();
        seen.hit(usize::from(other.is_leader()));
        drop(other);
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work panics in the caller that drives it: the leader drove it once and stalled, the
/// work's waker has fired, and a follower that joins drives it and panics. The panic is resumed
/// in the follower, the stalled leader is released with `Aborted`, and the key is free.
///
/// The drivers do not race here: under loom, a panic that unwinds through a loom operation while
/// another loom thread holds a loom mutex poisons that mutex (loom's threads share one OS
/// thread, and so its panic count), which loom then reports as a failure of its own. Racing
/// drivers with a panicking work are left to the soak test.
#[test]
fn shared_work_panics_in_follower_driver_stalled_leader_released() {
    check(&[], |_| {
        let (group, probe, gate) = (new_shared_group(), Probe::default(), Arc::new(Gate::default()));
        let leader = joined(group.work(&KEY, probe.work(1, Plan::GatedPanic(gate.clone()))));
        gate.open();
        let follower = spawn_with(&group, &probe, |group, probe| {
            let call = group.work(&KEY, probe.work(2, Plan::Ready));
            let payload = catch_unwind(AssertUnwindSafe(|| block_on(call)))
                .expect_err("the work's panic is resumed in the caller driving it");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&DELIBERATE));
        });
        follower.join().unwrap();
        let aborted = block_on(leader).expect_err("the stalled leader is released");
        assert_aborted_by_panic(&aborted);
        assert_eq!((group.counters().panics, probe.created()), (1, 1));
        finish_group(group);
        probe.assert_clean();
    });
}

/// Shared work panics in the caller driving it while another caller arrives: the panicked work
/// future must be dropped before its key is free, so that a new execution cannot start while
/// the panicked one still holds what it holds (as for abandoned shared work, and as work mode
/// does: there the work is dropped before the flight is released).
///
/// Failed before the fix: `Handle::end` removed the entry, published, and only then dropped the
/// work it took, so the interleaving "driver's work panics; `end` removes the entry; the other
/// caller finds the key vacant, leads a new flight and polls its work; the driver drops the
/// panicked work" ran two executions of the key at once.
#[test]
fn shared_panicked_work_dropped_before_key_is_free() {
    check(&[0, 1, 2], |seen| {
        let (group, probe, gate) = (new_shared_group(), Probe::default(), Arc::new(Gate::default()));
        let leader = joined(group.work(&KEY, probe.work(1, Plan::GatedPanic(gate.clone()))));
        gate.open();
        let call = |group: &TestGroup<coalescer::mode::Shared>, probe: &Probe, n| {
            let call = group.work(&KEY, probe.work(n, Plan::Ready));
            catch_unwind(AssertUnwindSafe(|| block_on(call)))
        };
        let other = spawn_with(&group, &probe, move |group, probe| call(&group, &probe, 2));
        let mine = call(&group, &probe, 3);
        let other = other.join().unwrap();
        match (mine, other) {
            (Ok(Ok(late)), Err(_)) | (Err(_), Ok(Ok(late))) => {
                // A new flight: its work started after the panicked one was dropped (the probe
                // checks that no two executions overlap).
                assert!(late.is_leader() && (id(&late) == 2 || id(&late) == 3));
                seen.hit(0);
            }
            (Ok(Err(aborted)), Err(_)) => {
                assert_aborted_by_panic(&aborted);
                seen.hit(1);
            }
            (Err(_), Ok(Err(aborted))) => {
                assert_aborted_by_panic(&aborted);
                seen.hit(2);
            }
            (mine, other) => panic!(
                "the panic was not resumed in exactly one caller: {:?}, {:?}",
                mine.map_err(|_| "panicked"),
                other.map_err(|_| "panicked")
            ),
        }
        let aborted = block_on(leader).expect_err("the stalled leader is released");
        assert_aborted_by_panic(&aborted);
        finish_group(group);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// Blocking callers.
// ---------------------------------------------------------------------------------------------

/// A blocking follower parks on the flight's event until the async leader completes (a lost
/// wake-up leaves it parked: loom reports the deadlock).
#[test]
fn blocking_follower_parks_until_async_leader_completes() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Yield)));
        let follower = spawn_with(&group, &probe, |group, probe| {
            group.work_blocking(&KEY, probe.blocking(2)).expect("nothing panics")
        });
        let led = block_on(leader).expect("nothing panics");
        let followed = follower.join().unwrap();
        if followed.is_leader() {
            assert!(id(&followed) == 2 && !led.is_shared());
            seen.hit(1);
        } else {
            assert!(id(&followed) == 1 && led.is_shared() && followed.is_shared());
            seen.hit(0);
        }
        drop((led, followed));
        finish_group(group);
        probe.assert_clean();
    });
}

/// A parked blocking follower is woken and promoted when the async leader is dropped.
#[test]
fn blocking_follower_promoted_after_async_leader_dropped() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let leader = joined(group.work(&KEY, probe.work(1, Plan::Stuck)));
        let follower = spawn_with(&group, &probe, |group, probe| {
            group.work_blocking(&KEY, probe.blocking(2)).expect("nothing panics")
        });
        drop(leader);
        let followed = follower.join().unwrap();
        assert!(followed.is_leader() && id(&followed) == 2);
        seen.hit(usize::from(group.counters().promotions == 0));
        drop(followed);
        finish_group(group);
        probe.assert_clean();
    });
}

/// Two blocking callers on two threads: one runs the work, the other parks and gets its value.
#[test]
fn blocking_leader_and_blocking_follower() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let other = spawn_with(&group, &probe, |group, probe| {
            group.work_blocking(&KEY, probe.blocking(2)).expect("nothing panics")
        });
        let mine = group.work_blocking(&KEY, probe.blocking(1)).expect("nothing panics");
        let other = other.join().unwrap();
        if id(&mine) == id(&other) {
            assert!(mine.is_leader() != other.is_leader());
            seen.hit(0);
        } else {
            assert!(mine.is_leader() && other.is_leader());
            seen.hit(1);
        }
        drop((mine, other));
        finish_group(group);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// Detached work.
// ---------------------------------------------------------------------------------------------

/// A spawner that runs each task on a loom thread, keeping the join handles for the model.
#[derive(Clone, Default)]
struct LoomThreads(Arc<Mutex<Vec<thread::JoinHandle<()>>>>);

impl Spawn for LoomThreads {
    type Task = ();

    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) {
        let handle = thread::spawn(move || block_on(task));
        self.0.lock().unwrap().push(handle);
    }

    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

impl LoomThreads {
    fn join_all(&self) {
        while let Some(task) = self.0.lock().unwrap().pop() {
            task.join().unwrap();
        }
    }
}

/// Detached work: the leader's only caller leaves right after starting it; the spawned task
/// still runs the work to its end and frees the key, and a caller that arrives meanwhile joins
/// the running flight instead of starting the work again.
#[test]
fn detached_work_finishes_after_its_caller_leaves() {
    check_bounded(HEAVY_PREEMPTION_BOUND, &[0, 1], |seen| {
        let tasks = LoomThreads::default();
        let (group, probe) = (new_detached_group(tasks.clone()), Probe::default());
        let mut leader = Box::pin(group.work(&KEY, probe.work(1, Plan::Ready)));
        let _ = poll_once(leader.as_mut()); // joins, spawns the task (which may even finish)
        drop(leader);
        let late = block_on(group.work(&KEY, probe.work(2, Plan::Ready))).expect("nothing panics");
        tasks.join_all();
        assert!(probe.completed() >= 1, "the abandoned detached work did not finish");
        if id(&late) == 1 {
            assert!(!late.is_leader());
            assert_eq!(probe.created(), 1);
            seen.hit(0);
        } else {
            assert!(late.is_leader() && id(&late) == 2);
            seen.hit(1);
        }
        drop(late);
        finish_group(group);
        probe.assert_clean();
    });
}

/// Detached work: the leader waits for its task in the flight's waker slot (not on the event,
/// so that it allocates no listener). Whatever the order of its registration and the task's
/// end, it is woken and reads the work's value: a check-then-register order loses the wake when
/// the task ends in between, and the leader sleeps for ever (loom reports the deadlock).
#[test]
fn detached_leader_is_woken_by_its_task_through_the_slot() {
    check(&[0, 1], |seen| {
        let tasks = LoomThreads::default();
        let (group, probe) = (new_detached_group(tasks.clone()), Probe::default());
        let mut leader = Box::pin(group.work(&KEY, probe.work(1, Plan::Yield)));
        // The first poll joins and spawns; the task may end before, while or after the leader
        // registers (the no-op waker of this poll, then `block_on`'s).
        let got = match poll_once(leader.as_mut()) {
            Poll::Ready(got) => {
                seen.hit(0);
                got
            }
            Poll::Pending => {
                seen.hit(1);
                block_on(leader.as_mut())
            }
        };
        drop(leader);
        let got = got.expect("nothing panics");
        assert!(got.is_leader() && id(&got) == 1);
        tasks.join_all();
        assert_eq!((probe.created(), probe.completed()), (1, 1));
        drop(got);
        finish_group(group);
        probe.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// 8. The races of issue 11: promotion under concurrent joins and leaves, two finishers.
// ---------------------------------------------------------------------------------------------

/// Three actors race on a work-mode flight: its leader is dropped (vacating the flight), its one
/// follower is dropped (a leave, which notifies nobody), each on a thread of its own, and a new
/// caller joins (before, between or after the two drops). The joiner must end up running its
/// own work: promoted into the vacated flight, or leading a new one once the follower's leave
/// emptied it. It must never sleep with nobody left to wake it: a promotion that gives up when
/// its compare-and-swap fails because the waiter count changed, though the flight is still
/// vacant, waits for a notification that never comes (loom reports the deadlock).
///
/// On `Single`, whose slot is a mutex: the flight protocol is the same as a `Group`'s, and the
/// state space small enough for three threads at bound 3 (a `Group`'s scc map under loom did
/// not finish in 6 minutes). Failed on the commit before the fix of issue 11's defect 3 (a single
/// compare-and-swap): "deadlock; threads = [(Id(0), Blocked), (Id(1), Terminated), (Id(2),
/// Terminated)]", the joiner asleep after both drops.
#[test]
fn promotion_survives_concurrent_join_and_leave() {
    check(&[0, 1], |seen| {
        let (single, probe) = (Arc::new(Single::<Val>::new()), Probe::default());
        // SAFETY: `single` outlives `leader` and `follower`, which are dropped on threads joined
        // below, before it is dropped.
        let shared: &'static Single<Val> = unsafe { &*Arc::as_ptr(&single) };
        let leader = joined(shared.work(probe.work(1, Plan::Stuck)));
        let follower = joined(shared.work(probe.work(2, Plan::Ready)));
        let dropping = thread::spawn(move || drop(leader));
        let leaving = thread::spawn(move || drop(follower));
        let got = block_on(single.work(probe.work(3, Plan::Ready))).expect("nothing panics");
        dropping.join().unwrap();
        leaving.join().unwrap();
        assert!(got.is_leader() && id(&got) == 3, "the joiner did not run its own work");
        let c = single.counters();
        assert_eq!(c.leaders + c.promotions, 2, "{c:?}");
        seen.hit(usize::from(c.promotions == 0));
        drop(got);
        assert!(single.is_idle());
        drop(single);
        probe.assert_clean();
    });
}

/// A `Spawn` that hands the task to a loom thread and then panics (a safe impl may do this).
#[derive(Clone, Default)]
struct HandOverThenPanic(LoomThreads);

impl Spawn for HandOverThenPanic {
    type Task = ();

    fn spawn<Fut: Future<Output = ()> + Send + 'static>(&self, task: Fut) {
        self.0.spawn(task);
        std::panic::panic_any(DELIBERATE)
    }

    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

/// Detached work whose `Spawn` panics after it handed the task over: the leader's failure path
/// (the spawn panicked) and the task's completion (the work ran) are two would-be finishers of
/// one flight. Exactly one of them ends it: the result is written once (a second write while a
/// follower clones the first is a data race, which loom reports), the leader resumes the spawn's
/// panic, a follower that joined in time gets the work's value or `Aborted` (a panic), never a
/// hang, and the key is free once the task is done.
///
/// Failed on the commit before the fix of issue 11's defect 4 ("is it finished?" and the
/// publish were two steps): "Causality violation: Concurrent write accesses to `UnsafeCell`" in
/// `Flight::publish`, from the task's completion racing the leader's failure path. At bound 2:
/// about 790,000 executions, 90 s on two cores.
#[test]
fn detached_two_would_be_finishers_publish_once() {
    check_bounded(HEAVY_PREEMPTION_BOUND, &[0, 1, 2], |seen| {
        // Two probes: when the leader's failure ends the flight first, the key is free while the
        // spawned task still runs the detached work, and the follower may lead a flight of its
        // own meanwhile (the contract allows that overlap; what it forbids is a second result).
        // The follower is a blocking caller: the only other kind of caller a detached group has
        // (its async callers would spawn with the panicking spawner too).
        let spawner = HandOverThenPanic::default();
        let (group, detached, mine) =
            (new_detached_group(spawner.clone()), Probe::default(), Probe::default());
        let follower = spawn_with(&group, &mine, |group, mine| group.work_blocking(&KEY, mine.blocking(2)));
        let call = group.work(&KEY, detached.work(1, Plan::Yield));
        let led = catch_unwind(AssertUnwindSafe(|| block_on(call)));
        let followed = follower.join().unwrap();
        spawner.0.join_all();
        let payload = match led {
            Err(payload) => payload,
            Ok(led) => {
                // The other caller led first, and the detached call joined its flight: no spawn
                // ran (not the race this model is about, but a legal interleaving).
                let (led, followed) = (led.expect("nothing panics"), followed.expect("nothing panics"));
                assert!(!led.is_leader() && id(&led) == 2 && followed.is_leader() && id(&followed) == 2);
                assert_eq!(detached.created(), 0);
                seen.hit(3);
                drop((led, followed));
                finish_group(group);
                detached.assert_clean();
                mine.assert_clean();
                return;
            }
        };
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&DELIBERATE),
            "the spawn's panic is resumed in the leader"
        );
        match followed {
            Ok(got) if id(&got) == 1 => {
                assert!(!got.is_leader(), "the follower of the detached flight led it");
                seen.hit(0);
            }
            Ok(got) => {
                // Came after the detached flight had ended: led a flight of its own.
                assert!(got.is_leader() && id(&got) == 2);
                seen.hit(2);
            }
            Err(aborted) => {
                assert_aborted_by_panic(&aborted);
                seen.hit(1);
            }
        }
        assert_eq!(detached.completed(), 1, "the handed-over task did not run the work to its end");
        finish_group(group);
        detached.assert_clean();
        mine.assert_clean();
    });
}

// ---------------------------------------------------------------------------------------------
// Bounds: a group with at most one key in flight (`max_in_flight(1, WhenFull::Reject)`).
// ---------------------------------------------------------------------------------------------

fn new_bounded_group() -> Arc<TestGroup> {
    Arc::new(Group::with_capacity_and_hasher(1, Fixed::default()).max_in_flight(1, WhenFull::Reject))
}

/// A call for a new key, made on a loom thread: `Some(id)` if it ran, `None` if refused.
fn new_key(group: &Arc<TestGroup>, probe: &Probe, key: u8, id: u32) -> thread::JoinHandle<Option<u32>> {
    spawn_with(group, probe, move |group, probe| {
        match block_on(group.work(&key, probe.work(id, Plan::Ready))) {
            Ok(outcome) => Some(self::id(&outcome)),
            Err(aborted) => {
                assert!(aborted.is_full(), "only the bound may refuse: {aborted}");
                None
            }
        }
    })
}

/// While one key is in flight a call for another key is refused; once that flight has ended
/// its permit is back (exactly once): a later key is admitted. Never two keys in flight.
#[test]
fn bound_admits_a_new_key_only_once_the_flight_in_the_air_ended() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_bounded_group(), Probe::default());
        let first = joined(group.work(&KEY, probe.work(1, Plan::Yield)));
        let other = new_key(&group, &probe, KEY + 1, 2);
        let led = block_on(first).expect("nothing panics");
        assert_eq!(id(&led), 1);
        match other.join().unwrap() {
            None => seen.hit(0),
            Some(id) => {
                assert_eq!(id, 2);
                seen.hit(1);
            }
        }
        assert_eq!(group.counters().overflows, u64::from(probe.completed() == 1));
        // Every permit is back: a third key is admitted.
        let third = block_on(group.work(&(KEY + 2), probe.work(3, Plan::Ready))).expect("admitted");
        assert_eq!(id(&third), 3);
        drop((led, third));
        finish_group(group);
        probe.assert_clean();
    });
}

/// `forget` detaches the flight in the air while it ends: a forgotten flight still holds its
/// permit until it ends, and the permit comes back exactly once, whichever comes first.
#[test]
fn bound_permit_comes_back_once_when_forget_races_the_end() {
    check(&[0, 1], |seen| {
        let (group, probe) = (new_bounded_group(), Probe::default());
        let first = joined(group.work(&KEY, probe.work(1, Plan::Yield)));
        let forgetter = {
            let group = group.clone();
            thread::spawn(move || group.forget(&KEY))
        };
        let led = block_on(first).expect("nothing panics");
        if forgetter.join().unwrap() {
            seen.hit(0); // forgotten while in the air
        } else {
            seen.hit(1); // it had ended already
        }
        let second = block_on(group.work(&(KEY + 1), probe.work(2, Plan::Ready))).expect("admitted");
        assert_eq!((id(&led), id(&second)), (1, 2));
        assert_eq!(group.counters().overflows, 0);
        drop((led, second));
        finish_group(group);
        probe.assert_clean();
    });
}
