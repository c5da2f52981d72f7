//! Loom models of batches (`Group::work_batch`): a batch's parts share one fetch, any waiter of
//! any key drives it, and the last part out drops it.
//!
//! Built and run by `ci/loom.sh` with the flight models of `loom.rs` (`--cfg loom`, release
//! mode, a target directory of its own); `ci/loom.sh batch` runs these alone. Put together as
//! `loom.rs` explains: a fixed hasher, callers that must hold a role polled once by hand before
//! the racing threads start, the others run under `loom::future::block_on` (a lost wake-up is a
//! deadlock that loom reports), flights and batches in loom's `Arc` (a leak fails the model),
//! and each model checks that its explorations reached every branch it is named after.
//!
//! The fetch is a [`Fetch`]: it checks on its first poll that no other execution of any of its
//! keys is running (a loom atomic per key, so that loom orders one execution's start against
//! another's end), and counts its creations, completions and drops.
#![cfg(loom)]

mod loom_support;

use coalescer::{Group, Outcome};
use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, AtomicUsize as LoomUsize};
use loom::thread;
use loom_support::Seen;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};

/// The preemption bound of the models (`LOOM_MAX_PREEMPTIONS` overrides it): three preemptions
/// interleave a part's poll, another part's drop and a wake in any order.
const PREEMPTION_BOUND: usize = 3;

/// The bound of the model whose two threads both join and lead (two flights each, the scc map
/// and the batch's own state word and lock): about 325 000 executions and 50 s at bound 2.
const HEAVY_PREEMPTION_BOUND: usize = 2;

type Fixed = BuildHasherDefault<DefaultHasher>;
type TestGroup = Group<u8, Option<u32>, Fixed>;

/// What a batch fetch returns for `key`; a single call's work returns `SINGLE + key`.
const FETCHED: u32 = 100;
const SINGLE: u32 = 200;

/// Explores `f`, then checks that the explorations reached every branch in `expected`.
fn check(expected: &[usize], f: impl Fn(&Seen) + Sync + Send + 'static) {
    check_bounded(PREEMPTION_BOUND, expected, f);
}

/// [`check`] with another default preemption bound.
fn check_bounded(bound: usize, expected: &[usize], f: impl Fn(&Seen) + Sync + Send + 'static) {
    loom_support::explore(bound, expected, f);
}

fn new_group() -> Arc<TestGroup> {
    Arc::new(Group::with_capacity_and_hasher(2, Fixed::default()))
}

fn finish_group(group: Arc<TestGroup>) {
    assert!(group.is_idle(), "an entry was left behind: {group:?}");
    drop(Arc::try_unwrap(group).expect("a thread still holds the group"));
}

fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// A call that joined and is left pending, polled once.
fn joined<F: Future>(fut: F) -> Pin<Box<F>> {
    let mut fut = Box::pin(fut);
    assert!(poll_once(fut.as_mut()).is_pending(), "the call finished on its first poll");
    fut
}

/// A gate the fetch waits on, opened (and its waiter woken) by another thread.
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

/// What the executions of the keys (batch fetches and single calls' work) count.
#[derive(Default)]
struct Counts {
    running: [LoomUsize; 3],
    created: AtomicUsize,
    completed: AtomicUsize,
    dropped: AtomicUsize,
}

#[derive(Clone, Default)]
struct Probe(Arc<Counts>);

impl Probe {
    /// A batch fetch closure: its future waits for `gate` (if any), then returns every key.
    fn fetch(&self, gate: Option<Arc<Gate>>) -> impl Fn(Vec<u8>) -> Exec + Send + Sync + 'static {
        let probe = self.clone();
        move |keys| probe.exec(keys, gate.clone())
    }

    /// A single call's work for `key`.
    fn single(&self, key: u8) -> impl FnOnce() -> SingleExec + Send + 'static {
        let probe = self.clone();
        move || SingleExec(probe.exec(vec![key], None))
    }

    fn exec(&self, keys: Vec<u8>, gate: Option<Arc<Gate>>) -> Exec {
        self.0.created.fetch_add(1, SeqCst);
        Exec { keys, gate, probe: self.clone(), started: false, finished: false }
    }

    fn assert_clean(&self) {
        let c = &self.0;
        assert!(c.running.iter().all(|r| r.load(SeqCst) == 0), "an execution is still running");
        assert_eq!(c.created.load(SeqCst), c.dropped.load(SeqCst), "a fetch was leaked or dropped twice");
    }
}

