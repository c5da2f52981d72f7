//! One [`Runtime`] per executor the suite runs on.

use crate::probe::{Gate, Probe};
use crate::runtime::{AsyncRuntime, Call, Runtime, Shutdown, Task, TestGroup, spawn_thread};
use coalescer::Sleep;
use coalescer::futures::Timeout;
use coalescer_async_std::AsyncStd as AsyncStdSpawner;
use coalescer_smol::Smol as SmolSpawner;
use coalescer_tokio::Tokio;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const PAUSE: Duration = Duration::from_millis(1);

/// tokio's multi-thread runtime, with four workers.
#[derive(Debug)]
pub struct TokioMulti(tokio::runtime::Runtime);

/// tokio's current-thread runtime: its tasks run only inside [`Runtime::block_on`].
#[derive(Debug)]
pub struct TokioCurrent(tokio::runtime::Runtime);

macro_rules! tokio_runtime {
    ($name:ident, $builder:expr) => {
        impl Runtime for $name {
            fn start() -> Self {
                Self($builder.enable_time().build().expect("a tokio runtime"))
            }

            fn block_on<F: Future>(&self, future: F) -> F::Output {
                self.0.block_on(future)
            }

            fn spawn<F>(&self, future: F) -> Task<F::Output>
            where
                F: Future + Send + 'static,
                F::Output: Send + 'static,
            {
                Task::tokio(self.0.spawn(future))
            }

            fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
                self.detach().sleep(PAUSE)
            }
        }

        impl AsyncRuntime for $name {
            type Spawner = Tokio;

            fn detach(&self) -> Tokio {
                Tokio::detach().on(self.0.handle().clone())
            }

            fn abort_when_abandoned(&self) -> Tokio {
                Tokio::abort_when_abandoned().on(self.0.handle().clone())
            }

            fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, tokio::time::Sleep> {
                coalescer_tokio::timeout(duration, call)
            }
        }

        impl Shutdown for $name {
            fn shut_down(self) {
                drop(self.0); // waits until the workers have dropped every task
            }
        }
    };
}

tokio_runtime!(TokioMulti, {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(4);
    builder
});
tokio_runtime!(TokioCurrent, tokio::runtime::Builder::new_current_thread());

/// async-std's global executor (which cannot be shut down).
#[derive(Debug)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    fn start() -> Self {
        Self
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        async_std::task::block_on(future)
    }

    fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Task::async_std(async_std::task::spawn(future))
    }

    fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
        AsyncStdSpawner::detach().sleep(PAUSE)
    }
}

impl AsyncRuntime for AsyncStd {
    type Spawner = AsyncStdSpawner;

    fn detach(&self) -> AsyncStdSpawner {
        AsyncStdSpawner::detach()
    }

    fn abort_when_abandoned(&self) -> AsyncStdSpawner {
        AsyncStdSpawner::abort_when_abandoned()
    }

    fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, coalescer_async_std::Timer> {
        coalescer_async_std::timeout(duration, call)
    }
}

/// A smol [`Executor`](smol::Executor) of the test's own, run by three threads (and by the
/// test's thread inside [`Runtime::block_on`]), so that it can be shut down.
#[derive(Debug)]
pub struct Smol {
    executor: Arc<smol::Executor<'static>>,
    stop: Arc<Gate>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime for Smol {
    fn start() -> Self {
        let executor = Arc::new(smol::Executor::new());
        let stop = Arc::new(Gate::default());
        let threads = (0..3)
            .map(|_| {
                let (executor, stop) = (executor.clone(), stop.clone());
                std::thread::spawn(move || smol::block_on(executor.run(stop.wait())))
            })
            .collect();
        Self { executor, stop, threads }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        smol::block_on(self.executor.run(future))
    }

    fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Task::smol(self.executor.spawn(future))
    }

    fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
        SmolSpawner::detach().sleep(PAUSE)
    }
}

impl AsyncRuntime for Smol {
    type Spawner = SmolSpawner;

    fn detach(&self) -> SmolSpawner {
        SmolSpawner::detach().on(&self.executor)
    }

    fn abort_when_abandoned(&self) -> SmolSpawner {
        SmolSpawner::abort_when_abandoned().on(&self.executor)
    }

    fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, coalescer_smol::Timer> {
        coalescer_smol::timeout(duration, call)
    }
}

impl Shutdown for Smol {
    fn shut_down(self) {
        drop(self); // stops the threads, then drops the executor and its tasks
    }
}

impl Drop for Smol {
    fn drop(&mut self) {
        self.stop.open();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The executor (the last `Arc`: spawners hold a `Weak`) is dropped after this, with
        // every task it still holds.
    }
}

/// Plain threads: callers use the blocking API (`work_blocking`), each on a thread of its own;
/// spawned futures run on threads of their own with `futures_lite::future::block_on`.
#[derive(Debug)]
pub struct Threads;

impl Runtime for Threads {
    fn start() -> Self {
        Self
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    fn spawn<F>(&self, future: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_thread(move || futures_lite::future::block_on(future))
    }

    fn call(&self, group: &Arc<TestGroup>, key: u32, probe: &Probe) -> Task<Call> {
        let (group, probe) = (group.clone(), probe.clone());
        spawn_thread(move || {
            let call = AssertUnwindSafe(|| group.work_blocking(&key, || probe.run_blocking()));
            Call::new(catch_unwind(call))
        })
    }

    fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
        // Only the scenario's own thread waits here, in `block_on`: nothing else runs on it.
        std::thread::sleep(PAUSE);
        std::future::ready(())
    }
}
