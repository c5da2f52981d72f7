//! Loads that run without a caller waiting for them: a background refresh, or a load whose
//! caller left at the soft timeout.
//!
//! Such a load is one of the key's flights in the group, so it is never run twice at once and
//! a caller that needs the value joins it. It goes on in one of two ways:
//!
//! - **Spawned**, when the cache was given a [`Spawn`]: the flight's work is spawned
//!   (detached mode) and runs to completion on the runtime, whoever reads the key.
//! - **Kept by the entry** otherwise: the flight is shared work, and the cache keeps one waiter
//!   of it (a [`Refresh`]) in the key's slot. The waiter's waker only raises a flag; every later
//!   read of the key that finds the flag raised polls the waiter once, with `try_lock`, and
//!   never waits for it. A read that stops being polled holds nothing up: the next read polls.
//!   The refresh is dropped (cancelled) with the entry, when the key is evicted, overwritten or
//!   invalidated, or the cache is dropped.

use crate::Spawn;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

/// A boxed, owned future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A waiter of a flight kept alive by a cache entry, polled by the reads that come after.
pub(crate) struct Refresh {
    nudge: Arc<Nudge>,
    fut: Mutex<Option<BoxFuture<()>>>,
    /// Set once the future is over: the slot that holds the refresh (it may have moved into
    /// the slot its own load wrote) lets it go at the next read, woken or not.
    done: AtomicBool,
}

/// The waker of a kept refresh: raises the flag that tells the next read to poll it.
struct Nudge(AtomicBool);

impl Wake for Nudge {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

impl Refresh {
    /// A refresh that has yet to be polled (its flag is raised).
    pub(crate) fn new(fut: BoxFuture<()>) -> Arc<Self> {
        Arc::new(Self {
            nudge: Arc::new(Nudge(AtomicBool::new(true))),
            fut: Mutex::new(Some(fut)),
            done: AtomicBool::new(false),
        })
    }

    /// Polls the refresh once if it was woken and nobody else is polling it. Returns whether it
    /// is over (finished, or ended by a panic, which the flight has already reported to its
    /// other waiters; the panic is not resumed in a read that did not ask for the load).
    pub(crate) fn drive(&self) -> bool {
        if self.done.load(Ordering::Acquire) {
            return true;
        }
        if !self.nudge.0.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut cell = match self.fut.try_lock() {
            Ok(cell) => cell,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Another read is polling it; make sure the wake it may miss is not lost.
                self.nudge.0.store(true, Ordering::Release);
                return false;
            }
        };
        let Some(fut) = cell.as_mut() else { return true };
        let waker = Waker::from(self.nudge.clone());
        let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut Context::from_waker(&waker))));
        if let Ok(Poll::Pending) = polled {
            return false;
        }
        let over = cell.take();
        self.done.store(true, Ordering::Release);
        drop(cell);
        drop(over); // outside the lock
        true
    }
}

/// A [`Spawn`] whose type the cache need not name: the builder's spawner, boxed.
#[derive(Clone)]
pub(crate) struct BoxSpawn(pub(crate) Arc<dyn Fn(BoxFuture<()>) -> Box<dyn Send> + Send + Sync>);

impl BoxSpawn {
    pub(crate) fn new<Sp: Spawn + Send + Sync + 'static>(spawn: Sp) -> Self {
        Self(Arc::new(move |task| Box::new(spawn.spawn(task))))
    }
}

impl Spawn for BoxSpawn {
    type Task = Box<dyn Send>;

    fn spawn<Fut>(&self, task: Fut) -> Self::Task
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        (self.0)(Box::pin(task))
    }

    /// A refresh runs to completion even with nobody waiting: that is its point.
    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

/// A timer the cache need not name: the builder's [`Sleep`](crate::Sleep), boxed.
#[derive(Clone)]
pub(crate) struct BoxSleep(pub(crate) Arc<dyn Fn(std::time::Duration) -> BoxFuture<()> + Send + Sync>);

impl BoxSleep {
    pub(crate) fn new<Sl>(sleep: Sl) -> Self
    where
        Sl: crate::Sleep + Send + Sync + 'static,
        Sl::Timer: Send + 'static,
    {
        Self(Arc::new(move |d| Box::pin(sleep.sleep(d))))
    }
}