/// One execution (a batch's fetch, or a single call's work) of some keys.
struct Exec {
    keys: Vec<u8>,
    gate: Option<Arc<Gate>>,
    probe: Probe,
    started: bool,
    finished: bool,
}

impl Future for Exec {
    type Output = Vec<(u8, u32)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let counts = &this.probe.0;
        if !this.started {
            this.started = true;
            for &key in &this.keys {
                let running = counts.running[usize::from(key)].fetch_add(1, SeqCst) + 1;
                assert_eq!(running, 1, "two executions of key {key} overlap");
            }
        }
        if let Some(gate) = &this.gate {
            if gate.poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        this.finished = true;
        for &key in &this.keys {
            counts.running[usize::from(key)].fetch_sub(1, SeqCst);
        }
        counts.completed.fetch_add(1, SeqCst);
        Poll::Ready(this.keys.iter().map(|&k| (k, FETCHED + u32::from(k))).collect())
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        let counts = &self.probe.0;
        if self.started && !self.finished {
            for &key in &self.keys {
                counts.running[usize::from(key)].fetch_sub(1, SeqCst);
            }
        }
        counts.dropped.fetch_add(1, SeqCst);
    }
}

/// A single call's work: an [`Exec`] of one key, valued `SINGLE + key`.
struct SingleExec(Exec);

impl Future for SingleExec {
    type Output = Option<u32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
        Pin::new(&mut self.0).poll(cx).map(|rows| rows.first().map(|&(k, _)| SINGLE + u32::from(k)))
    }
}

fn value(outcome: &Outcome<Option<u32>>) -> u32 {
    outcome.value().expect("every key is returned")
}

/// A single call for key 2 races a batch of {1, 2} that claims key 2. Whoever joins key 2
/// first leads it and the other follows (the single call joined the batch's flight, or the batch
/// joined the single call's): key 2 runs once and both callers get the same value. Or the single
/// call comes after the batch ended and runs on its own, never overlapping the batch's fetch.
#[test]
fn single_call_joins_a_key_while_a_batch_claims_it() {
    check_bounded(HEAVY_PREEMPTION_BOUND, &[0, 1, 2], |seen| {
        let (group, probe) = (new_group(), Probe::default());
        let single = {
            let (group, probe) = (group.clone(), probe.clone());
            thread::spawn(move || block_on(group.work(&2, probe.single(2))).expect("nothing panics"))
        };
        let batch = block_on(group.work_batch([1, 2], probe.fetch(None)));
        let single = single.join().unwrap();
        let batch2 = batch[1].as_ref().expect("nothing panics");
        assert_eq!(value(batch[0].as_ref().unwrap()), FETCHED + 1);
        match (batch2.is_leader(), single.is_leader()) {
            (true, false) => {
                assert_eq!((value(batch2), value(&single)), (FETCHED + 2, FETCHED + 2));
                assert_eq!(probe.0.created.load(SeqCst), 1, "key 2 was fetched with the batch only");
                seen.hit(0);
            }
            (false, true) if value(batch2) == SINGLE + 2 => {
                assert_eq!(value(&single), SINGLE + 2);
                assert_eq!(probe.0.created.load(SeqCst), 2, "the batch fetched key 1 alone");
                seen.hit(1);
            }
            (true, true) => {
                // One after the other: each ran its own execution, never at once (checked by
                // the fetch itself).
                assert_eq!((value(batch2), value(&single)), (FETCHED + 2, SINGLE + 2));
                seen.hit(2);
            }
            other => panic!("an impossible pair of roles for key 2: {other:?}"),
        }
        drop(batch);
        finish_group(group);
        probe.assert_clean();
    });
}

