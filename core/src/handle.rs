//! A counted place in a flight: a caller's (async or blocking), or a detached task's.
//!
//! Dropping a caller's handle before it has taken its result is how a caller leaves a flight:
//! the leave is decided under the table lock, so exactly one waiter is ever "the last one out".
//! Dropping a detached task's handle before the work finished means the runtime dropped the
//! task: the flight ends with [`Aborted::shutdown`].

use crate::flight::{Flight, Mode};
use crate::outcome::{Aborted, Outcome};
use crate::state::{self, State};
use crate::stats::Event;
use crate::sync::Arc;
use crate::table::{Joined, Table, TableExt};
use alloc::borrow::ToOwned;
use core::borrow::Borrow;
use core::future::Future;
use core::hash::Hash;
use core::ops::Deref;
use core::task::Poll;

/// Why [`Handle::join`] joined nothing.
pub(crate) enum NotJoined<V> {
    /// The key's flight is closing: wait for it to go, then join again.
    Closing(Arc<Flight<V>>),
    /// The group's bound on keys in flight refused a new key.
    Full(Aborted),
}

/// What one [`Handle::drive`] did.
pub(crate) enum Driven<V> {
    /// This caller finished the work.
    Finished(Result<Outcome<V>, Aborted>),
    /// The work is pending (or someone else is polling it): wait for the flight's event.
    Idle,
    /// The work yielded: poll again after giving the executor its turn (wake yourself).
    Yielded,
}

/// Reaches a table: `&G` for callers, `Arc<G>` for a detached task that outlives them.
pub(crate) struct Handle<G: Table, R: Deref<Target = G>> {
    table: R,
    flight: Arc<Flight<G::Value>>,
    /// This waiter started the work it runs or ran (the first caller, or a promoted one).
    leader: bool,
    /// This waiter runs its own work for a work-mode flight, so leaving vacates it.
    running: bool,
    /// This is a detached flight's task, made on the thread with this token (see `Drop`).
    task: Option<usize>,
    /// Nothing is left to do on drop: the waiter has read its result, or left, or (a task)
    /// ended the flight or lost it to another finisher.
    done: bool,
    /// This follower joined while the flight's observer was pending (its leader had not made
    /// the flight's span yet): its report of the join (the link from its span, the event) is
    /// made at its next look at the flight after the leader's (see [`Self::link`]).
    #[cfg(feature = "tracing")]
    unlinked: bool,
}

impl<G: Table, R: Deref<Target = G>> Handle<G, R> {
    /// Joins `key`'s flight, or starts one of the given mode. When the key's flight is closing,
    /// gives that flight back, to wait for (see [`poll_closed`]) before retrying.
    pub(crate) fn join<Q>(table: R, key: &Q, mode: Mode<G::Value>) -> Result<Self, NotJoined<G::Value>>
    where
        G::Key: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
    {
        let (flight, leader) = match table.join_flight(key, mode) {
            Joined::Lead(flight) => (flight, true),
            Joined::Follow(flight) => (flight, false),
            Joined::Closing(flight) => return Err(NotJoined::Closing(flight)),
            Joined::Full(limit) => return Err(NotJoined::Full(Aborted::full(limit))),
        };
        let running = leader && matches!(flight.mode(), Mode::Work);
        #[cfg(feature = "tracing")]
        let unlinked = !leader && flight.obs().is_pending();
        let handle = Self {
            table,
            flight,
            leader,
            running,
            task: None,
            done: false,
            #[cfg(feature = "tracing")]
            unlinked,
        };
        // Counted at once, before the leader's observer is set (so that a follower that
        // joins meanwhile is never counted before its leader), and whether or not the
        // flight's observer is pending (a pending one makes the follower's trace report
        // nothing here, and `link` makes it later; a leader's start has no trace report).
        // One call per branch, so that each knows its event.
        let counters = handle.table.counters_of();
        if leader {
            counters.record(Event::Leader, Some(handle.flight.obs()));
            // User code (the key's `Debug`, a subscriber): the handle is there to leave the
            // flight if it panics (a flight started and abandoned: a cancellation). With a
            // span, the followers that joined before it was there are woken to make their
            // report (each also makes it at its next look, at the latest when it reads the
            // result).
            if handle.table.watch_flight(&handle.flight, key) {
                #[cfg(feature = "tracing")]
                wake_early_followers(&handle.flight);
            }
        } else {
            counters.record(Event::Follower, Some(handle.flight.obs()));
        }
        Ok(handle)
    }

