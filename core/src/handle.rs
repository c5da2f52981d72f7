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
use crate::table::{Joined, Table};
use core::future::Future;
use core::ops::Deref;
use core::task::Poll;

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
    key: G::Key,
    flight: Arc<Flight<G::Value>>,
    /// This waiter started the work it runs or ran (the first caller, or a promoted one).
    leader: bool,
    /// This waiter runs its own work for a work-mode flight, so leaving vacates it.
    running: bool,
    /// This is a detached flight's task, made on the thread with this token (see `Drop`).
    task: Option<usize>,
    /// The waiter has its result (or re-raised the work's panic): nothing to leave.
    finished: bool,
}

impl<G: Table, R: Deref<Target = G>> Handle<G, R> {
    /// Joins `key`'s flight, or starts one of the given mode. When the key's flight is closing,
    /// gives the key back with that flight, to wait for (see [`poll_closed`]) before retrying.
    #[allow(clippy::type_complexity)]
    pub(crate) fn join(
        table: R,
        key: G::Key,
        mode: Mode<G::Value>,
    ) -> Result<Self, (R, G::Key, Arc<Flight<G::Value>>)> {
        let (flight, leader) = match table.join(&key, mode) {
            Joined::Lead(flight) => (flight, true),
            Joined::Follow(flight) => (flight, false),
            Joined::Closing(flight) => return Err((table, key, flight)),
        };
        table.stats().record(if leader { Event::Leader } else { Event::Follower });
        let running = leader && matches!(flight.mode(), Mode::Work);
        Ok(Self { table, key, flight, leader, running, task: None, finished: false })
    }

    /// The handle of a detached flight's task (counted when the flight was created).
    pub(crate) fn for_task(table: R, key: G::Key, flight: Arc<Flight<G::Value>>) -> Self {
        let task = Some(crate::unwind::thread_token());
        Self { table, key, flight, leader: true, running: true, task, finished: false }
    }

    pub(crate) fn flight(&self) -> &Arc<Flight<G::Value>> {
        &self.flight
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leader
    }

    /// Takes the lead of a vacated work-mode flight; the caller then runs its own work.
    pub(crate) fn try_promote(&mut self) -> bool {
        let won = self.flight.try_promote();
        if won {
            self.leader = true;
            self.running = true;
            self.table.stats().record(Event::Promotion);
        }
        won
    }

    /// The result of a finished flight, for a waiter that did not finish it.
    pub(crate) fn finished_result(&mut self) -> Option<Result<Outcome<G::Value>, Aborted>>
    where
        G::Value: Clone,
    {
        let s = self.flight.load();
        if !s.is_finished() {
            return None;
        }
        self.finished = true;
        // The count froze when the flight finished: it says how many got the value.
        let callers = s.waiters() - usize::from(self.flight.is_detached());
        let (leader, shared) = (self.leader, callers > 1);
        Some(self.flight.result().map(|value| Outcome::new(value, leader, shared)))
    }

    /// The work returned `value`: free the key, then hand the value to every waiter.
    pub(crate) fn complete(&mut self, value: G::Value) -> Outcome<G::Value>
    where
        G::Value: Clone,
    {
        let others = self.end(state::DONE, || Ok(value.clone()));
        Outcome::new(value, self.leader, others)
    }

    /// The work ended without a value: free the key, then release every waiter with `aborted`.
    pub(crate) fn abort(&mut self, aborted: Aborted) -> Aborted {
        let s = self.flight.load();
        // Counted before the waiters are released, so that a released waiter sees it. A task
        // dropped because its callers abandoned the flight was counted as a cancellation.
        if !s.is_finished() && aborted.is_panic() {
            self.table.stats().record(Event::Panic);
        } else if !s.is_finished() && !s.is_closing() {
            self.table.stats().record(Event::Shutdown);
        }
        self.end(state::ABORTED, || Err(aborted.clone()));
        aborted
    }

    /// The work panicked in this caller: release every waiter with [`Aborted`], then resume
    /// the panic here.
    #[cfg(feature = "std")]
    pub(crate) fn fail(&mut self, payload: crate::outcome::Payload) -> ! {
        self.abort(Aborted::panic(&*payload));
        std::panic::resume_unwind(payload)
    }

