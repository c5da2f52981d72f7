//! The futures returned by the async methods: [`Work`] and [`TryWork`].

use crate::detached::Spawner;
use crate::flight::{DriveFn, Flight, Mode, Owned};
use crate::handle::{Driven, Handle, NotJoined};
use crate::outcome::{Aborted, Error, Outcome, split_try};
use crate::start::{Start, TryStart};
use crate::stats::Event;
use crate::sync::Arc;
use crate::sync::StdArc;
use crate::table::Table;
use alloc::borrow::ToOwned;
use core::borrow::Borrow;
use core::fmt;
use core::future::Future;
use core::hash::Hash;
use core::pin::Pin;
use core::task::{Context, Poll};
use event_listener::EventListener;
use pin_project_lite::pin_project;

/// How a call leads a flight it starts.
pub(crate) enum Lead<'a, V, F: Start<V>> {
    /// Runs the work inside its own future (work mode).
    Inline,
    /// Hands the work to the flight (shared-work mode).
    Shared(SharedOps<V, F>),
    /// Spawns the work (detached mode).
    Detached(Spawner<'a, V, F::Future>),
}

/// What a shared-work call adds: how to store its work in the flight, and how to poll it there.
/// Both are made where a shared group's `work` knows its bounds.
pub(crate) struct SharedOps<V, F: Start<V>> {
    pub(crate) boxed: fn(F::Future) -> Owned<V>,
    pub(crate) drive: DriveFn<V>,
}

impl<V, F: Start<V>> Clone for SharedOps<V, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V, F: Start<V>> Copy for SharedOps<V, F> {}

impl<V, F> SharedOps<V, F>
where
    V: Send + Sync + 'static,
    F: Start<V>,
    F::Future: Send + 'static,
{
    pub(crate) fn new() -> Self {
        Self { boxed: |fut| Owned::shared(Finish { fut, finish: F::finish }), drive: Flight::poll_work }
    }
}

pin_project! {
    /// A work future whose output is turned into the flight's value (stored in shared flights).
    struct Finish<Fut: Future, V> {
        #[pin]
        fut: Fut,
        finish: fn(Fut::Output) -> Result<V, Aborted>,
    }
}

impl<Fut: Future, V> Future for Finish<Fut, V> {
    type Output = Result<V, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.fut.poll(cx).map(*this.finish)
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F, Fut, V> {
        // Not joined yet (futures do nothing until polled).
        Start { start: Option<F> },
        // The key's flight is closing (its abandoned work is being dropped): wait until it is
        // gone, then join again.
        Closing { start: Option<F>, flight: Arc<Flight<V>>, listener: Option<EventListener> },
        // Running this caller's own work inline: work-mode leader, or a promoted follower.
        Run { #[pin] fut: Fut },
        // Waiting for the flight (and driving it, for shared work). `start` is kept for a
        // promotion; the listener is registered before the state is checked again.
        Wait { start: Option<F>, listener: Option<EventListener> },
        Done,
    }
}

pin_project! {
    /// The future of every group's `work` (in each [mode](crate::mode)) and of
    /// [`Single`](crate::Single)'s calls.
    ///
    /// **Calls are lazy**: making this future does nothing; its first poll joins the key's
    /// flight (or starts it). It then resolves to the flight's [`Outcome`], or to [`Aborted`]
    /// when the flight ended without a value. Dropping it leaves the flight; see the methods'
    /// `# Cancel safety` sections for what happens then.
    ///
    /// It is `Send` when the key, the closure, the work future and the group are, and the value
    /// is `Send + Sync`.
    ///
    /// # Examples
    ///
    /// ```
    /// use coalescer::{Group, futures::Work};
    /// // The future can be named, to store it in a struct or return it from a trait.
    /// // Its parameters: the group, the borrowed form of the key, the closure.
    /// fn lookup<'a>(group: &'a Group<String, u8>, name: &'a str) -> Work<'a, Group<String, u8>, str, fn() -> std::future::Ready<u8>> {
    ///     group.work(name, || std::future::ready(1))
    /// }
    /// let group = Group::new();
    /// assert_eq!(futures_lite::future::block_on(lookup(&group, "one")).unwrap().into_value(), 1);
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Work<'a, G: Table, Q: ?Sized, F: Start<G::Value>> {
        // Declared first so that it is dropped first: the running work is gone before the
        // handle hands the flight over (no two executions of one key overlap).
        #[pin]
        stage: Stage<F, F::Future, G::Value>,
        handle: Option<Handle<G, &'a G>>,
        table: &'a G,
        key: &'a Q,
        lead: Option<Lead<'a, G::Value, F>>,
    }
}

