//! A bound on keys in flight (the contract's "Bounds"): a group may refuse a call for a new key
//! once it has as many keys in flight as it allows, or run that call alone, uncoalesced.
//! Joining a flight already in the air is always allowed.
//!
//! A flight created under the bound holds a *permit* (a flag in its state word, see
//! [`crate::state`]); whoever ends the flight (its finisher, the waiter that closed it, the last
//! waiter out of an abandoned work-mode flight) gives the permit back, exactly once, by clearing
//! that flag. A forgotten flight keeps its permit until it ends: it is still in the air.

use crate::sync::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};

/// What a bounded [`Group`](crate::Group) does with a call for a new key when it already has as
/// many keys in flight as its bound allows.
///
/// # Examples
///
/// ```
/// use coalescer::{Group, WhenFull};
/// let group = Group::<u32, u32>::new().max_in_flight(1, WhenFull::Reject);
/// assert_eq!(group.max_keys_in_flight(), Some(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Refuse the call at once with [`Aborted`](crate::Aborted) whose cause is
    /// [`Cause::Full`](crate::Cause::Full): nothing runs. For load shedding.
    Reject,
    /// Run the call's work for this caller alone, without a flight in the map (no other caller
    /// can join it), so the request is served but not coalesced. For correctness first.
    RunAlone,
}

/// The bound and the count of permits out.
#[derive(Debug)]
pub(crate) struct Limit {
    max: usize,
    when_full: WhenFull,
    out: AtomicUsize,
}

impl Limit {
    pub(crate) fn new(max: usize, when_full: WhenFull) -> Self {
        Self { max, when_full, out: AtomicUsize::new(0) }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Takes a permit for a new flight; false when every permit is out.
    pub(crate) fn acquire(&self) -> bool {
        self.out.fetch_update(AcqRel, Acquire, |n| (n < self.max).then_some(n + 1)).is_ok()
    }

    /// Gives a permit back (its flight ended, or was never inserted).
    pub(crate) fn release(&self) {
        let prev = self.out.fetch_sub(1, AcqRel);
        debug_assert!(prev > 0, "a permit was given back twice");
    }
}