/// The caller that made a batch of {1, 2} (and first polled its fetch) leaves while a single
/// caller of key 2, on another thread, drives the fetch to its end. Key 1 had no other waiter:
/// its part is dropped, maybe while the fetch is being polled or as it completes. The single
/// caller joined the batch and gets key 2's value from the batch's fetch (which ran once and was
/// dropped once), or came after the batch caller had abandoned key 2 and ran its own work. Both
/// keys are free.
#[test]
fn last_waiter_of_a_key_leaves_while_another_keys_waiter_drives_the_batch() {
    check(&[0, 1], |seen| {
        let (group, probe, gate) = (new_group(), Probe::default(), Arc::new(Gate::default()));
        let batch = joined(group.work_batch([1, 2], probe.fetch(Some(gate.clone()))));
        let driver = {
            let (group, probe) = (group.clone(), probe.clone());
            thread::spawn(move || block_on(group.work(&2, probe.single(2))).expect("nothing panics"))
        };
        gate.open();
        drop(batch);
        let single = driver.join().unwrap();
        if single.is_leader() {
            assert_eq!(value(&single), SINGLE + 2);
            seen.hit(0);
        } else {
            assert_eq!(value(&single), FETCHED + 2);
            assert_eq!(probe.0.completed.load(SeqCst), 1, "the batch's fetch ran to its end once");
            seen.hit(1);
        }
        finish_group(group);
        probe.assert_clean();
    });
}

/// Every waiter of every key of a batch leaves at once (the batch caller on one thread, a
/// single caller of key 2 that joined it on another), while the fetch is pending. Exactly one
/// of them is the last part out and drops the fetch, once; both keys are free.
#[test]
fn all_waiters_of_a_batch_leave_at_once_and_the_fetch_is_dropped_once() {
    check(&[0, 1], |seen| {
        let (group, probe, gate) = (new_group(), Probe::default(), Arc::new(Gate::default()));
        let batch = joined(group.work_batch([1, 2], probe.fetch(Some(gate.clone()))));
        let joined_2 = Arc::new(LoomUsize::new(0));
        let leaver = {
            let (group, probe, joined_2) = (group.clone(), probe.clone(), joined_2.clone());
            thread::spawn(move || {
                let single = joined(group.work(&2, probe.single(2)));
                joined_2.store(1, SeqCst);
                drop(single);
                probe.0.dropped.load(SeqCst) == 1
            })
        };
        while joined_2.load(SeqCst) == 0 {
            thread::yield_now();
        }
        drop(batch);
        let dropped_by_single = leaver.join().unwrap();
        assert_eq!(group.counters().followers, 1, "the single call joined the batch");
        assert_eq!((probe.0.completed.load(SeqCst), probe.0.dropped.load(SeqCst)), (0, 1));
        seen.hit(usize::from(dropped_by_single));
        finish_group(group);
        probe.assert_clean();
    });
}

/// A batcher's window that closes when its gate opens.
#[derive(Clone)]
struct GateWindow(Arc<Gate>);

/// The timer of a [`GateWindow`].
struct GateTimer(Arc<Gate>);

impl Future for GateTimer {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll(cx)
    }
}

impl coalescer::Window for GateWindow {
    type Timer = GateTimer;
    fn start(&self) -> GateTimer {
        GateTimer(self.0.clone())
    }
}

/// A batcher's load of key 1 opened a batch and is dropped as its window closes, while a load
/// of key 2 on another thread joins that batch (or, coming after the batch was abandoned, opens
/// one of its own) and then drives it: the fetch runs with key 2, and with key 1 only if its
/// load was still there when the window closed. Nobody fails, each fetch is
/// dropped once, both keys are free.
#[test]
fn batcher_load_that_opened_the_window_leaves_as_another_load_joins_it() {
    check(&[0, 1], |seen| {
        let (probe, gate) = (Probe::default(), Arc::new(Gate::default()));
        let fetched = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fetch = {
            let (probe, fetched) = (probe.clone(), fetched.clone());
            move |keys: Vec<u8>| {
                fetched.lock().unwrap().push(keys.clone());
                probe.exec(keys, None)
            }
        };
        let batcher = Arc::new(
            coalescer::Batcher::new(fetch)
                .with_window(GateWindow(gate.clone()))
                .with_group(Group::with_capacity_and_hasher(2, Fixed::default())),
        );
        let opener = joined(batcher.load(1));
        let other = {
            let batcher = batcher.clone();
            thread::spawn(move || block_on(batcher.load(2)).expect("nothing panics"))
        };
        gate.open();
        drop(opener);
        let other = other.join().unwrap();
        assert_eq!(value(&other), FETCHED + 2);
        let fetched = fetched.lock().unwrap().clone();
        assert_eq!(fetched.len(), 1, "one fetch: the abandoned window never fetched");
        seen.hit(usize::from(fetched[0].contains(&1)));
        assert!(batcher.group().is_idle());
        drop(batcher);
        probe.assert_clean();
    });
}
