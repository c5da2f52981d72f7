//! Allocations per call, counted by a global allocator, for every async competitor: a leader
//! with nobody following, and a round of one leader and [`FOLLOWERS`] followers, with each
//! allocation charged to the caller whose poll (or drop) made it.
//!
//! The futures are polled by hand on this one thread with a no-op waker, so that the
//! executor's own allocations (spawning, wakers) are not counted; the work is a future held
//! closed by a gate until every follower has joined. Between polls of an unfinished call a
//! current-thread tokio runtime (entered for the whole run) runs what the call spawned: the
//! detached mode's task, whose allocations count for the call whose poll was waiting on it. Run it with `ci/bench.sh` (or
//! `cargo bench -p coalescer-benches --bench allocs`); `COALESCER_BENCH_QUICK=1` runs fewer
//! rounds.
//!
//! The `String` rows give every call a `String` key made before the counted section (the
//! caller's own allocation is not counted): what they add over the `u64` rows is what the
//! competitor allocates for the key (a clone stored in its map, or more).

use coalescer_benches::counting::{Counting, counted};
use coalescer_benches::scenario::{VALUE, leak};
use coalescer_benches::{BenchKey, CAPACITY, Coalesce, Visit, VisitAny, each_async, each_string};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use tokio::runtime::Runtime;

/// Followers per round.
const FOLLOWERS: usize = 100;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn poll<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Polls `fut` until it is ready (everything it waits for is already released), letting `rt`
/// run spawned tasks between polls.
fn finish<F: Future + ?Sized>(rt: &Runtime, mut fut: Pin<&mut F>) -> F::Output {
    for _ in 0..1_000 {
        if let Poll::Ready(output) = poll(fut.as_mut()) {
            return output;
        }
        rt.block_on(tokio::task::yield_now());
    }
    panic!("a call that nothing holds up did not finish");
}

/// The round's work: pending until the gate opens, which wakes the last waker that polled it.
struct Gate {
    open: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn work(&'static self) -> impl Future<Output = u64> + Send + 'static {
        std::future::poll_fn(move |cx| {
            if self.open.load(Relaxed) {
                return Poll::Ready(VALUE);
            }
            *self.waker.lock().expect("no panic holds it") = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn open(&self) {
        self.open.store(true, Relaxed);
        if let Some(waker) = self.waker.lock().expect("no panic holds it").take() {
            waker.wake();
        }
    }

    fn close(&self) {
        self.open.store(false, Relaxed);
    }
}

/// Allocations of one competitor.
#[derive(Default)]
struct Row {
    name: String,
    /// Per call of a leader with no followers (and instant work).
    alone: f64,
    /// Per round, in the polls and drop of the round's leader.
    leader: f64,
    /// Per follower, in its polls and drop.
    follower: f64,
}

struct Measure {
    rt: Runtime,
    calls: u64,
    rounds: u64,
    gate: &'static Gate,
    next_key: u64,
    rows: Vec<Row>,
}

impl Measure {
    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn alone<C: Coalesce>(&mut self, group: &C) -> f64 {
        let mut total = 0;
        for _ in 0..self.calls {
            let key = C::Key::fresh(self.key());
            let reset = C::Key::fresh(self.next_key);
            let rt = &self.rt;
            let (value, n) = counted(|| {
                let value = finish(rt, pin!(group.call(key, || async { VALUE })));
                finish(rt, pin!(group.reset(&reset)));
                value
            });
            assert_eq!(value, VALUE);
            total += n;
        }
        total as f64 / self.calls as f64
    }

    /// One round; returns the allocations of the leader and of all the followers.
    fn round<C: Coalesce>(&mut self, group: &C) -> (u64, u64) {
        let (key, gate, rt) = (C::Key::fresh(self.key()), self.gate, &self.rt);
        gate.close();
        // Created (and boxed) outside the counted sections: every call joins on first poll.
        let mut leader = Box::pin(group.call(key.clone(), move || gate.work()));
        let mut followers: Vec<_> =
            (0..FOLLOWERS).map(|_| Box::pin(group.call(key.clone(), move || gate.work()))).collect();
        let (mut lead, mut follow) = (0, 0);
        let (first, n) = counted(|| poll(leader.as_mut()));
        assert!(first.is_pending(), "{}: the leader waits for the gate", C::NAME);
        lead += n;
        for f in &mut followers {
            let (first, n) = counted(|| poll(f.as_mut()));
            assert!(first.is_pending(), "{}: a follower waits for the leader", C::NAME);
            follow += n;
        }
        gate.open();
        let (value, n) = counted(|| finish(rt, leader.as_mut()));
        assert_eq!(value, VALUE);
        lead += n;
        for f in &mut followers {
            let (value, n) = counted(|| finish(rt, f.as_mut()));
            assert_eq!(value, VALUE);
            follow += n;
        }
        lead += counted(|| drop(leader)).1;
        follow += counted(|| drop(followers)).1;
        lead += counted(|| finish(rt, pin!(group.reset(&key)))).1;
        (lead, follow)
    }
}

impl Visit for Measure {
    fn visit<C: Coalesce<Key = u64>>(&mut self) {
        VisitAny::visit::<C>(self);
    }
}

impl VisitAny for Measure {
    fn visit<C: Coalesce>(&mut self) {
        let group = C::with_capacity(CAPACITY);
        // Warm up: first-use allocations (thread-locals, epoch collectors) are not per call.
        self.alone(&group);
        self.round(&group);
        let alone = self.alone(&group);
        let (mut lead, mut follow) = (0, 0);
        for _ in 0..self.rounds {
            let (l, f) = self.round(&group);
            lead += l;
            follow += f;
        }
        let keys = <C::Key as BenchKey>::LABEL;
        self.rows.push(Row {
            name: if keys == "u64" { C::NAME.to_string() } else { format!("{}, {keys} keys", C::NAME) },
            alone,
            leader: lead as f64 / self.rounds as f64,
            follower: follow as f64 / (self.rounds as f64 * FOLLOWERS as f64),
        });
    }
}

fn main() {
    let quick = std::env::var_os("COALESCER_BENCH_QUICK").is_some_and(|v| v != "0");
    // `cargo test --benches` runs this binary too; keep that brief.
    let brief = quick || std::env::args().all(|a| a != "--bench");
    let mut measure = Measure {
        rt: tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime"),
        calls: if brief { 100 } else { 10_000 },
        rounds: if brief { 3 } else { 200 },
        gate: leak(Gate { open: AtomicBool::new(false), waker: Mutex::new(None) }),
        next_key: 1 << 40,
        rows: Vec::new(),
    };
    // Detached work is spawned on the current runtime.
    let handle = measure.rt.handle().clone();
    let _context = handle.enter();
    each_async(&mut measure);
    each_string(&mut measure);
    println!(
        "allocations per call ({} calls alone; {} rounds of 1 leader + {FOLLOWERS} followers)\n",
        measure.calls, measure.rounds
    );
    println!("| competitor | leader, no followers | leader of a round | per follower |");
    println!("|---|---:|---:|---:|");
    for row in &measure.rows {
        println!("| {} | {:.2} | {:.2} | {:.2} |", row.name, row.alone, row.leader, row.follower);
    }
}
