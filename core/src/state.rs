//! The state word of one flight: a phase, two driving flags and the number of live waiters,
//! packed into one `usize` so that every transition is a single atomic read-modify-write.
//!
//! ```text
//!  usize:  [ waiters ... | WOKEN | DRIVING | phase (3 bits) ]
//!            bits 5..       bit 4   bit 3     bits 0-2
//! ```
//!
//! Phases, and who may move between them:
//!
//! | from      | to        | by                                                            |
//! |-----------|-----------|---------------------------------------------------------------|
//! | `RUNNING` | `VACANT`  | a *work*-mode leader dropped before its work finished          |
//! | `VACANT`  | `RUNNING` | the one waiter whose compare-and-swap wins (the promotion)     |
//! | `RUNNING` | `DONE`    | whoever ran the work to completion, after removing the entry   |
//! | `RUNNING` | `ABORTED` | whoever was running the work when it panicked or was aborted  |
//! | `RUNNING` | `CLOSING` | the last waiter out of work the flight owns (under the lock)    |
//! | `CLOSING` | `ABORTED` | that waiter, once the work is dropped and the entry removed    |
//!
//! `DONE` and `ABORTED` are final. A `CLOSING` flight keeps its table entry while its owned work
//! is being dropped, and callers that find it wait for the entry to go instead of joining: the
//! key's next execution starts only after the last one is gone. The waiter count is changed only while the flight's table
//! lock is held (joins always; leaves while the flight is still the key's current flight), so
//! "the last one out removes the entry" is decided under that lock.
//!
//! `DRIVING` and `WOKEN` are used by *shared-work* flights only: `DRIVING` is a try-lock owned by
//! the waiter that is polling the flight's work future, `WOKEN` says the work's waker fired since
//! it was last polled.

pub(crate) const PHASE_MASK: usize = 0b111;
pub(crate) const RUNNING: usize = 0;
pub(crate) const VACANT: usize = 1;
pub(crate) const DONE: usize = 2;
pub(crate) const ABORTED: usize = 3;
pub(crate) const CLOSING: usize = 4;
pub(crate) const DRIVING: usize = 1 << 3;
pub(crate) const WOKEN: usize = 1 << 4;
pub(crate) const ONE_WAITER: usize = 1 << 5;

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

    /// The work has produced its value or panicked; nothing changes any more but the count.
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

    /// One waiter leaves. A work-mode leader leaving an unfinished flight also vacates it, so that
    /// a follower can be promoted.
    pub(crate) fn leave(self, vacate: bool) -> Self {
        debug_assert!(self.waiters() > 0, "a waiter left a flight it was not counted in");
        let mut next = self.0 - ONE_WAITER;
        if vacate && self.phase() == RUNNING {
            next = (next & !PHASE_MASK) | VACANT;
        }
        Self(next)
    }

    /// The phase this flight ends in, with the driving flags cleared and the count kept.
    pub(crate) fn finish(self, phase: usize) -> Self {
        debug_assert!(!self.is_finished(), "a flight finished twice");
        Self((self.0 & !(PHASE_MASK | DRIVING | WOKEN)) | phase)
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
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn leaving_leader_vacates_only_a_running_flight() {
        let running = State((2 * ONE_WAITER) | RUNNING);
        assert_eq!(running.leave(true), State(ONE_WAITER | VACANT));
        assert_eq!(running.leave(false), State(ONE_WAITER | RUNNING));
        let done = State((2 * ONE_WAITER) | DONE);
        assert_eq!(done.leave(true), State(ONE_WAITER | DONE));
    }

    #[test]
    fn finishing_clears_the_driving_flags_and_keeps_the_count() {
        let s = State((3 * ONE_WAITER) | DRIVING | WOKEN | RUNNING);
        let done = s.finish(DONE);
        assert_eq!(done.waiters(), 3);
        assert!(done.is_finished() && !done.is_driving() && !done.is_woken());
    }
}
