//! The fan-out of one flight to W waiters, in instructions per waiter: what the time-based S2/S3
//! figures try to show, counted instead of timed, so that it holds on a busy machine.
//!
//! ```text
//! fanout COMPETITOR WAITERS      (COMPETITOR: a name of `instructions --list`, or "floor")
//! fanout --list                  the competitors it runs (those that need no runtime driving)
//! ```
//!
//! One thread, a small executor of its own (a run queue of task indices, one waker per task,
//! no runtime): W calls with one key are polled once each, so that every one has joined and the
//! leader's work waits on a gate. Then [`fan_out_phase`] opens the gate and runs the queue until
//! every call has returned: the leader's work ends, its flight is published, every waiter is
//! woken, polled and handed the value. `ci/instructions.sh` counts the instructions inside
//! [`fan_out_phase`] alone (`valgrind --tool=callgrind --toggle-collect=...fan_out_phase*`),
//! divided by W - 1.
//!
//! The floor runs the same executor with a bare `event_listener::Event`: the first task waits
//! for the gate and then opens a second flag whose event the others are parked on, and each
//! returns a copy of the value. No coalescer can hand a value to W waiters for less.
//!
//! Competitors that need a runtime to drive their tasks (detached work, moka) are not run.

use coalescer_benches::scenario::Gate;
use coalescer_benches::{BenchKey, Coalesce, VisitAny, each_variant};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The value every caller gets.
const VALUE: u64 = 7;

/// One task of the executor: its waker queues its index once until it is polled again.
struct Task {
    index: usize,
    queued: AtomicBool,
    queue: Arc<Mutex<Vec<usize>>>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.lock().expect("the queue").push(self.index);
        }
    }
}

type Call<'a> = Pin<Box<dyn Future<Output = u64> + 'a>>;

/// The calls, their wakers, and the run queue. Nothing is allocated or freed while it runs
/// (the queue and its spare are sized for every task; a call that returned is kept, done,
/// until the executor is dropped), so that the count is the calls' own work.
struct Executor<'a> {
    calls: Vec<Call<'a>>,
    done: Vec<bool>,
    tasks: Vec<Arc<Task>>,
    wakers: Vec<Waker>,
    queue: Arc<Mutex<Vec<usize>>>,
    spare: Vec<usize>,
    returned: usize,
}

impl<'a> Executor<'a> {
    fn new(calls: Vec<Call<'a>>) -> Self {
        let queue = Arc::new(Mutex::new(Vec::with_capacity(calls.len())));
        let tasks: Vec<Arc<Task>> = (0..calls.len())
            .map(|index| Arc::new(Task { index, queued: AtomicBool::new(false), queue: queue.clone() }))
            .collect();
        let wakers = tasks.iter().map(|t| Waker::from(t.clone())).collect();
        let (done, spare) = (vec![false; calls.len()], Vec::with_capacity(calls.len()));
        Self { calls, done, tasks, wakers, queue, spare, returned: 0 }
    }

    fn poll(&mut self, index: usize) {
        self.tasks[index].queued.store(false, Ordering::Release);
        if self.done[index] {
            return;
        }
        let mut cx = Context::from_waker(&self.wakers[index]);
        if let Poll::Ready(value) = self.calls[index].as_mut().poll(&mut cx) {
            assert_eq!(value, VALUE, "every caller gets the value");
            self.done[index] = true;
            self.returned += 1;
        }
    }

    /// Polls every queued task until none is queued.
    fn run(&mut self) {
        loop {
            std::mem::swap(&mut *self.queue.lock().expect("the queue"), &mut self.spare);
            if self.spare.is_empty() {
                return;
            }
            let mut next = std::mem::take(&mut self.spare);
            for &index in &next {
                self.poll(index);
            }
            next.clear();
            self.spare = next;
        }
    }
}

/// The measured phase: opens the gate the leader's work waits on and runs the executor until
/// every call has returned.
#[inline(never)]
fn fan_out_phase(executor: &mut Executor<'_>, gate: &Gate) {
    gate.open();
    executor.run();
    assert_eq!(executor.returned, executor.calls.len(), "every call returned");
}

/// Polls each call once (the first leads), then measures the fan-out.
fn measure(calls: Vec<Call<'_>>, gate: &Gate) {
    let mut executor = Executor::new(calls);
    for index in 0..executor.calls.len() {
        executor.poll(index);
    }
    executor.run();
    assert_eq!(executor.returned, 0, "nobody returns before the gate opens");
    fan_out_phase(&mut executor, gate);
}

/// Runs the competitor called `name` (u64 keys, its default hasher), if it is this one.
struct Run {
    name: String,
    waiters: usize,
    found: bool,
}

/// Whether the competitor runs here (its calls need no runtime driving them).
fn runs_here(name: &str) -> bool {
    !name.contains("detached") && !name.contains("moka")
}

impl VisitAny for Run {
    fn visit<C: Coalesce>(&mut self) {
        if C::NAME != self.name || !C::DEFAULT_HASHER || !runs_here(C::NAME) || self.found {
            return;
        }
        self.found = true;
        let group: &'static C = Box::leak(Box::new(C::with_capacity(coalescer_benches::CAPACITY)));
        let gate: &'static Gate = Box::leak(Box::default());
        let calls: Vec<Call<'static>> = (0..self.waiters)
            .map(|_| -> Call<'static> {
                Box::pin(group.call(C::Key::fresh(1), move || async move {
                    gate.wait().await;
                    VALUE
                }))
            })
            .collect();
        // Some published crates use tokio's primitives: give them a runtime context (it is
        // never driven; the executor above polls every call).
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let _context = rt.enter();
        measure(calls, gate);
    }
}

/// The floor: a bare event wakes the waiters.
fn floor(waiters: usize) {
    let (gate, done): (&'static Gate, &'static Gate) = (Box::leak(Box::default()), Box::leak(Box::default()));
    let calls: Vec<Call<'static>> = (0..waiters)
        .map(|index| -> Call<'static> {
            Box::pin(async move {
                if index == 0 {
                    gate.wait().await;
                    done.open();
                } else {
                    done.wait().await;
                }
                VALUE
            })
        })
        .collect();
    measure(calls, gate);
}

/// Lists the competitors it runs.
struct List;

impl VisitAny for List {
    fn visit<C: Coalesce>(&mut self) {
        if C::DEFAULT_HASHER && runs_here(C::NAME) {
            println!("{}", C::NAME);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: fanout COMPETITOR|floor WAITERS, or fanout --list");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        println!("floor");
        each_variant::<u64>(&mut List);
        return;
    }
    let [name, waiters] = &args[..] else { usage() };
    let waiters: usize = waiters.parse().unwrap_or_else(|_| usage());
    if waiters < 2 {
        usage();
    }
    if name == "floor" {
        floor(waiters);
        return;
    }
    let mut run = Run { name: name.clone(), waiters, found: false };
    each_variant::<u64>(&mut run);
    if !run.found {
        eprintln!("no competitor named {name:?} runs here (see --list)");
        std::process::exit(2);
    }
}
