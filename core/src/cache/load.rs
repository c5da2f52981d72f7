//! Reads and loads: what a read does with the slot it found, how a load is made a flight of
//! the group, and how a caller's wait for it ends.

use super::entry::{Slot, Verdict};
use super::error::Error;
use super::refresh::{BoxFuture, Refresh};
use super::served::{Read, Served};
use super::stats::Count;
use super::store::{Inner, Loaded};
use crate::futures::Timeout;
use crate::{Aborted, Outcome};
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};

/// What a caller of a load gets from the group.
pub(crate) type LoadOutput<V, E> = Result<Outcome<Loaded<V, E>>, Aborted>;

/// What a read found.
pub(crate) enum Lookup<V, E> {
    /// Served (or failed) without a load.
    Done(Result<Read<V>, Error<E>>),
    /// Served; this read starts the background refresh.
    Refresh(Read<V>),
    /// Wait for a load (`stale`: an expired value may be served if it fails or is slow).
    Load { stale: bool },
}

/// The generation a read saw (`None`: no entry). A load started for it first checks whether
/// the key was written since, and serves that value instead of loading again: a read that
/// saw the old slot just before a load wrote back and left does not start a second load.
pub(crate) type Seen = Option<u64>;

impl<K, V, E, S> Inner<K, V, E, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// The read's verdict on `key` at `now`, counted. Polls the slot's kept refresh on the way.
    pub(crate) fn lookup(&self, key: &K, now: u64) -> (Lookup<V, E>, Seen) {
        let Some(mut slot) = self.slot(key) else { return (Lookup::Load { stale: false }, None) };
        if self.drive(&slot) {
            // The kept refresh just finished (and may have written back): read again.
            match self.slot(key) {
                Some(again) => slot = again,
                None => return (Lookup::Load { stale: false }, None),
            }
        }
        let seen = Some(slot.generation);
        (self.judge(&slot, now), seen)
    }

    fn judge(&self, slot: &Slot<V, E>, now: u64) -> Lookup<V, E> {
        let verdict = slot.verdict(now, |slot| self.early(slot, now));
        let value = || slot.value().expect("a verdict that serves a value has one").clone();
        let (count, served) = match verdict {
            Verdict::Load { stale } => return Lookup::Load { stale },
            Verdict::Negative => {
                self.stats.record(Count::Hit);
                let super::entry::Stored::Negative(e) = &slot.stored else {
                    unreachable!("negative verdict")
                };
                return Lookup::Done(Err(Error::Negative(e.clone())));
            }
            Verdict::Fresh => (Count::Hit, Served::Fresh),
            Verdict::Refreshing => (Count::StaleHit, Served::Refreshing),
            Verdict::Throttled => {
                self.stats.record(Count::FailSafe);
                (Count::StaleHit, Served::StaleOnFailure)
            }
            Verdict::StartRefresh => {
                self.stats.record(Count::StaleHit);
                self.stats.record(Count::Refresh);
                return Lookup::Refresh(Read::new(value(), Served::Refreshing));
            }
        };
        self.stats.record(count);
        Lookup::Done(Ok(Read::new(value(), served)))
    }

    /// Whether an early refresh (XFetch) fires for this read of `slot`.
    fn early(&self, slot: &Slot<V, E>, now: u64) -> bool {
        let Some(beta) = self.config.early_refresh else { return false };
        let due = slot.refresh_at.min(slot.expires_at);
        let draw = (self.random)().clamp(f64::MIN_POSITIVE, 1.0);
        let ahead = slot.load_nanos as f64 * beta * -draw.ln();
        now as f64 + ahead >= due as f64
    }

    /// Polls the slot's kept refresh if it was woken; clears it from the slot once over.
    /// Returns whether it finished just now.
    pub(crate) fn drive(&self, slot: &Slot<V, E>) -> bool {
        let Some(refresh) = slot.refresh() else { return false };
        let done = refresh.drive();
        if done {
            drop(slot.clear_refresh(&refresh));
        }
        done
    }

    /// The key's value if it was written since the read that saw `seen` and is fresh at `now`.
    fn written_since(&self, key: &K, seen: Seen, now: u64) -> Option<V> {
        let slot = self.slot(key)?;
        if Some(slot.generation) == seen || now >= slot.refresh_at.min(slot.expires_at) {
            return None;
        }
        slot.value().cloned()
    }

    /// The work of a load of `key`: notes its ticket when the flight starts it, runs the
    /// loader, writes back. Holds the cache weakly (a load does not keep a dropped cache alive).
    fn work<F, Fut>(
        self: &Arc<Self>,
        key: K,
        seen: Seen,
        loader: F,
    ) -> impl FnOnce() -> BoxFuture<Loaded<V, E>> + Send + 'static
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let weak = Arc::downgrade(self);
        move || {
            let inner = weak.upgrade();
            if let Some(value) = inner.as_ref().and_then(|inner| inner.written_since(&key, seen, inner.now()))
            {
                let written: BoxFuture<Loaded<V, E>> = Box::pin(std::future::ready(Ok(value)));
                return written;
            }
            let ticket = inner.map(|inner| inner.ticket(&key));
            let fut = loader();
            let work: BoxFuture<Loaded<V, E>> = Box::pin(async move {
                let result = fut.await.map_err(Arc::new);
                if let (Some(ticket), Some(inner)) = (ticket, weak.upgrade()) {
                    inner.write_back(&key, ticket, &result);
                }
                result
            });
            work
        }
    }

    /// A waiter of `key`'s load, owned (it holds the group's `Arc`), in shared-work mode.
    pub(crate) fn load<F, Fut>(self: &Arc<Self>, key: K, seen: Seen, loader: F) -> BoxFuture<LoadOutput<V, E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let group = self.group.clone();
        let work = self.work(key.clone(), seen, loader);
        Box::pin(async move { group.work(&key, work).await })
    }

    /// Starts the background refresh of `key`: spawned when the cache has a spawner, kept by
    /// the slot and driven by later reads otherwise. Never waits.
    pub(crate) fn refresh<F, Fut>(self: &Arc<Self>, key: K, seen: Seen, loader: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some(spawn) = self.spawn.clone() {
            let work = self.work(key.clone(), seen, loader);
            let call = pin!(self.group.spawned(&key, spawn, work));
            // The first poll joins, and spawns the work when this call leads; then the call
            // leaves, and the detached work goes on by itself.
            let _ = call.poll(&mut Context::from_waker(Waker::noop()));
            return;
        }
        let Some(slot) = self.slot(&key) else { return };
        let fut = self.load(key, seen, loader);
        self.keep(&slot, fut);
    }

    /// Keeps a waiter of a load in the air in `slot`, so that later reads drive it, and polls it
    /// once. Drops it if the slot already keeps one.
    fn keep(&self, slot: &Slot<V, E>, fut: BoxFuture<LoadOutput<V, E>>) {
        let refresh = Refresh::new(Box::pin(async move {
            let _ = fut.await;
        }));
        if slot.keep(refresh.clone()).is_ok() {
            self.drive(slot);
        }
    }

    /// Waits for `key`'s load, within the timeouts, and says how the caller was served.
    pub(crate) async fn wait(
        self: &Arc<Self>,
        key: K,
        mut fut: BoxFuture<LoadOutput<V, E>>,
        stale: bool,
    ) -> Result<Read<V>, Error<E>> {
        self.stats.record(Count::Miss);
        let c = &self.config;
        let soft = c.soft_timeout.filter(|soft| stale && c.hard_timeout.is_none_or(|hard| *soft <= hard));
        let (Some(sleep), Some(limit)) = (&self.sleep, soft.or(c.hard_timeout)) else {
            return self.conclude(&key, fut.await);
        };
        match Timeout::new(&mut fut, (sleep.0)(limit)).await {
            Err(aborted) if aborted.is_timed_out() && soft.is_some() => self.soft_timed_out(key, fut).await,
            Err(aborted) if aborted.is_timed_out() => {
                // The load goes on for its other callers, and by itself when it can be spawned.
                if let Some(spawn) = &self.spawn {
                    drop(crate::Spawn::spawn(spawn, async move {
                        let _ = fut.await;
                    }));
                }
                Err(Error::TimedOut)
            }
            output => self.conclude(&key, output),
        }
    }

    /// The soft timeout fired: serve the stale value and leave the load to the slot.
    async fn soft_timed_out(
        self: &Arc<Self>,
        key: K,
        fut: BoxFuture<LoadOutput<V, E>>,
    ) -> Result<Read<V>, Error<E>> {
        let now = self.now();
        match self.slot(&key) {
            Some(slot) if slot.stale_usable(now) => {
                self.keep(&slot, fut);
                self.stats.record(Count::StaleHit);
                self.stats.record(Count::FailSafe);
                let value = slot.value().expect("a usable stale slot has a value").clone();
                Ok(Read::new(value, Served::StaleOnTimeout))
            }
            // The stale value is gone (invalidated, evicted): wait for the load after all.
            _ => self.conclude(&key, fut.await),
        }
    }

    /// How a caller that waited for a load is served: its value, the stale value if it failed
    /// (fail-safe), or the error.
    pub(crate) fn conclude(&self, key: &K, output: LoadOutput<V, E>) -> Result<Read<V>, Error<E>> {
        let outcome = output?;
        let served = if outcome.is_leader() { Served::Loaded } else { Served::Joined };
        match outcome.into_value() {
            Ok(value) => Ok(Read::new(value, served)),
            Err(error) => {
                let now = self.now();
                let Some(slot) = self.slot(key).filter(|slot| slot.stale_usable(now)) else {
                    return Err(Error::Failed(error));
                };
                self.stats.record(Count::FailSafe);
                let value = slot.value().expect("a usable stale slot has a value").clone();
                Ok(Read::new(value, Served::StaleOnFailure))
            }
        }
    }

    /// A blocking load of `key`: runs the loader on this thread when it leads.
    pub(crate) fn load_blocking<F>(self: &Arc<Self>, key: K, seen: Seen, loader: F) -> LoadOutput<V, E>
    where
        F: FnOnce() -> Result<V, E>,
    {
        self.group.work_blocking(&key, || {
            if let Some(value) = self.written_since(&key, seen, self.now()) {
                return Ok(value);
            }
            let ticket = self.ticket(&key);
            let result = loader().map_err(Arc::new);
            self.write_back(&key, ticket, &result);
            result
        })
    }

    /// The background refresh of a blocking read: spawned as a task when the cache has a
    /// spawner, on a thread of its own otherwise.
    pub(crate) fn refresh_blocking<F>(self: &Arc<Self>, key: K, seen: Seen, loader: F)
    where
        F: FnOnce() -> Result<V, E> + Send + 'static,
    {
        if self.spawn.is_some() {
            return self.refresh(key, seen, move || async move { loader() });
        }
        let inner = self.clone();
        std::thread::spawn(move || drop(inner.load_blocking(key, seen, loader)));
    }
}
