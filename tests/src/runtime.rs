//! What a scenario needs from a runtime, and the handles it gets back.

use crate::probe::Probe;
use coalescer::futures::Timeout;
use coalescer::{Aborted, Outcome, Sleep, Spawn};
use futures_lite::FutureExt;
use std::any::Any;
use std::future::Future;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Duration;

/// The group every scenario uses.
pub type TestGroup = coalescer::Group<u32, u32>;

/// A runtime the scenarios run on: made fresh for each test, with its tasks and its callers.
pub trait Runtime: Sized {
    /// Starts a runtime for one test.
    fn start() -> Self;

    /// Runs `future` to completion on the test's thread, with the runtime's tasks making
    /// progress meanwhile (a current-thread runtime runs them only in here).
    fn block_on<F: Future>(&self, future: F) -> F::Output;

    /// Spawns `future` as a task (a thread, for [`Threads`](crate::Threads)).
    fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// One caller of `key` with the API this runtime tests: async `work` in a task, or
    /// `work_blocking` on a thread for [`Threads`](crate::Threads).
    fn call(&self, group: &Arc<TestGroup>, key: u32, probe: &Probe) -> Task<Call> {
        let (group, probe) = (group.clone(), probe.clone());
        self.spawn(async move {
            let call = AssertUnwindSafe(group.work(&key, || probe.work()));
            Call::new(call.catch_unwind().await)
        })
    }

    /// Lets time pass while a scenario waits for a condition (never asserted on).
    fn pause(&self) -> impl Future<Output = ()> + Send + 'static;
}

/// A runtime with an adapter crate: detached work and timeouts.
pub trait AsyncRuntime: Runtime {
    /// The adapter's spawner and timer.
    type Spawner: Spawn + Sleep<Timer: Send + 'static> + Clone + Send + Sync + 'static;

    /// A spawner for this runtime that detaches the work.
    fn detach(&self) -> Self::Spawner;

    /// A spawner for this runtime that aborts the work when its last caller leaves.
    fn abort_when_abandoned(&self) -> Self::Spawner;

    /// The adapter's `timeout` function, called inside one of the runtime's tasks.
    fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, <Self::Spawner as Sleep>::Timer>;
}

/// A runtime that can be shut down under its tasks.
pub trait Shutdown: AsyncRuntime {
    /// Shuts the runtime down; its unfinished tasks are dropped by the time this returns.
    fn shut_down(self);
}

/// How a caller's call ended.
#[derive(Debug)]
pub enum Call {
    /// With a value.
    Value(Outcome<u32>),
    /// With [`Aborted`].
    Aborted(Aborted),
    /// The call panicked (the work panicked in this caller), with this message.
    Panicked(String),
}

impl Call {
    /// From the result of a call run under `catch_unwind`.
    pub fn new(caught: Result<Result<Outcome<u32>, Aborted>, Box<dyn Any + Send>>) -> Self {
        match caught {
            Ok(Ok(outcome)) => Self::Value(outcome),
            Ok(Err(aborted)) => Self::Aborted(aborted),
            Err(payload) => Self::Panicked(message(&*payload)),
        }
    }

    /// The outcome; panics unless the call ended with a value.
    #[track_caller]
    pub fn outcome(self) -> Outcome<u32> {
        match self {
            Self::Value(outcome) => outcome,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    /// The error; panics unless the call ended with [`Aborted`].
    #[track_caller]
    pub fn aborted(self) -> Aborted {
        match self {
            Self::Aborted(aborted) => aborted,
            other => panic!("expected Aborted, got {other:?}"),
        }
    }

    /// The panic's message; panics unless the call panicked.
    #[track_caller]
    pub fn panicked(self) -> String {
        match self {
            Self::Panicked(message) => message,
            other => panic!("expected a panic, got {other:?}"),
        }
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A spawned task or thread: join it, or cancel it (dropping its future where it runs).
#[derive(Debug)]
pub struct Task<T>(Inner<T>);

#[derive(Debug)]
enum Inner<T> {
    Tokio(tokio::task::JoinHandle<T>),
    AsyncStd(async_std::task::JoinHandle<T>),
    Smol(smol::Task<T>),
    Thread(smol::channel::Receiver<std::thread::Result<T>>),
}

impl<T> Task<T> {
    pub(crate) fn tokio(join: tokio::task::JoinHandle<T>) -> Self {
        Self(Inner::Tokio(join))
    }

    pub(crate) fn async_std(join: async_std::task::JoinHandle<T>) -> Self {
        Self(Inner::AsyncStd(join))
    }

    pub(crate) fn smol(task: smol::Task<T>) -> Self {
        Self(Inner::Smol(task))
    }

    /// Waits for the output; a panic in the task is resumed here.
    pub async fn join(self) -> T {
        match self.0 {
            Inner::Tokio(join) => join.await.unwrap_or_else(|e| resume_unwind(e.into_panic())),
            Inner::AsyncStd(join) => join.await,
            Inner::Smol(task) => task.await,
            Inner::Thread(rx) => match rx.recv().await.expect("the thread sends its result") {
                Ok(output) => output,
                Err(payload) => resume_unwind(payload),
            },
        }
    }

    /// Cancels the task and waits until its future has been dropped (on its runtime).
    ///
    /// # Panics
    ///
    /// For a thread, which cannot be cancelled.
    pub async fn cancel(self) {
        match self.0 {
            Inner::Tokio(join) => {
                join.abort();
                // Resolves once the task has stopped (its future dropped), or finished.
                let _ = join.await;
            }
            Inner::AsyncStd(join) => drop(join.cancel().await),
            Inner::Smol(task) => drop(task.cancel().await),
            Inner::Thread(_) => panic!("a thread cannot be cancelled"),
        }
    }
}

/// Runs `f` on a new thread; its result (or panic) is joined asynchronously, so that waiting
/// for it never blocks a runtime's thread.
pub fn spawn_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Task<T> {
    let (tx, rx) = smol::channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send_blocking(catch_unwind(AssertUnwindSafe(f)));
    });
    Task(Inner::Thread(rx))
}

/// Waits (letting the runtime's tasks run) until `condition` holds.
pub async fn until<R: Runtime>(rt: &R, condition: impl Fn() -> bool) {
    while !condition() {
        rt.pause().await;
    }
}

/// Joins every task, in order.
pub async fn join_all<T>(tasks: Vec<Task<T>>) -> Vec<T> {
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.join().await);
    }
    outputs
}

/// Turns a hung scenario into a failure: aborts the test process, naming the scenario, if it is
/// still running after thirty seconds (every scenario takes well under a second). Disarmed on drop.
#[derive(Debug)]
pub struct Watchdog(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl Watchdog {
    /// Arms the watchdog for `scenario`.
    pub fn arm(scenario: &'static str) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(30))
            {
                // Past the test harness's output capture, which an abort would discard.
                let _ = writeln!(
                    std::io::stderr(),
                    "conformance: `{scenario}` hung (something it waits for never happened); aborting"
                );
                std::process::abort();
            }
        });
        Self(tx)
    }
}
