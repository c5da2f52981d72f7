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

/// Spawns a detached flight's work, once the leader has created the flight. Made where the
/// bounds that spawning needs are known, and boxed so that the call's future need not name the
/// spawner's type.
pub(crate) type SpawnFn<'a, V, Fut> = Box<dyn FnOnce(Fut, Arc<Flight<V>>) -> Owned<V> + Send + Sync + 'a>;

/// The [`SpawnFn`] of a detached call on `table`.
pub(crate) fn spawner<'a, G, Fut, S>(
    table: StdArc<G>,
    spawn: S,
    finish: fn(Fut::Output) -> Result<G::Value, Aborted>,
) -> SpawnFn<'a, G::Value, Fut>
where
    G: Table + Send + Sync + 'static,
    G::Value: Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    S: Spawn + Send + Sync + 'a,
{
    Box::new(move |work, flight| {
        let handle = Handle::for_task(table, flight);
        Owned::Task(Box::new(spawn.spawn(Completer { work: Some(work), finish, handle })))
    })
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
