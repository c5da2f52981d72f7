//! A small TTL cache, and the *stable loader*: a cache whose misses go through a coalescing
//! group, so that an expired hot key costs one query however many requests miss at once.

use crate::db::{Db, QueryError, Report};
use coalescer::TryGroup;
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

/// Where a [`StableLoader`] found a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The cache had it.
    Cache,
    /// A flight of the group brought it (run by this call or shared with it).
    Flight,
}

/// The stable loader: cache first; on a miss, one coalesced query per key, whose leader fills
/// the cache.
///
/// A miss alone is not enough to stop a stampede: a burst of misses would each query. A group
/// alone is not enough either: it is not a cache, and every request that arrives after a flight
/// lands starts a new one. Together, a key costs one query per TTL.
#[derive(Debug)]
pub struct StableLoader {
    db: Arc<Db>,
    cache: Arc<TtlCache<i64, Arc<Report>>>,
    group: TryGroup<i64, Arc<Report>, QueryError>,
}

impl StableLoader {
    /// A loader over `db` whose reports stay fresh for `ttl`.
    pub fn new(db: Arc<Db>, ttl: Duration) -> Self {
        Self { db, cache: Arc::new(TtlCache::new(ttl)), group: TryGroup::new().named("cached") }
    }

    /// The group behind the cache, for its counters.
    pub fn group(&self) -> &TryGroup<i64, Arc<Report>, QueryError> {
        &self.group
    }

    /// The report for `category`, from the cache or from a coalesced query.
    pub async fn load(&self, category: i64) -> Result<(Arc<Report>, Source), coalescer::Error<QueryError>> {
        if let Some(report) = self.cache.get(&category) {
            return Ok((report, Source::Cache));
        }
        let (db, cache) = (self.db.clone(), self.cache.clone());
        let outcome = self
            .group
            .try_work_shared(category, move || async move {
                // Check again inside the flight: between this caller's miss and its joining,
                // the previous flight may have landed, filled the cache and left the group.
                // Without this check that caller would start a second query for a fresh key.
                if let Some(report) = cache.get(&category) {
                    return Ok(report);
                }
                let report = crate::burst::query(db, category).await?;
                // Filled once, by whichever caller drives the flight, before any waiter
                // is released: a request arriving after this line hits the cache.
                cache.insert(category, report.clone());
                Ok(report)
            })
            .await?;
        Ok((outcome.into_value(), Source::Flight))
    }
}
