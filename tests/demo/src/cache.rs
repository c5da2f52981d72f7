//! A small TTL cache (the naive one), and the *stable loader*: `coalescer::cache`, whose misses
//! go through a coalescing group, so that an expired hot key costs one query however many
//! requests miss at once.

use crate::db::{Db, QueryError, Report};
use coalescer::cache::Served;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A map whose entries expire `ttl` after they were stored. Expired entries are dropped as they
/// are read; a real service would bound the size as well.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// An empty cache whose entries live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The value stored for `key`, unless it is missing or expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((stored, value)) if stored.elapsed() < self.ttl => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `key`, fresh for the next `ttl`.
    pub fn insert(&self, key: K, value: V) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).insert(key, (Instant::now(), value));
    }
}

/// The stable loader: [`coalescer::cache::Cache`], whose every load is a coalesced flight.
///
/// A miss alone is not enough to stop a stampede: a burst of misses would each query. A group
/// alone is not enough either: it is not a cache, and every request that arrives after a flight
/// lands starts a new one. The cache is both: a key costs one query per TTL, whatever the burst.
/// (The hand-written [`TtlCache`] above is the naive cache of the expiry-edge scenario.)
#[derive(Debug)]
pub struct StableLoader {
    db: Arc<Db>,
    cache: coalescer::cache::Cache<i64, Arc<Report>, QueryError>,
}

impl StableLoader {
    /// A loader over `db` whose reports stay fresh for `ttl`.
    pub fn new(db: Arc<Db>, ttl: Duration) -> Self {
        let cache = coalescer::cache::Cache::builder().named("cached").time_to_live(ttl).build();
        Self { db, cache }
    }

    /// The cache, for its counters.
    pub fn cache(&self) -> &coalescer::cache::Cache<i64, Arc<Report>, QueryError> {
        &self.cache
    }

    /// The report for `category`, from the cache or from a coalesced query, and how it was
    /// served (from the cache, or by a load this call ran or joined).
    pub async fn load(
        &self,
        category: i64,
    ) -> Result<(Arc<Report>, Served), coalescer::cache::Error<QueryError>> {
        let db = self.db.clone();
        let read = self.cache.try_get_with(category, move || crate::burst::query(db, category)).await?;
        let served = read.served();
        Ok((read.into_value(), served))
    }
}
