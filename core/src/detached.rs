//! Detached work: the leader's work is spawned on a runtime and the task finishes the flight
//! itself, so the work runs to completion even if every caller walks away.
//!
//! The task holds a counted handle of its own (with the table behind an `Arc`, as it outlives
//! the callers), so the flight stays the key's current one until the work is done: a caller that
//! arrives while it runs joins it, as in Go. With [`Spawn::aborts_when_abandoned`], the last
//! caller out instead frees the key and drops the task's handle, which aborts the task.

use crate::flight::{Flight, Owned};
use crate::handle::Handle;
use crate::outcome::Aborted;
use crate::spawn::Spawn;
use crate::stats::Event;
use crate::sync::Arc;
use crate::sync::StdArc;
use crate::table::Table;
use alloc::boxed::Box;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use pin_project_lite::pin_project;

/// Spawns a detached flight's work once the leader has created the flight: the group (behind
/// its `Arc`, since the task outlives the callers) and its spawner. Made where the bounds that
/// spawning needs are known; a call holds it as a trait object, so that its future need not
/// name the spawner's type.
pub(crate) trait SpawnWork<V, Fut: Future>: Send + Sync {
    /// Spawns the task that runs `work`, turns its output into the value with `finish`, and
    /// ends `flight`. What the flight keeps of the task: its handle when the last caller out
    /// must abort it, nothing otherwise (dropping a detaching handle leaves the task running).
    fn spawn_work(
        &self,
        work: Fut,
        finish: fn(Fut::Output) -> Result<V, Aborted>,
        flight: Arc<Flight<V>>,
    ) -> Owned<V>;

    /// Whether the last caller out aborts the task.
    fn aborts(&self) -> bool;
}

/// How a call reaches its [`SpawnWork`]: borrowed from a detached group (no allocation per
/// call), or owned, for a spawner given with the call.
pub(crate) enum Spawner<'a, V, Fut: Future> {
    Borrowed(&'a dyn SpawnWork<V, Fut>),
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // only the cache's refreshes (std)
    Owned(Box<dyn SpawnWork<V, Fut> + 'a>),
}

impl<V, Fut: Future> Spawner<'_, V, Fut> {
    pub(crate) fn get(&self) -> &dyn SpawnWork<V, Fut> {
        match self {
            Self::Borrowed(spawn) => *spawn,
            Self::Owned(spawn) => &**spawn,
        }
    }
}

/// A table that carries its own spawner: a detached group or `Single`. Behind its `Arc`, it
/// is the [`SpawnWork`] of its calls, so that nothing is allocated per call.
pub(crate) trait OwnSpawner: Table {
    /// The spawner.
    type Spawner: Spawn;

    /// The table's spawner.
    fn own_spawner(&self) -> &Self::Spawner;
}

impl<G, Fut> SpawnWork<G::Value, Fut> for StdArc<G>
where
    G: OwnSpawner + Send + Sync + 'static,
    G::Value: Clone + Send + Sync + 'static,
    G::Spawner: Send + Sync,
    Fut: Future + Send + 'static,
{
    fn spawn_work(
        &self,
        work: Fut,
        finish: fn(Fut::Output) -> Result<G::Value, Aborted>,
        flight: Arc<Flight<G::Value>>,
    ) -> Owned<G::Value> {
        spawn_on(self.own_spawner(), self.clone(), work, finish, flight)
    }

    fn aborts(&self) -> bool {
        self.own_spawner().aborts_when_abandoned()
    }
}

/// A table and a spawner given with the call (the cache's refreshes).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) struct WithSpawner<G, Sp> {
    pub(crate) table: StdArc<G>,
    pub(crate) spawn: Sp,
}

impl<G, Sp, Fut> SpawnWork<G::Value, Fut> for WithSpawner<G, Sp>
where
    G: Table + Send + Sync + 'static,
    G::Value: Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Sp: Spawn + Send + Sync,
{
    fn spawn_work(
        &self,
        work: Fut,
        finish: fn(Fut::Output) -> Result<G::Value, Aborted>,
        flight: Arc<Flight<G::Value>>,
    ) -> Owned<G::Value> {
        spawn_on(&self.spawn, self.table.clone(), work, finish, flight)
    }

    fn aborts(&self) -> bool {
        self.spawn.aborts_when_abandoned()
    }
}

/// Spawns the task of `flight` with `spawn`.
pub(crate) fn spawn_on<G, Fut, Sp>(
    spawn: &Sp,
    table: StdArc<G>,
    work: Fut,
    finish: fn(Fut::Output) -> Result<G::Value, Aborted>,
    flight: Arc<Flight<G::Value>>,
) -> Owned<G::Value>
where
    G: Table + Send + Sync + 'static,
    G::Value: Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Sp: Spawn,
{
    let handle = Handle::for_task(table, flight);
    let task = spawn.spawn(Completer { work: Some(work), finish, handle });
    if spawn.aborts_when_abandoned() {
        Owned::Task(Some(Box::new(task)))
    } else {
        drop(task); // a detaching handle: the task runs on without it
        Owned::Task(None)
    }
}

pin_project! {
    /// The spawned task: runs the work, drops it, then finishes the flight. Dropped unfinished
    /// (its runtime is shutting down, or it was aborted), its handle ends the flight with
    /// [`Aborted::shutdown`]. The work is declared first so that it is dropped first.
    struct Completer<G: Table, Fut: Future> {
        #[pin]
        work: Option<Fut>,
        finish: fn(Fut::Output) -> Result<G::Value, Aborted>,
        handle: Handle<G, StdArc<G>>,
    }
}

impl<G: Table, Fut: Future> Future for Completer<G, Fut>
where
    G::Value: Clone,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(work) = this.work.as_mut().as_pin_mut() else {
            return Poll::Ready(()); // polled after it finished
        };
        let polled = this.handle.flight().obs().in_span(|| crate::sync::catch(|| work.poll(cx)));
        if matches!(polled, Ok(Poll::Pending)) {
            return Poll::Pending;
        }
        // The work is done (or panicked): it goes before the key is free again. Its `Drop` is
        // user code too: a panic there is counted, and the flight still ends with the result.
        let dropped = crate::sync::catch(|| this.work.set(None)).is_err();
        let (result, event) = match polled {
            Ok(Poll::Ready(output)) => ((this.finish)(output), dropped.then_some(Event::Panic)),
            Ok(Poll::Pending) => unreachable!("returned above"),
            // The panic hook has reported it; the waiters get it as `Aborted`. Resuming it
            // would only make the runtime report it again.
            #[allow(unreachable_patterns)]
            Err(payload) => (Err(panicked(payload)), Some(Event::Panic)),
        };
        // Loses only to a leader whose `Spawn` panicked after handing this task over.
        this.handle.end(result, event);
        Poll::Ready(())
    }
}

/// The flight's outcome for a task whose work panicked.
fn panicked(caught: crate::sync::Caught) -> Aborted {
    #[cfg(feature = "std")]
    {
        Aborted::panic(&*caught)
    }
    #[cfg(not(feature = "std"))]
    {
        match caught {}
    }
}
