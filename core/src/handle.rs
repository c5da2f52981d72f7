//! A caller's counted place in a flight, shared by the async futures and the blocking API.
//!
//! Dropping a handle before it has taken its result is how a caller leaves a flight: the
//! leave is decided under the table lock, so exactly one caller is ever "the last one out".

use crate::flight::{DriveFn, Flight};
use crate::outcome::{Aborted, Outcome};
use crate::state;
use crate::stats::Event;
use crate::sync::Arc;
use crate::table::Table;
use core::task::Poll;

pub(crate) struct Handle<'a, G: Table> {
    table: &'a G,
    key: G::Key,
    flight: Arc<Flight<G::Value>>,
    /// This caller started the work it is running or ran (the first caller, or a promoted one).
    leader: bool,
    /// This caller is running its own work for a work-mode flight (so leaving vacates it).
    running: bool,
    /// The caller has its result (or re-raised the work's panic): nothing to leave.
    finished: bool,
}

impl<'a, G: Table> Handle<'a, G> {
    /// Joins `key`'s flight, or starts one (shared when `drive` is given).
    pub(crate) fn join(table: &'a G, key: G::Key, drive: Option<DriveFn<G::Value>>) -> Self {
        let (flight, leader) = table.join(&key, drive);
        table.stats().record(if leader {
            Event::Leader
        } else {
            Event::Follower
        });
        let running = leader && !flight.is_shared();
        Self {
            table,
            key,
            flight,
            leader,
            running,
            finished: false,
        }
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

    /// The result of a finished flight, for a caller that did not finish it.
    pub(crate) fn finished_result(&mut self) -> Option<Result<Outcome<G::Value>, Aborted>>
    where
        G::Value: Clone,
    {
        if !self.flight.load().is_finished() {
            return None;
        }
        self.finished = true;
        Some(
            self.flight
                .result()
                .map(|value| Outcome::new(value, false, true)),
        )
    }

    /// The work returned `value`: free the key, then hand the value to every waiter.
    pub(crate) fn complete(&mut self, value: G::Value) -> Outcome<G::Value>
    where
        G::Value: Clone,
    {
        self.remove_entry();
        let work = self.flight.take_work();
        let shared = self.flight.publish(state::DONE, || Ok(value.clone()));
        self.finished = true;
        drop(work); // the finished shared work goes last, with no lock held
        Outcome::new(value, self.leader, shared)
    }

    /// The work ended without a value: free the key, then release every waiter with `aborted`.
    pub(crate) fn abort(&mut self, aborted: Aborted) -> Aborted {
        self.remove_entry();
        let work = self.flight.take_work();
        self.flight.publish(state::ABORTED, || Err(aborted.clone()));
        self.finished = true;
        self.table.stats().record(if aborted.is_panic() {
            Event::Panic
        } else {
            Event::Shutdown
        });
        drop(work);
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
    pub(crate) fn finish(
        &mut self,
        result: Result<G::Value, Aborted>,
    ) -> Result<Outcome<G::Value>, Aborted>
    where
        G::Value: Clone,
    {
        match result {
            Ok(value) => Ok(self.complete(value)),
            Err(aborted) => Err(self.abort(aborted)),
        }
    }

    /// Drives a shared flight's work while this caller may: returns its result when this caller
    /// finished the work, `None` when the work is pending or someone else is polling it.
    /// `holding` says the caller already holds `DRIVING` (the leader's first poll).
    pub(crate) fn drive(&mut self, mut holding: bool) -> Option<Result<Outcome<G::Value>, Aborted>>
    where
        G::Value: Clone,
    {
        loop {
            if !holding && !self.flight.try_drive() {
                return None;
            }
            holding = false;
            match crate::unwind::catch(|| self.flight.drive()) {
                Ok(Poll::Ready(result)) => return Some(self.finish(result)),
                Ok(Poll::Pending) if self.flight.stop_driving() => continue,
                Ok(Poll::Pending) => return None,
                Err(payload) => crate::unwind::fail(self, payload),
            }
        }
    }

    /// Takes this flight out of its table if it is still the key's current one.
    fn remove_entry(&self) {
        self.table
            .with_current(&self.key, &self.flight, &mut |current| current);
    }

    /// Leaves an unfinished flight (the caller was dropped, or gave up).
    fn leave(&mut self) {
        if self.flight.load().is_finished() {
            return;
        }
        let vacate = self.running;
        let flight = &self.flight;
        let mut next = None;
        self.table.with_current(&self.key, flight, &mut |current| {
            let n = flight.leave(vacate);
            next = Some(n);
            current && n.waiters() == 0 && !n.is_finished()
        });
        let next = next.expect("with_current calls its closure once");
        if next.is_finished() {
            return;
        }
        if next.waiters() == 0 {
            // The last waiter out of unfinished shared work cancels it (no lock held).
            drop(self.flight.take_work());
        } else if vacate {
            // A work-mode leader left: wake the followers so that one of them takes the lead.
            self.flight.notify_all();
        }
    }
}

impl<G: Table> Drop for Handle<'_, G> {
    fn drop(&mut self) {
        if !self.finished {
            self.leave();
        }
    }
}

impl<G: Table> core::fmt::Debug for Handle<'_, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handle")
            .field("flight", &self.flight)
            .field("leader", &self.leader)
            .field("running", &self.running)
            .field("finished", &self.finished)
            .finish()
    }
}