impl<'a, G: Table, Q: ?Sized, F: Start<G::Value>> Work<'a, G, Q, F> {
    pub(crate) fn new(table: &'a G, key: &'a Q, start: F, lead: Lead<'a, G::Value, F>) -> Self {
        Self { stage: Stage::Start { start: Some(start) }, handle: None, table, key, lead: Some(lead) }
    }
}

impl<G, Q, F> Future for Work<'_, G, Q, F>
where
    G: Table,
    G::Value: Clone,
    G::Key: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
    F: Start<G::Value>,
{
    type Output = Result<Outcome<G::Value>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.stage.as_mut().project() {
                StageProj::Start { start } => {
                    let mode = match this.lead.as_ref().expect("Work joins once") {
                        Lead::Inline => Mode::Work,
                        Lead::Shared(ops) => Mode::Shared(ops.drive),
                        Lead::Detached(spawn) => Mode::Detached { abort: spawn.get().aborts() },
                    };
                    let joined = match Handle::join(*this.table, *this.key, mode) {
                        Ok(joined) => joined,
                        Err(NotJoined::Full(aborted)) => {
                            this.stage.set(Stage::Done);
                            return Poll::Ready(Err(aborted));
                        }
                        Err(NotJoined::Closing(flight)) => {
                            let start = start.take();
                            this.stage.set(Stage::Closing { start, flight, listener: None });
                            continue;
                        }
                    };
                    let start = start.take().expect("Work polled after its start was taken");
                    let lead = this.lead.take().expect("Work joins once");
                    let handle = this.handle.insert(joined);
                    if !handle.is_leader() {
                        this.stage.set(Stage::Wait { start: Some(start), listener: None });
                        continue;
                    }
                    // Starting the work is user code: it runs outside any lock, after the join.
                    let shared = matches!(lead, Lead::Shared(_));
                    let owned = match lead {
                        Lead::Inline => {
                            let fut = handle.start(start);
                            this.stage.set(Stage::Run { fut });
                            continue;
                        }
                        // The work is made inside the flight's span, so that its spans nest there.
                        Lead::Shared(ops) => handle
                            .flight()
                            .obs()
                            .in_span(|| crate::sync::catch(|| (ops.boxed)(start.start()))),
                        Lead::Detached(spawn) => {
                            let flight = handle.flight().clone();
                            handle.flight().obs().in_span(|| {
                                crate::sync::catch(|| {
                                    spawn.get().spawn_work(start.start(), F::finish, flight)
                                })
                            })
                        }
                    };
                    match owned {
                        Ok(owned) => {
                            if handle.flight().install(owned) {
                                // The runtime dropped the task inside `spawn` (it is shut down).
                                this.stage.set(Stage::Done);
                                let shutdown = Err(crate::outcome::Aborted::shutdown());
                                return Poll::Ready(handle.finish_with(shutdown, Some(Event::Shutdown)));
                            }
                        }
                        Err(payload) => {
                            this.stage.set(Stage::Done);
                            handle.fail(payload)
                        }
                    }
                    this.stage.set(Stage::Wait { start: None, listener: None });
                    // A new shared flight's leader polls its work at once: the waiting stage's
                    // first looks (a result, a vacancy) cannot find anything yet.
                    if shared {
                        if let Some(polled) = drive_shared(handle, cx) {
                            if polled.is_ready() {
                                this.stage.set(Stage::Done);
                            }
                            return polled;
                        }
                    }
                }
                StageProj::Closing { start, flight, listener } => {
                    if crate::handle::poll_closed(flight, listener, cx).is_pending() {
                        return Poll::Pending;
                    }
                    let start = start.take();
                    this.stage.set(Stage::Start { start });
                }
                StageProj::Run { fut } => {
                    let handle = this.handle.as_mut().expect("a running caller has joined");
                    let polled = handle.flight().obs().in_span(|| crate::sync::catch(|| fut.poll(cx)));
                    if matches!(polled, Ok(Poll::Pending)) {
                        return Poll::Pending;
                    }
                    // The work is done (or panicked): it goes before the key is free again. Its
                    // `Drop` is user code too; the flight ends with the work's result all the
                    // same, and that panic is resumed here afterwards.
                    let dropped = crate::sync::catch(|| this.stage.set(Stage::Done)).err();
                    let output = match polled {
                        Ok(Poll::Ready(output)) => output,
                        Ok(Poll::Pending) => unreachable!("returned above"),
                        Err(payload) => handle.fail(payload),
                    };
                    let Some(payload) = dropped else {
                        return Poll::Ready(handle.finish(F::finish(output)));
                    };
                    let won = handle.end(F::finish(output), Some(Event::Panic));
                    debug_assert!(won, "a work-mode flight has one finisher");
                    crate::sync::resume(payload)
                }
                StageProj::Wait { start, listener } => {
                    let handle = this.handle.as_mut().expect("a waiting caller has joined");
                    if let Some(result) = handle.finished_result() {
                        this.stage.set(Stage::Done);
                        return Poll::Ready(result);
                    }
                    if handle.try_promote() {
                        let start = start.take().expect("only work-mode flights are vacated");
                        let fut = handle.start(start);
                        this.stage.set(Stage::Run { fut });
                        continue;
                    }
                    if handle.flight().is_shared() {
                        if let Some(polled) = drive_shared(handle, cx) {
                            if polled.is_ready() {
                                this.stage.set(Stage::Done);
                            }
                            return polled;
                        }
                    }
                    if handle.waits_in_slot() {
                        // A detached flight's leader: its task wakes it through the flight's
                        // slot (no listener to allocate). Register, then check again.
                        handle.flight().register_leader(cx.waker());
                        if let Some(result) = handle.finished_result() {
                            this.stage.set(Stage::Done);
                            return Poll::Ready(result);
                        }
                        return Poll::Pending;
                    }
                    match listener {
                        // Listen first, then check the state again (never check-then-listen).
                        None => *listener = Some(handle.flight().listen()),
                        Some(l) => match Pin::new(l).poll(cx) {
                            Poll::Ready(()) => *listener = None,
                            Poll::Pending => return Poll::Pending,
                        },
                    }
                }
                StageProj::Done => panic!("`Work` polled after it completed"),
            }
        }
    }
}

