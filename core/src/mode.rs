//! How a [`Group`](crate::Group) runs its work: the third type parameter of the group, so that
//! every call on one group runs its flights the same way and nobody mixes modes by accident.
//!
//! | mode | made by | the work | if the leader is dropped | if the leader stalls | needs |
//! |---|---|---|---|---|---|
//! | [`Inline`] | [`Group::new`](crate::Group::new) | runs inside the leader's future; may borrow | one follower is promoted and runs *its own* closure | its followers wait | nothing |
//! | [`Shared`] | [`.shared()`](crate::Group::shared) | owned by the flight; any waiter drives it | the others keep driving the *same* future | the others drive it | `Send + 'static` work |
//! | [`Detached`] | [`.detached(spawner)`](crate::Group::detached) | spawned on a runtime | nothing changes: it runs to completion | nothing changes | a [`Spawn`](crate::Spawn) |
//!
//! A mode used to be chosen per call, by whoever led: one `work` caller on a key silently took
//! the stall safety away from the `work_shared` callers that had chosen it. Now the group's type
//! says which it is, and its one async method, `work`, runs every flight that way. The blocking
//! twins (`work_blocking`) exist in every mode: a blocking leader runs its closure on its own
//! thread, which is never cancelled by a drop.
//!
//! # Examples
//!
//! ```
//! use coalescer::{Group, SharedGroup};
//! let inline: Group<u64, u64> = Group::new();
//! let shared: SharedGroup<u64, u64> = Group::new().shared();
//! # let _ = (inline, shared);
//! ```
//!
//! A group's mode cannot be mixed: a shared group has no inline `work`, and its work must be
//! `'static`:
//!
//! ```compile_fail
//! # futures_lite::future::block_on(async {
//! let shared = coalescer::Group::<u64, u64>::new().shared();
//! let local = 5;
//! shared.work(&1, || async { local }).await.unwrap(); // borrows `local`: not `'static`
//! # });
//! ```

/// The work runs inside the leader's own future and may borrow from the caller; a dropped leader
/// hands the key to one follower, which runs *its own* closure. See the [module](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct Inline;

/// The flight owns the work (`Send + 'static`) and any waiter drives it: a dropped or stalled
/// leader neither restarts the work nor holds the others up. See the [module](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct Shared;

/// The leader's work is spawned with the spawner `Sp` and runs to completion even if every
/// caller walks away (Go's behaviour), unless the spawner
/// [aborts when abandoned](crate::Spawn::aborts_when_abandoned). See the [module](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct Detached<Sp>(pub(crate) Sp);

impl<Sp> Detached<Sp> {
    /// The spawner.
    pub fn spawner(&self) -> &Sp {
        &self.0
    }
}