    /// The work returned: publish its value, or release the waiters with its abort.
    pub(crate) fn finish(&mut self, result: Result<G::Value, Aborted>) -> Result<Outcome<G::Value>, Aborted>
    where
        G::Value: Clone,
    {
        match result {
            Ok(value) => Ok(self.complete(value)),
            Err(aborted) => Err(self.abort(aborted)),
        }
    }

    /// Ends the flight in `phase`: drops finished (or panicked) shared work, takes the flight out
    /// of its table if it is still the key's current one, and publishes. The work goes first,
    /// with no lock held, so that the key's next execution starts only after this one is gone.
    /// Returns whether another waiter was counted.
    fn end(&mut self, phase: usize, for_others: impl FnOnce() -> Result<G::Value, Aborted>) -> bool {
        if self.flight.load().is_finished() {
            // Only when spawning a detached task panicked after the task's handle had already
            // ended the flight: nothing is left to publish.
            self.finished = true;
            return false;
        }
        // Only shared work is the finisher's to take (it holds `DRIVING`).
        if self.flight.is_shared() {
            drop(self.flight.take_work());
        }
        self.table.with_current(&self.key, &self.flight, &mut |current| current);
        self.finished = true;
        self.flight.publish(phase, for_others)
    }

    /// Polls a shared flight's work once, if it wants polling and nobody else is polling it.
    pub(crate) fn drive(&mut self) -> Driven<G::Value>
    where
        G::Value: Clone,
    {
        if !self.flight.try_drive() {
            return Driven::Idle;
        }
        match crate::unwind::catch(|| Flight::drive(&self.flight)) {
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
            Err(payload) => crate::unwind::fail(self, payload),
        }
    }

    /// Starts this caller's own work (user code: a panic in the closure is a panic of the work).
    pub(crate) fn start<F: crate::start::Start<G::Value>>(&mut self, start: F) -> F::Future {
        match crate::unwind::catch(|| start.start()) {
            Ok(work) => work,
            Err(payload) => crate::unwind::fail(self, payload),
        }
    }

    /// Leaves an unfinished flight (the caller was dropped, or gave up).
    fn leave(&mut self) {
        if self.flight.load().is_finished() {
            return;
        }
        let vacate = self.running;
        let mode = self.flight.mode();
        let abandoned = |s: State| match mode {
            // A detached task counts as one waiter: the callers have all gone at one.
            Mode::Detached { abort } => abort && s.waiters() == 1,
            Mode::Work | Mode::Shared(_) => s.waiters() == 0,
        };
        let flight = &self.flight;
        let (mut next, mut closing) = (None, false);
        self.table.with_current(&self.key, flight, &mut |current| {
            let n = flight.leave(vacate);
            next = Some(n);
            if !current || !abandoned(n) || n.is_finished() {
                return false;
            }
            if matches!(mode, Mode::Work) {
                return true; // nothing is owned: the key is free at once
            }
            // The flight owns work that must be dropped before the key's next execution can
            // start: keep the entry, closed to joiners, until it is gone.
            flight.close();
            closing = true;
            false
        });
        let next = next.expect("with_current calls its closure once");
        if next.is_finished() {
            return;
        }
        if abandoned(next) {
            self.table.stats().record(Event::Cancellation);
            // Dropping shared work cancels it; dropping an abortable task's handle aborts the
            // task, whose own handle then ends the flight and frees the key. No lock is held.
            drop(self.flight.take_work());
            if closing && self.flight.is_shared() {
                self.table.with_current(&self.key, &self.flight, &mut |current| current);
                self.flight.closed();
            }
        } else if vacate {
            // A work-mode leader left: wake the followers so that one of them takes the lead.
            self.flight.notify_all();
        }
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
        if self.finished {
            return;
        }
        match self.task {
            // Dropped inside `Spawn::spawn`, on the leader's thread before the leader installed
            // it: the leader ends the flight once `spawn` returns (with its panic, if it
            // panicked; as a shutdown if it returned).
            Some(creator) if creator == crate::unwind::thread_token() && self.flight.load().is_driving() => {
                self.flight.task_dropped_in_spawn();
                self.finished = true;
            }
            Some(_) => {
                self.abort(Aborted::shutdown());
            }
            None => self.leave(),
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
            .field("finished", &self.finished)
            .finish()
    }
}