/// Polls a shared flight's work once for a waiting caller, if it wants polling and nobody else
/// is polling it: `Some` when the call is done (`Ready`) or yields to its executor (`Pending`,
/// having woken itself), `None` when the caller is to wait for the flight's event.
fn drive_shared<G: Table, R: core::ops::Deref<Target = G>>(
    handle: &mut Handle<G, R>,
    cx: &mut Context<'_>,
) -> Option<Poll<Result<Outcome<G::Value>, Aborted>>>
where
    G::Value: Clone,
{
    match handle.drive() {
        Driven::Finished(result) => Some(Poll::Ready(result)),
        Driven::Yielded => {
            cx.waker().wake_by_ref();
            Some(Poll::Pending)
        }
        Driven::Idle => None,
    }
}

impl<G: Table, Q: ?Sized, F: Start<G::Value>> fmt::Debug for Work<'_, G, Q, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::Start { .. } => "start",
            Stage::Closing { .. } => "closing",
            Stage::Run { .. } => "run",
            Stage::Wait { .. } => "wait",
            Stage::Done => "done",
        };
        f.debug_struct("Work").field("stage", &stage).field("handle", &self.handle).finish_non_exhaustive()
    }
}

pin_project! {
    /// The future of the fallible methods ([`Group::try_work`](crate::Group::try_work) and
    /// twins): a [`Work`] whose error is shared behind an `Arc`.
    ///
    /// Resolves to the [`Outcome`] of `Ok` values, or to [`Error`]: the work's error (shared
    /// with the concurrent followers, never retained) or [`Aborted`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::TryGroup::<u8, u8, &str>::new();
    /// assert!(group.try_work(&1, || async { Err("down") }).await.unwrap_err().is_failed());
    /// # });
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct TryWork<'a, G: Table, Q: ?Sized, F>
    where
        TryStart<F>: Start<G::Value>,
    {
        #[pin]
        inner: Work<'a, G, Q, TryStart<F>>,
    }
}

impl<'a, G: Table, Q: ?Sized, F> TryWork<'a, G, Q, F>
where
    TryStart<F>: Start<G::Value>,
{
    pub(crate) fn new(inner: Work<'a, G, Q, TryStart<F>>) -> Self {
        Self { inner }
    }
}

impl<G, Q, F, T, E> Future for TryWork<'_, G, Q, F>
where
    G: Table<Value = Result<T, StdArc<E>>>,
    G::Key: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
    T: Clone,
    TryStart<F>: Start<G::Value>,
{
    type Output = Result<Outcome<T>, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(split_try)
    }
}

impl<G: Table, Q: ?Sized, F> fmt::Debug for TryWork<'_, G, Q, F>
where
    TryStart<F>: Start<G::Value>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryWork").field(&self.inner).finish()
    }
}
