//! The state word of one flight: a phase, six flags and the number of live waiters, packed
//! into one `usize` so that every transition is a single atomic read-modify-write.
//!
//! ```text
//!  usize:  [ waiters ... | LISTENED | PERMIT | SHARED | CLAIMED | WOKEN | DRIVING | phase (3 bits) ]
//!            bits 9..       bit 8      bit 7    bit 6    bit 5     bit 4   bit 3     bits 0-2
//! ```
//!
//! Phases, and who may move between them:
//!
//! | from      | to        | by                                                              |
//! |-----------|-----------|-----------------------------------------------------------------|
//! | `RUNNING` | `VACANT`  | a *work*-mode leader dropped before its work finished (a leave)  |
//! | `VACANT`  | `RUNNING` | the one waiter whose compare-and-swap wins (the promotion)       |
//! | `RUNNING` | `CLOSING` | the last waiter out of work the flight owns (shared, or an abortable detached task) |
//! | `RUNNING` | `DONE`    | the holder of `CLAIMED`, once the value is stored                |
//! | `RUNNING` | `ABORTED` | the holder of `CLAIMED`: the work panicked, or its task was dropped |
//! | `CLOSING` | `ABORTED` | the holder of `CLAIMED`: the abandoned work is dropped (or its task ended) |
//! | `CLOSING` | `DONE`    | the holder of `CLAIMED`: an abortable task that finished as it was abandoned |
//!
//! `DONE` and `ABORTED` are final. A `CLOSING` flight keeps its table entry while its owned work
//! is being dropped, and callers that find it wait for the entry to go instead of joining: the
//! key's next execution starts only after the last one is gone. The waiter count is changed only
//! while the flight's table lock is held (joins always, under the bucket's shared lock, so
//! that joins of one key run side by side; leaves while the flight is still the key's current
//! flight, under the exclusive lock), so "the last one out removes the entry" is decided under
//! the exclusive lock, which waits for every join in progress.
//!
//! Flags:
//! * `CLAIMED`: the one caller (or task) that will end the flight. Taken by a single
//!   read-modify-write from a `RUNNING` or `CLOSING` flight that nobody claimed
//!   ([`State::claim`]); its holder stores the result and moves the phase to `DONE` or
//!   `ABORTED`. Nobody else writes the result, so two would-be finishers never both publish.
//! * `DRIVING`: a try-lock owned by the waiter that is polling a shared flight's work future
//!   (for a detached flight: the task is not installed yet). Never taken once `CLAIMED` is set.
//! * `WOKEN`: shared work's waker fired since it was last polled (detached: the task was
//!   dropped inside `Spawn::spawn`).
//! * `SHARED`: set when the flight ends with more than one caller counted: every reader's
//!   [`Outcome::is_shared`](crate::Outcome::is_shared).
//! * `PERMIT`: the flight holds one of its group's permits for keys in flight (see
//!   [`crate::limit`]); cleared, once, by whoever ends the flight, which gives the permit back.
//! * `LISTENED`: a listener was registered on the flight's event. Set by the listener after it
//!   registered and before it checks the state again; never cleared. A notifier changes the state
//!   with a read-modify-write and then reads this flag: when it is clear, nobody can be asleep
//!   on the event (a later listener's check sees the change), and the notification is skipped.
//!   event-listener allocates an event's list on its first notification as on its first
//!   listener, so a flight that nobody listened to (a lone call, a detached leader, which waits
//!   in its own slot) allocates none.
//!
//! After the flight ends, the count is the number of callers that have yet to read the
//! result: each read or leave takes one off, and the last one takes the stored value instead
//! of cloning it.

pub(crate) const PHASE_MASK: usize = 0b111;
pub(crate) const RUNNING: usize = 0;
pub(crate) const VACANT: usize = 1;
pub(crate) const DONE: usize = 2;
pub(crate) const ABORTED: usize = 3;
pub(crate) const CLOSING: usize = 4;
pub(crate) const DRIVING: usize = 1 << 3;
pub(crate) const WOKEN: usize = 1 << 4;
pub(crate) const CLAIMED: usize = 1 << 5;
pub(crate) const SHARED: usize = 1 << 6;
pub(crate) const PERMIT: usize = 1 << 7;
pub(crate) const LISTENED: usize = 1 << 8;
pub(crate) const ONE_WAITER: usize = 1 << 9;

/// A snapshot of a flight's state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(pub(crate) usize);

impl State {
    pub(crate) fn phase(self) -> usize {
        self.0 & PHASE_MASK
    }

    pub(crate) fn waiters(self) -> usize {
        self.0 / ONE_WAITER
    }

    /// The flight has ended (its result, if anyone reads it, is stored); nothing changes any
    /// more but the count of callers yet to read it.
    pub(crate) fn is_finished(self) -> bool {
        matches!(self.phase(), DONE | ABORTED)
    }

