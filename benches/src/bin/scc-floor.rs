//! The floor a `Group` on `scc::HashMap` cannot go below: the instructions of the map operations
//! alone that a lone leader's call makes, on a map like the group's (keys that carry their hash,
//! a pass-through hasher, `u64` keys hashed with foldhash), with nothing else around them. Run
//! under callgrind, once with `--dry` (the map built, no operation made) and once without, and
//! divide the difference by CALLS:
//!
//! ```text
//! scc-floor OP HASHER CALLS [--dry]        (HASHER: foldhash or SipHash)
//! ```
//!
//! Each OP hashes a fresh `u64` key once with HASHER, then:
//!
//! * `leader`: `read_sync` that misses, `insert_sync`, `remove_if_sync` by identity: what a lone
//!   leader of `Group` does (since the join takes the shared lock);
//! * `three`: the same with `get_sync` (the exclusive lock) for the lookup: the leader before;
//! * `entry`: `entry_sync` that finds a vacant entry and inserts, then `remove_if_sync`: the
//!   least a leader could do on scc if it could make its owned key before knowing it leads;
//! * `insert-remove`: `insert_sync`, `remove_if_sync`;
//! * `get`, `read`: `get_sync`, `read_sync` that miss;
//! * `hash`: nothing more;
//! * `mutex`: std `Mutex<hashbrown::HashMap>`, `entry_ref` that inserts, then `remove` (the
//!   mutex design's map operations).
//!
//! No operation allocates (the value is a `usize`): a leader's `Arc` of its flight comes on top.

use core::hash::{BuildHasher, Hash, Hasher};
use std::hint::black_box;

struct Slot {
    hash: u64,
    id: usize,
    key: u64,
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}
impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}
impl Eq for Slot {}

struct ByKey<'q> {
    hash: u64,
    key: &'q u64,
}
impl Hash for ByKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}
impl scc::Equivalent<Slot> for ByKey<'_> {
    fn equivalent(&self, slot: &Slot) -> bool {
        self.hash == slot.hash && *self.key == slot.key
    }
}

struct ById {
    hash: u64,
    id: usize,
}
impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}
impl scc::Equivalent<Slot> for ById {
    fn equivalent(&self, slot: &Slot) -> bool {
        self.hash == slot.hash && self.id == slot.id
    }
}

#[derive(Clone, Copy, Default)]
struct StoredHash;
impl BuildHasher for StoredHash {
    type Hasher = Stored;
    fn build_hasher(&self) -> Stored {
        Stored(0)
    }
}
struct Stored(u64);
impl Hasher for Stored {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!()
    }
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dry = args.last().is_some_and(|a| a == "--dry");
    let [op, hasher, calls, ..] = &args[..] else {
        eprintln!("usage: scc-floor OP HASHER CALLS [--dry]");
        std::process::exit(2);
    };
    let calls: u64 = calls.parse().expect("CALLS");
    match hasher.as_str() {
        "foldhash" => run(op, calls, dry, coalescer::DefaultHashBuilder::default()),
        "SipHash" => run(op, calls, dry, std::collections::hash_map::RandomState::new()),
        other => panic!("unknown hasher {other}: foldhash or SipHash"),
    }
}

fn run<S: BuildHasher + Clone>(op: &str, calls: u64, dry: bool, hasher: S) {
    let map: scc::HashMap<Slot, usize, StoredHash> = scc::HashMap::with_capacity_and_hasher(128, StoredHash);
    let mutex = std::sync::Mutex::new(hashbrown::HashMap::<u64, usize, _>::with_capacity_and_hasher(
        128,
        hasher.clone(),
    ));
    let keys: Vec<u64> = (0..calls).collect();
    black_box((&map, &mutex, &keys));
    if dry {
        return;
    }
    for key in &keys {
        let key = black_box(key);
        let id = black_box(*key as usize + 1);
        match op {
            "leader" => {
                let hash = hasher.hash_one(key);
                assert!(map.read_sync(&ByKey { hash, key }, |_, v| *v).is_none());
                assert!(map.insert_sync(Slot { hash, id, key: *key }, id).is_ok());
                black_box(map.remove_if_sync(&ById { hash, id }, |_| true));
            }
            "three" => {
                let hash = hasher.hash_one(key);
                assert!(map.get_sync(&ByKey { hash, key }).is_none());
                assert!(map.insert_sync(Slot { hash, id, key: *key }, id).is_ok());
                black_box(map.remove_if_sync(&ById { hash, id }, |_| true));
            }
            "entry" => {
                let hash = hasher.hash_one(key);
                match map.entry_sync(Slot { hash, id, key: *key }) {
                    scc::hash_map::Entry::Vacant(v) => drop(v.insert_entry(id)),
                    scc::hash_map::Entry::Occupied(_) => unreachable!(),
                }
                black_box(map.remove_if_sync(&ById { hash, id }, |_| true));
            }
            "insert-remove" => {
                let hash = hasher.hash_one(key);
                assert!(map.insert_sync(Slot { hash, id, key: *key }, id).is_ok());
                black_box(map.remove_if_sync(&ById { hash, id }, |_| true));
            }
            "get" => {
                let hash = hasher.hash_one(key);
                assert!(map.get_sync(&ByKey { hash, key }).is_none());
            }
            "read" => {
                let hash = hasher.hash_one(key);
                assert!(map.read_sync(&ByKey { hash, key }, |_, v| *v).is_none());
            }
            "hash" => {
                black_box(hasher.hash_one(key));
            }
            "mutex" => {
                {
                    let mut m = mutex.lock().unwrap();
                    match m.entry_ref(key) {
                        hashbrown::hash_map::EntryRef::Vacant(v) => drop(v.insert(id)),
                        hashbrown::hash_map::EntryRef::Occupied(_) => unreachable!(),
                    }
                }
                black_box(mutex.lock().unwrap().remove(key));
            }
            other => panic!("unknown op {other}"),
        }
    }
}
