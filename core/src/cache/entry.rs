//! What the cache stores per key: a [`Slot`] (immutable once written, behind an `Arc`, so that
//! a read clones a pointer under the bucket lock and the value outside it), and the
//! [`Verdict`] a read reaches from it.
//!
//! # Times and generations
//!
//! All times are nanoseconds on the cache's [`Clock`](super::Clock). Every write (a load's
//! value, a negatively cached error, an `insert`, an `invalidate`'s tombstone) takes a fresh
//! *generation* from the cache's counter. A load notes the generation it started from in its
//! [`Ticket`]; it writes back only if the key still holds that generation, so a write that
//! came after the load started (an `invalidate`, an `insert`) wins over it.

use super::refresh::Refresh;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What a slot holds.
#[derive(Debug)]
pub(crate) enum Stored<V, E> {
    /// A loaded or inserted value.
    Value(V),
    /// A load's error, kept for the negative TTL.
    Negative(Arc<E>),
    /// An `invalidate` while a load was in the air: keeps that load's value out.
    Tombstone,
}

/// One key's entry. Fields are written once, before the slot is shared, except the atomics and
/// the refresh cell, which say what happened to the slot since.
pub(crate) struct Slot<V, E> {
    pub(crate) stored: Stored<V, E>,
    pub(crate) generation: u64,
    /// From here a read starts a background refresh (`u64::MAX`: never).
    pub(crate) refresh_at: u64,
    /// From here the value is expired.
    pub(crate) expires_at: u64,
    /// Until here an expired value may be served when its load fails (fail-safe).
    pub(crate) stale_until: u64,
    /// How long the load that wrote it took (XFetch scales its early refreshes by it).
    pub(crate) load_nanos: u64,
    /// A failed load throttles the next one until here; stale reads meanwhile are fail-safe.
    pub(crate) retry_at: AtomicU64,
    /// Set by the one read that starts the background refresh of this slot.
    pub(crate) refresh_claimed: AtomicBool,
    /// Whether `refresh` holds a refresh (checked before taking its lock).
    pub(crate) has_refresh: AtomicBool,
    /// A refresh kept alive by the entry (driven by later reads), if any.
    pub(crate) refresh: Mutex<Option<Arc<Refresh>>>,
}

impl<V, E> Slot<V, E> {
    pub(crate) fn new(stored: Stored<V, E>, generation: u64, times: Times) -> Self {
        Self {
            stored,
            generation,
            refresh_at: times.refresh_at,
            expires_at: times.expires_at,
            stale_until: times.stale_until,
            load_nanos: times.load_nanos,
            retry_at: AtomicU64::new(0),
            refresh_claimed: AtomicBool::new(false),
            has_refresh: AtomicBool::new(false),
            refresh: Mutex::new(None),
        }
    }

    /// The value, when the slot holds one.
    pub(crate) fn value(&self) -> Option<&V> {
        match &self.stored {
            Stored::Value(v) => Some(v),
            _ => None,
        }
    }

    /// Whether a stale value may still be served at `now` (fail-safe).
    pub(crate) fn stale_usable(&self, now: u64) -> bool {
        self.value().is_some() && now < self.stale_until
    }

    /// Puts a refresh in the slot unless it holds one. Gives it back when it does.
    pub(crate) fn keep(&self, refresh: Arc<Refresh>) -> Result<(), Arc<Refresh>> {
        let mut cell = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        if cell.is_some() {
            return Err(refresh);
        }
        *cell = Some(refresh);
        self.has_refresh.store(true, Ordering::Release);
        Ok(())
    }

    /// Takes the slot's refresh out (to carry it into the slot that replaces this one).
    pub(crate) fn take_refresh(&self) -> Option<Arc<Refresh>> {
        if !self.has_refresh.load(Ordering::Acquire) {
            return None;
        }
        let taken = self.refresh.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.has_refresh.store(false, Ordering::Release);
        taken
    }

    /// The slot's refresh, if any (a clone of its `Arc`, to poll outside the lock).
    pub(crate) fn refresh(&self) -> Option<Arc<Refresh>> {
        if !self.has_refresh.load(Ordering::Acquire) {
            return None;
        }
        self.refresh.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Removes `done` from the slot if it is still the slot's refresh.
    pub(crate) fn clear_refresh(&self, done: &Arc<Refresh>) -> Option<Arc<Refresh>> {
        let mut cell = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        if cell.as_ref().is_some_and(|r| Arc::ptr_eq(r, done)) {
            self.has_refresh.store(false, Ordering::Release);
            return cell.take();
        }
        None
    }
}

/// The times of a write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Times {
    pub(crate) refresh_at: u64,
    pub(crate) expires_at: u64,
    pub(crate) stale_until: u64,
    pub(crate) load_nanos: u64,
}

/// What a load notes when it starts, to decide whether it may write back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    /// The generation the key held (`None`: no entry).
    pub(crate) seen: Option<u64>,
    /// The cache's last generation when the load started.
    pub(crate) epoch: u64,
    /// When the load started.
    pub(crate) started: u64,
}

/// What a read does with the slot it found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve the value; nothing to start.
    Fresh,
    /// Serve the value, and this read starts the background refresh.
    StartRefresh,
    /// Serve the value; a refresh is already claimed (or is throttled after a failure).
    Refreshing,
    /// Serve the expired value: the last load failed and the retry is throttled.
    Throttled,
    /// Serve the negatively cached error.
    Negative,
    /// No usable value: wait for a load (`stale`: an expired value may be served if it fails).
    Load { stale: bool },
}

impl<V, E> Slot<V, E> {
    /// The verdict at `now`. `early` says whether an early refresh (XFetch) fires for this read.
    pub(crate) fn verdict(&self, now: u64, early: impl FnOnce(&Self) -> bool) -> Verdict {
        match self.stored {
            Stored::Tombstone => return Verdict::Load { stale: false },
            Stored::Negative(_) if now < self.expires_at => return Verdict::Negative,
            Stored::Negative(_) => return Verdict::Load { stale: false },
            Stored::Value(_) => {}
        }
        let throttled = now < self.retry_at.load(Ordering::Acquire);
        if now >= self.expires_at {
            return match (self.stale_usable(now), throttled) {
                (true, true) => Verdict::Throttled,
                (stale, _) => Verdict::Load { stale },
            };
        }
        if now < self.refresh_at && !early(self) {
            return Verdict::Fresh;
        }
        if throttled
            || self.refresh_claimed.load(Ordering::Acquire)
            || self.refresh_claimed.swap(true, Ordering::AcqRel)
        {
            return Verdict::Refreshing;
        }
        Verdict::StartRefresh
    }
}