    pub(crate) fn is_closing(self) -> bool {
        self.phase() == CLOSING
    }

    pub(crate) fn is_driving(self) -> bool {
        self.0 & DRIVING != 0
    }

    pub(crate) fn is_woken(self) -> bool {
        self.0 & WOKEN != 0
    }

    pub(crate) fn is_claimed(self) -> bool {
        self.0 & CLAIMED != 0
    }

    pub(crate) fn is_shared(self) -> bool {
        self.0 & SHARED != 0
    }

    /// One waiter leaves. A work-mode leader leaving an unfinished, unclaimed flight also
    /// vacates it, so that a follower can be promoted.
    pub(crate) fn leave(self, vacate: bool) -> Self {
        debug_assert!(self.waiters() > 0, "a waiter left a flight it was not counted in");
        let mut next = self.0 - ONE_WAITER;
        if vacate && self.phase() == RUNNING && !self.is_claimed() {
            next = (next & !PHASE_MASK) | VACANT;
        }
        Self(next)
    }

    /// Claims the end of the flight; `None` when it is claimed already, or ended.
    pub(crate) fn claim(self) -> Option<Self> {
        let open = matches!(self.phase(), RUNNING | CLOSING) && !self.is_claimed();
        open.then_some(Self(self.0 | CLAIMED))
    }

    /// Takes the lead of a vacated flight; `None` unless it is vacant.
    pub(crate) fn promote(self) -> Option<Self> {
        (self.phase() == VACANT && !self.is_claimed()).then_some(Self((self.0 & !PHASE_MASK) | RUNNING))
    }

    /// The phase this flight ends in: the driving flags cleared, `SHARED` set when more than one
    /// caller is counted, and the finisher taken off the count unless it reads the result too.
    pub(crate) fn finish(self, phase: usize, finisher_reads: bool) -> Self {
        debug_assert!(self.is_claimed() && !self.is_finished(), "a flight finished twice");
        let mut next = (self.0 & !(PHASE_MASK | DRIVING | WOKEN)) | phase;
        let callers = self.waiters() - usize::from(!finisher_reads);
        if !finisher_reads {
            next -= ONE_WAITER;
        }
        if callers > 1 {
            next |= SHARED;
        }
        Self(next)
    }
}

impl core::fmt::Debug for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let phase = ["RUNNING", "VACANT", "DONE", "ABORTED", "CLOSING", "?", "?", "?"][self.phase()];
        f.debug_struct("State")
            .field("phase", &phase)
            .field("waiters", &self.waiters())
            .field("driving", &self.is_driving())
            .field("woken", &self.is_woken())
            .field("claimed", &self.is_claimed())
            .field("shared", &self.is_shared())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn leaving_leader_vacates_only_a_running_unclaimed_flight() {
        let running = State((2 * ONE_WAITER) | RUNNING);
        assert_eq!(running.leave(true), State(ONE_WAITER | VACANT));
        assert_eq!(running.leave(false), State(ONE_WAITER | RUNNING));
        let done = State((2 * ONE_WAITER) | DONE);
        assert_eq!(done.leave(true), State(ONE_WAITER | DONE));
        let claimed = State((2 * ONE_WAITER) | CLAIMED | RUNNING);
        assert_eq!(claimed.leave(true), State(ONE_WAITER | CLAIMED | RUNNING));
    }

    #[test]
    fn a_flight_is_claimed_once_and_never_after_it_ended() {
        let running = State(ONE_WAITER | RUNNING);
        let claimed = running.claim().unwrap();
        assert!(claimed.is_claimed() && claimed.claim().is_none());
        assert!(State(CLOSING).claim().is_some());
        assert!(State(ONE_WAITER | DONE).claim().is_none());
        assert!(State(ONE_WAITER | VACANT).claim().is_none());
    }

    #[test]
    fn promotion_takes_a_vacant_flight_whatever_its_count() {
        for waiters in 1..4 {
            let vacant = State((waiters * ONE_WAITER) | VACANT);
            assert_eq!(vacant.promote(), Some(State((waiters * ONE_WAITER) | RUNNING)));
        }
        assert!(State(ONE_WAITER | RUNNING).promote().is_none());
    }

    #[test]
    fn finishing_clears_the_driving_flags_and_marks_a_shared_result() {
        let s = State((3 * ONE_WAITER) | DRIVING | WOKEN | CLAIMED | RUNNING);
        let done = s.finish(DONE, true);
        assert_eq!(done.waiters(), 3);
        assert!(done.is_finished() && done.is_shared() && !done.is_driving() && !done.is_woken());
        // A detached task finishes without reading: it leaves the count, and one caller is not
        // a shared result.
        let task = State((2 * ONE_WAITER) | CLAIMED | RUNNING).finish(DONE, false);
        assert_eq!((task.waiters(), task.is_shared()), (1, false));
    }
}
