//! How a [`Group`](crate::Group)'s map holds its keys: each key with its hash, computed once by
//! the group's hasher when a caller joins, and the identity of its flight.
//!
//! The map hashes a [`Slot`] by that stored hash alone (its own hasher is [`StoredHash`]), so
//! the key's `Hash` runs once per call, outside any lock. A caller joins by the key
//! ([`ByKey`]: the key's `Eq`, under the bucket lock); a flight's own entry is found by its
//! identity ([`ById`]: two integers compared, no user code), so leaving, finishing and
//! removing never run the key's `Hash` or `Eq`, and a key whose `Hash` panics only sometimes
//! cannot strand a flight. scc requires that the hasher and the key's `Drop` never panic inside
//! it; here the hasher is ours, and keys are dropped only after the bucket lock is released.

use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash, Hasher};

/// A key in the map: the key, its hash, and the address of its flight.
#[derive(Debug)]
pub(crate) struct Slot<K> {
    pub(crate) hash: u64,
    pub(crate) id: usize,
    pub(crate) key: K,
}

impl<K> Hash for Slot<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Eq> PartialEq for Slot<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Slot<K> {}

/// Looks a slot up by a borrowed key and its hash (the key's `Eq` runs).
pub(crate) struct ByKey<'q, Q: ?Sized> {
    pub(crate) hash: u64,
    pub(crate) key: &'q Q,
}

impl<Q: ?Sized> Hash for ByKey<'_, Q> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Borrow<Q>, Q: Eq + ?Sized> scc::Equivalent<Slot<K>> for ByKey<'_, Q> {
    fn equivalent(&self, slot: &Slot<K>) -> bool {
        self.hash == slot.hash && self.key == slot.key.borrow()
    }
}

/// Looks a slot up by its flight's identity (no user code runs).
pub(crate) struct ById {
    pub(crate) hash: u64,
    pub(crate) id: usize,
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K> scc::Equivalent<Slot<K>> for ById {
    fn equivalent(&self, slot: &Slot<K>) -> bool {
        self.hash == slot.hash && self.id == slot.id
    }
}

/// The map's hasher: the hash a slot carries, as it is (it came from the group's hasher).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StoredHash;

impl BuildHasher for StoredHash {
    type Hasher = Stored;

    fn build_hasher(&self) -> Stored {
        Stored(0)
    }
}

/// See [`StoredHash`]. Every slot and lookup writes exactly one `u64`.
#[derive(Debug)]
pub(crate) struct Stored(u64);

impl Hasher for Stored {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use scc::Equivalent;

    #[test]
    fn a_slot_is_found_by_its_key_or_its_identity_and_hashes_as_stored() {
        let slot = Slot { hash: 42, id: 7, key: String::from("k") };
        assert!(ByKey { hash: 42, key: "k" }.equivalent(&slot));
        assert!(!ByKey { hash: 41, key: "k" }.equivalent(&slot));
        assert!(ById { hash: 42, id: 7 }.equivalent(&slot));
        assert!(!ById { hash: 42, id: 8 }.equivalent(&slot));
        assert_eq!(StoredHash.hash_one(&slot), 42);
        assert_eq!(StoredHash.hash_one(ById { hash: 42, id: 0 }), 42);
    }
}