    /// Makes the report of a join that found the flight's observer pending, once the leader
    /// has set it: one test otherwise (the rest is out of line, so that the callers stay
    /// small enough to be inlined).
    #[inline]
    fn link(&mut self) {
        #[cfg(feature = "tracing")]
        if self.unlinked {
            self.link_late();
        }
    }

    #[cfg(feature = "tracing")]
    #[cold]
    #[inline(never)]
    fn link_late(&mut self) {
        if !self.flight.obs().is_pending() {
            self.unlinked = false;
            self.table.counters_of().observer().joined(self.flight.obs());
        }
    }

    /// The handle of a detached flight's task (counted when the flight was created).
    pub(crate) fn for_task(table: R, flight: Arc<Flight<G::Value>>) -> Self {
        let task = Some(crate::sync::thread_token());
        Self {
            table,
            flight,
            leader: true,
            running: true,
            task,
            done: false,
            #[cfg(feature = "tracing")]
            unlinked: false,
        }
    }

    pub(crate) fn flight(&self) -> &Arc<Flight<G::Value>> {
        &self.flight
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leader
    }

    /// Whether this caller waits in its flight's waker slot rather than on its event: the
    /// leader of a detached flight (its one caller that never runs or drives the work).
    pub(crate) fn waits_in_slot(&self) -> bool {
        self.leader && self.task.is_none() && self.flight.is_detached()
    }

    /// Counts an event of this handle's table.
    pub(crate) fn record(&self, event: Event) {
        self.table.counters_of().record(event, Some(self.flight.obs()));
    }

    /// Takes the lead of a vacated work-mode flight; the caller then runs its own work.
    pub(crate) fn try_promote(&mut self) -> bool {
        let won = self.flight.try_promote();
        if won {
            self.leader = true;
            self.running = true;
            self.record(Event::Promotion);
        }
        won
    }

    /// The result of a finished flight, for a waiter counted in it.
    ///
    /// # Panics
    ///
    /// When `V::clone` panics (the read is counted all the same).
    pub(crate) fn finished_result(&mut self) -> Option<Result<Outcome<G::Value>, Aborted>>
    where
        G::Value: Clone,
    {
        // A waiter's look at the flight: the time to report a join that found it pending.
        self.link();
        self.read_result()
    }

    /// [`finished_result`](Self::finished_result), for the finisher that has just ended the
    /// flight (it ran the work, so it has nothing to report).
    fn read_result(&mut self) -> Option<Result<Outcome<G::Value>, Aborted>>
    where
        G::Value: Clone,
    {
        if !self.flight.load().is_finished() {
            return None;
        }
        self.done = true;
        let (result, shared) = self.flight.read();
        Some(result.map(|value| Outcome::new(value, self.leader, shared)))
    }

    /// The work this caller ran returned: end the flight with its result (this caller is its one
    /// finisher), then read it back like every other caller.
    pub(crate) fn finish(&mut self, result: Result<G::Value, Aborted>) -> Result<Outcome<G::Value>, Aborted>
    where
        G::Value: Clone,
    {
        self.finish_with(result, None)
    }

    /// [`finish`](Self::finish), counting `event` if this caller ends the flight.
    pub(crate) fn finish_with(
        &mut self,
        result: Result<G::Value, Aborted>,
        event: Option<Event>,
    ) -> Result<Outcome<G::Value>, Aborted>
    where
        G::Value: Clone,
    {
        let won = self.end(result, event);
        debug_assert!(
            won,
            "only a detached flight has two would-be finishers, and its callers never finish it"
        );
        self.read_result().expect("the flight this caller ended is finished")
    }

    /// The work panicked in this caller: release every waiter with [`Aborted`], then resume
    /// the panic here.
    pub(crate) fn fail(&mut self, caught: crate::sync::Caught) -> ! {
        #[cfg(feature = "std")]
        self.end(Err(Aborted::panic(&*caught)), Some(Event::Panic));
        crate::sync::resume(caught)
    }

