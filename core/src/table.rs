//! What a coalescer is to its flights: a place where each key has at most one current flight,
//! with a lock under which joins and "last one out" are decided.

use crate::flight::{Flight, Mode};
use crate::stats::Stats;
use crate::sync::Arc;
use alloc::borrow::ToOwned;
use core::borrow::Borrow;
use core::hash::Hash;

/// A set of keyed flights: [`Group`](crate::Group) (many keys, on `scc::HashMap`) or
/// [`Single`](crate::Single) (one implicit key). Sealed; it appears only in the bounds of the
/// futures in [`futures`](crate::futures).
///
/// # Examples
///
/// ```
/// fn flights<T: coalescer::Table<Value = u8>>(_: &T) {}
/// flights(&coalescer::Group::<String, u8>::new());
/// flights(&coalescer::Single::<u8>::new());
/// ```
pub trait Table: sealed::Sealed {
    /// The key type (`()` for [`Single`](crate::Single)).
    type Key;
    /// The value every caller of a flight receives a clone of.
    type Value;

    /// Under the lock of `key`'s slot: follow the current flight (counting the caller), or
    /// insert a new one of the given mode and lead it. Returns the flight and whether the caller
    /// leads. No user code runs under the lock but the key's `Eq`; the key's `Hash` runs before
    /// it and its `Drop` after it.
    /// The caller gives the key by reference; the table makes an owned key only when the
    /// caller leads a flight that goes into its map.
    #[doc(hidden)]
    fn join<Q>(&self, key: &Q, mode: Mode<Self::Value>, _: sealed::Token) -> Joined<Self::Value>
    where
        Self::Key: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = Self::Key>;

    /// The caller that created `flight` (its leader) gives it what it carries for
    /// observability (its span, its start), after its join: outside any lock, so that a
    /// flight that lost the race to be its key's flight never made a span. User code may run
    /// (the key's `Debug`, a subscriber). Returns whether the flight has a span.
    #[doc(hidden)]
    fn watch<Q>(&self, flight: &Arc<Flight<Self::Value>>, key: &Q, _: sealed::Token) -> bool
    where
        Self::Key: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = Self::Key>;

    /// Calls `decide` exactly once, under the lock of the flight's slot when `flight` is still
    /// its key's current flight (argument `true`; the entry is removed when `decide` returns
    /// true), or without the lock when it is not (argument `false`; nothing is removed). The
    /// entry is found by the flight's identity: no user code runs.
    #[doc(hidden)]
    fn with_current<D: FnMut(bool) -> bool>(
        &self,
        flight: &Arc<Flight<Self::Value>>,
        decide: D,
        _: sealed::Token,
    );

    /// The flight has ended (finished, closed, or abandoned with nothing owned), and `waiters`
    /// callers received its result: gives back its permit for keys in flight, if it holds one,
    /// and reports the end to the observer.
    #[doc(hidden)]
    fn ended(&self, flight: &Arc<Flight<Self::Value>>, waiters: usize, _: sealed::Token);

    /// The counters.
    #[doc(hidden)]
    fn stats(&self, _: sealed::Token) -> &Stats;
}

/// What a join found (internal).
#[derive(Debug)]
pub enum Joined<V> {
    /// No flight: the caller created this one and leads it.
    Lead(Arc<Flight<V>>),
    /// The caller was counted into this flight.
    Follow(Arc<Flight<V>>),
    /// This flight is closing (its abandoned work is being dropped); wait until it is gone,
    /// then join again.
    Closing(Arc<Flight<V>>),
    /// The key had no flight and the group's bound on keys in flight (this many) was reached.
    Full(usize),
}

pub(crate) mod sealed {
    pub trait Sealed {}

    /// Makes [`Table`](super::Table)'s methods uncallable from outside the crate: nobody else
    /// can make one.
    #[derive(Clone, Copy, Debug)]
    pub struct Token(pub(super) ());

    /// The crate's one token.
    pub(crate) const TOKEN: Token = Token(());
}

/// The table's methods for the crate, without the token.
pub(crate) trait TableExt: Table {
    fn join_flight<Q>(&self, key: &Q, mode: Mode<Self::Value>) -> Joined<Self::Value>
    where
        Self::Key: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = Self::Key>,
    {
        self.join(key, mode, sealed::TOKEN)
    }
    fn watch_flight<Q>(&self, flight: &Arc<Flight<Self::Value>>, key: &Q) -> bool
    where
        Self::Key: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = Self::Key>,
    {
        self.watch(flight, key, sealed::TOKEN)
    }
    fn with_current_flight<D: FnMut(bool) -> bool>(&self, flight: &Arc<Flight<Self::Value>>, decide: D) {
        self.with_current(flight, decide, sealed::TOKEN);
    }
    fn flight_ended(&self, flight: &Arc<Flight<Self::Value>>, waiters: usize) {
        self.ended(flight, waiters, sealed::TOKEN);
    }
    fn counters_of(&self) -> &Stats {
        self.stats(sealed::TOKEN)
    }
}

impl<T: Table + ?Sized> TableExt for T {}