    /// Ends the flight with `result` if this caller (or task) wins the claim; returns whether
    /// it did. Counts `event` first, so that a released waiter sees it.
    ///
    /// The finisher drops finished (or panicked) shared work, takes the flight out of its table
    /// if it is still the key's current one, and publishes: the work goes first, so that the
    /// key's next execution starts only after this one is gone. A guard publishes even when the
    /// work's `Drop` unwinds; with `std` that panic is caught, counted, and resumed here after
    /// the flight has ended with the work's result.
    pub(crate) fn end(&mut self, result: Result<G::Value, Aborted>, event: Option<Event>) -> bool {
        if !self.flight.claim() {
            // Another finisher ends the flight. A task gives its place up now; a caller reads
            // the winner's result, or gives its place up when it is dropped.
            if self.task.is_some() {
                self.done = true;
                self.flight.leave(false);
            }
            return false;
        }
        if let Some(event) = event {
            self.record(event);
        }
        let reads = self.task.is_none();
        self.done = !reads;
        let finishing = Finishing { table: &*self.table, flight: &self.flight, result: Some(result), reads };
        // Only shared work is the finisher's to take (it holds `CLAIMED`).
        let dropped = if self.flight.is_shared() {
            crate::sync::catch(|| drop(self.flight.take_work())).err()
        } else {
            None
        };
        drop(finishing);
        if let Some(payload) = dropped {
            self.record(Event::Panic);
            crate::sync::resume(payload);
        }
        true
    }

    /// Polls a shared flight's work once, if it wants polling and nobody else is polling it.
    pub(crate) fn drive(&mut self) -> Driven<G::Value>
    where
        G::Value: Clone,
    {
        // A waiter's look at the flight (it may finish it here, and not look again).
        self.link();
        if !self.flight.try_drive() {
            return Driven::Idle;
        }
        // Gives `DRIVING` back if the poll unwinds where panics cannot be caught (no `std`),
        // so that the flight carries on with the waiters that are left.
        let driving = Driving(&*self.flight);
        let polled = self.flight.obs().in_span(|| crate::sync::catch(|| Flight::drive(&self.flight)));
        core::mem::forget(driving);
        match polled {
            Ok(Poll::Ready(result)) => Driven::Finished(self.finish(result)),
            // The work woke itself while it was polled (a cooperative yield). That wake found
            // `DRIVING` taken and told nobody; `WOKEN` stays set, and now the wake is delivered
            // as any other: to every sleeping waiter, since this caller may stall after it
            // returns. The caller itself goes back to its executor and wakes itself.
            Ok(Poll::Pending) if self.flight.stop_driving() => {
                self.flight.notify_all();
                Driven::Yielded
            }
            Ok(Poll::Pending) => Driven::Idle,
            Err(payload) => self.fail(payload),
        }
    }

    /// Starts this caller's own work (user code: a panic in the closure is a panic of the work).
    pub(crate) fn start<F: crate::start::Start<G::Value>>(&mut self, start: F) -> F::Future {
        match self.flight.obs().in_span(|| crate::sync::catch(|| start.start())) {
            Ok(work) => work,
            Err(payload) => self.fail(payload),
        }
    }

    /// Leaves the flight (the caller was dropped, or gave up, or will not read its result).
    fn leave(&mut self) {
        self.link();
        self.done = true;
        let flight = &self.flight;
        if flight.load().is_finished() {
            flight.leave(false); // gives up this caller's read
            return;
        }
        let table = &*self.table;
        let vacate = self.running;
        let mode = flight.mode();
        let abandoned = |s: State| match mode {
            // A detached task counts as one waiter: the callers have all gone at one.
            Mode::Detached { abort } => abort && s.waiters() == 1,
            Mode::Work | Mode::Shared(_) => s.waiters() == 0,
        };
        let (mut next, mut closed) = (None, false);
        self.table.with_current_flight(flight, &mut |current| {
            let n = flight.leave(vacate);
            next = Some(n);
            if n.is_finished() || !abandoned(n) {
                return false;
            }
            if matches!(mode, Mode::Work) {
                return current; // nothing is owned: the key is free at once
            }
            // The flight owns work that must be dropped before the key's next execution can
            // start: keep the entry, closed to joiners, until it is gone. Not when a finisher
            // has claimed the flight: it ends it.
            closed = flight.close();
            false
        });
        let next = next.expect("with_current calls its closure once");
        if next.is_finished() {
            return;
        }
        match mode {
            Mode::Work if abandoned(next) => {
                table.counters_of().record(Event::Cancellation, Some(flight.obs()));
                table.flight_ended(flight, 0);
            }
            // A work-mode leader left: wake the followers so that one of them takes the lead.
            Mode::Work if vacate => flight.notify_all(),
            Mode::Work => {}
            Mode::Shared(_) | Mode::Detached { .. } if closed => {
                table.counters_of().record(Event::Cancellation, Some(flight.obs()));
                // Shared work: the guard frees the key once the work is dropped, even if its
                // `Drop` panics (that panic goes on to the caller that dropped this one).
                // Dropping an abortable task's handle aborts the task, whose own handle then
                // ends the flight and frees the key. No lock is held.
                // (`then`, not `then_some`: the guard must not even be made for a task, whose
                // own handle ends the flight once the runtime has dropped it.)
                let _closing = flight.is_shared().then(|| Closing { table, flight });
                drop(flight.take_work());
            }
            Mode::Shared(_) | Mode::Detached { .. } => {}
        }
    }
}

/// The finisher's guard: takes the flight out of its table and publishes `result` when dropped,
/// so that the flight ends even if the work's `Drop` unwinds past it.
struct Finishing<'a, G: Table> {
    table: &'a G,
    flight: &'a Arc<Flight<G::Value>>,
    result: Option<Result<G::Value, Aborted>>,
    reads: bool,
}

impl<G: Table> Drop for Finishing<'_, G> {
    fn drop(&mut self) {
        let result = self.result.take().expect("a flight is published once");
        let phase = if result.is_ok() { state::DONE } else { state::ABORTED };
        self.table.with_current_flight(self.flight, &mut |current| current);
        let ended = self.flight.publish(phase, result, self.reads);
        self.table.flight_ended(self.flight, ended.waiters());
    }
}

/// The closing waiter's guard: once the abandoned shared work is dropped (or its `Drop`
/// unwinds), takes the flight out of its table and ends it, freeing the key.
struct Closing<'a, G: Table> {
    table: &'a G,
    flight: &'a Arc<Flight<G::Value>>,
}

impl<G: Table> Drop for Closing<'_, G> {
    fn drop(&mut self) {
        self.table.with_current_flight(self.flight, &mut |current| current);
        self.flight.closed();
        self.table.flight_ended(self.flight, 0);
    }
}

/// Held while a caller polls shared work: dropped only if that poll unwinds uncaught (no
/// `std`), it gives `DRIVING` back and passes a pending wake on to the other waiters.
struct Driving<'a, V>(&'a Flight<V>);

impl<V> Drop for Driving<'_, V> {
    fn drop(&mut self) {
        self.0.stop_driving();
        self.0.notify_all();
    }
}

/// The leader of `flight` made its span: wakes the followers that joined before, if any, so
/// that each makes its report of the join now (see [`Handle::link`]).
#[cfg(feature = "tracing")]
#[cold]
#[inline(never)]
fn wake_early_followers<V>(flight: &Flight<V>) {
    if flight.load().waiters() > 1 {
        flight.notify_listeners(); // the span is not in the state word: no `LISTENED` shortcut
    }
}

/// Waits until a closing flight is gone (its entry removed), so that the caller can join anew.
pub(crate) fn poll_closed<V>(
    flight: &Flight<V>,
    listener: &mut Option<event_listener::EventListener>,
    cx: &mut core::task::Context<'_>,
) -> Poll<()> {
    loop {
        if !flight.load().is_closing() {
            return Poll::Ready(());
        }
        match listener {
            // Listen first, then check again (never check-then-listen).
            None => *listener = Some(flight.listen()),
            Some(l) => match core::pin::Pin::new(l).poll(cx) {
                Poll::Ready(()) => *listener = None,
                Poll::Pending => return Poll::Pending,
            },
        }
    }
}

impl<G: Table, R: Deref<Target = G>> Drop for Handle<G, R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.task {
            // Dropped inside `Spawn::spawn`, on the leader's thread before the leader installed
            // it: the leader ends the flight once `spawn` returns (with its panic, if it
            // panicked; as a shutdown if it returned).
            Some(creator) if creator == crate::sync::thread_token() && self.flight.load().is_driving() => {
                self.flight.task_dropped_in_spawn();
                self.done = true;
            }
            // The runtime dropped the task before it finished: a shutdown, unless the callers
            // abandoned an abortable task (counted as their cancellation).
            Some(_) => {
                let abandoned = self.flight.load().is_closing();
                self.end(Err(Aborted::shutdown()), (!abandoned).then_some(Event::Shutdown));
            }
            None => {
                if self.waits_in_slot() {
                    self.flight.unregister_leader();
                }
                self.leave();
            }
        }
    }
}

impl<G: Table, R: Deref<Target = G>> core::fmt::Debug for Handle<G, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handle")
            .field("flight", &self.flight)
            .field("leader", &self.leader)
            .field("running", &self.running)
            .field("task", &self.task)
            .field("done", &self.done)
            .finish()
    }
}
