//! The `cache_ops` target: operation sequences of `coalescer::cache::Cache` (get, advance the
//! clock, complete or fail a load, invalidate, insert, poll, drop a caller) over 3 keys,
//! checked after every step against a small model of the cache's contract:
//!
//! * **one load per key at a time**: a loader never starts while another load of its key runs,
//!   unless an `invalidate` or `insert` of the key came in between (they detach the old load);
//! * **what the cache holds** (`peek`) is what the model says: a load's value is written when
//!   the load returns, with the clock's time plus the TTL, unless an `invalidate` or `insert`
//!   of the key came since it started (then it is kept out); an error writes nothing (no
//!   negative caching here); an insert writes; an invalidate removes. One case is left open on
//!   purpose: a load that started with its key vacant may be kept out by the removal of
//!   *another* key's newer entry (the cache's conservative stripe marks), so after an
//!   invalidate of any key the model accepts both outcomes and learns which from `peek`;
//! * **a fresh hit never loads**: a get of a key the model holds unexpired completes on its
//!   first poll, with the held value, served fresh (or refreshing, past `refresh_after`);
//! * **what callers get**: a value this key's loads or inserts produced, or the error of a
//!   failed load of this key; never `Aborted` (no loader panics here) or a timeout;
//! * **nobody is stranded**: at the end, once every load is let finish and every caller is
//!   polled, every caller has its result, no load is left running, and no flight is in the
//!   air.
//!
//! Futures are polled by hand with a no-op waker (loads' wakes raise the cache's own flags),
//! so a run is deterministic.

use arbitrary::{Arbitrary, Unstructured};
use coalescer::cache::{Cache, Clock, Error, ManualClock, Read, Served};
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Keys in play.
const KEYS: u8 = 3;
/// The TTL and `refresh_after`, in clock milliseconds.
const TTL: u64 = 10;
const REFRESH: u64 = 5;
/// Longer inputs are cut here.
pub const MAX_CACHE_OPS: usize = 96;

/// One operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are named after what they are
pub enum CacheOp {
    /// A new caller reads `key` (polled once).
    Get { key: u8 },
    /// Polls a pending caller again.
    Poll { caller: u8 },
    /// Moves the clock forward.
    Advance { ms: u8 },
    /// The oldest running load of `key` returns (a value, or an error).
    Complete { key: u8, ok: bool },
    /// `invalidate(key)`.
    Invalidate { key: u8 },
    /// `insert(key, fresh value)`.
    Insert { key: u8 },
    /// Drops a caller's future (finished or not).
    Drop { caller: u8 },
}

impl<'a> Arbitrary<'a> for CacheOp {
    /// Weighted toward gets and completions (the contract is about loads in the air), with
    /// small clock steps (so that reads land before, within and after the refresh window).
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let (pick, key, arg) = (u.int_in_range(0..=19u8)?, u8::arbitrary(u)?, u8::arbitrary(u)?);
        Ok(match pick {
            0..=5 => Self::Get { key },
            6..=9 => Self::Complete { key, ok: arg % 4 != 0 },
            10..=11 => Self::Poll { caller: arg },
            12..=14 => Self::Advance { ms: arg % 8 },
            15 => Self::Invalidate { key },
            16 => Self::Insert { key },
            _ => Self::Drop { caller: arg },
        })
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (3, Some(3))
    }
}

/// A fuzz input of the `cache_ops` target.
#[derive(Clone, Debug)]
pub struct CacheOps {
    /// Whether the cache refreshes ahead (`refresh_after`).
    pub refresh: bool,
    /// The operations.
    pub ops: Vec<CacheOp>,
}

impl CacheOps {
    /// Decodes an input: a flag byte, then three bytes per operation, up to [`MAX_CACHE_OPS`].
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let refresh = u.arbitrary::<u8>().is_ok_and(|b| b % 2 == 1);
        let mut ops = Vec::new();
        while ops.len() < MAX_CACHE_OPS {
            match CacheOp::arbitrary(&mut u) {
                Ok(op) if !u.is_empty() || ops.len() < MAX_CACHE_OPS => ops.push(op),
                _ => break,
            }
            if u.is_empty() {
                break;
            }
        }
        Self { refresh, ops }
    }
}

type Result_ = Result<Read<u64>, Error<u8>>;
type Call = Pin<Box<dyn Future<Output = Result_> + Send>>;
type C = Cache<u8, u64, u8, BuildHasherDefault<DefaultHasher>>;

/// How a load under the driver's control ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoadState {
    Running,
    /// Told to return; `ok` says how.
    Told {
        ok: bool,
    },
    Returned,
    Dropped,
}

struct Load {
    key: u8,
    value: u64,
    state: LoadState,
    /// An invalidate or insert of its key came since it started.
    detached: bool,
    /// How many invalidations (of any key) there were when it started.
    invalidations: u64,
    /// Who to wake when it is told to return.
    waker: Option<Waker>,
}

impl Load {
    fn tell(&mut self, ok: bool) {
        self.state = LoadState::Told { ok };
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A state the model holds possible for a key: `(value, expires_at)`, or nothing.
type Held = Option<(u64, u64)>;

#[derive(Default)]
struct Shared {
    loads: Vec<Load>,
    /// Every value produced per key (loads and inserts).
    produced: Vec<Vec<u64>>,
    /// Possible states per key (more than one only after the ambiguous case above).
    model: Vec<Vec<Held>>,
    invalidations: u64,
    next_value: u64,
    violation: Option<String>,
}

impl Shared {
    fn fail(&mut self, what: String) {
        self.violation.get_or_insert(what);
    }
}

/// A loader whose future the driver ends.
struct Loader {
    shared: Arc<Mutex<Shared>>,
    clock: Arc<ManualClock>,
    index: usize,
}

impl Future for Loader {
    type Output = Result<u64, u8>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.shared.lock().unwrap();
        let now = self.clock.now().as_millis() as u64;
        let load = &mut s.loads[self.index];
        let LoadState::Told { ok } = load.state else {
            load.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        load.state = LoadState::Returned;
        let (key, value, detached, since) = (load.key, load.value, load.detached, load.invalidations);
        if !ok {
            return Poll::Ready(Err(key));
        }
        // The cache writes back right after this returns, at this clock reading.
        let written = Some((value, now + TTL));
        let ambiguous = since != s.invalidations;
        let states = &mut s.model[key as usize];
        if !detached {
            if ambiguous {
                states.push(written);
            } else {
                *states = vec![written];
            }
            dedup(states);
        }
        Poll::Ready(Ok(value))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let mut s = self.shared.lock().unwrap();
        let load = &mut s.loads[self.index];
        if load.state != LoadState::Returned {
            load.state = LoadState::Dropped;
        }
    }
}

fn dedup(states: &mut Vec<Held>) {
    states.sort();
    states.dedup();
}

struct Caller {
    key: u8,
    call: Option<Call>,
    result: Option<Result_>,
}

/// What a run did, for the smoke test's coverage check.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheSummary {
    /// Loader executions.
    pub loads: u64,
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads served while refreshing.
    pub refreshing: u64,
    /// Loads detached by an invalidate or insert.
    pub detached: u64,
    /// Loads that failed.
    pub failures: u64,
}

struct Driver {
    cache: C,
    clock: Arc<ManualClock>,
    shared: Arc<Mutex<Shared>>,
    callers: Vec<Caller>,
    summary: CacheSummary,
}

impl Driver {
    fn new(refresh: bool) -> Self {
        let clock = Arc::new(ManualClock::new());
        let builder =
            Cache::builder().clock(clock.clone()).time_to_live(ms(TTL)).hasher(BuildHasherDefault::default());
        let cache = if refresh { builder.refresh_after(ms(REFRESH)).build() } else { builder.build() };
        let shared = Shared {
            produced: vec![Vec::new(); KEYS as usize],
            model: vec![vec![None]; KEYS as usize],
            next_value: 1,
            ..Shared::default()
        };
        Self {
            cache,
            clock,
            shared: Arc::new(Mutex::new(shared)),
            callers: Vec::new(),
            summary: CacheSummary::default(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().as_millis() as u64
    }

    /// A loader for `key`: registers its execution (checking that it overlaps no attached
    /// load of the key) when the cache calls it.
    fn loader(&self, key: u8) -> impl FnOnce() -> Loader + Send + 'static {
        let (shared, clock) = (self.shared.clone(), self.clock.clone());
        move || {
            let mut s = shared.lock().unwrap();
            if s.loads.iter().any(|l| {
                l.key == key && matches!(l.state, LoadState::Running | LoadState::Told { .. }) && !l.detached
            }) {
                s.fail(format!("a second load of key {key} started while one was running"));
            }
            let value = s.next_value;
            s.next_value += 1;
            s.produced[key as usize].push(value);
            let invalidations = s.invalidations;
            s.loads.push(Load {
                key,
                value,
                state: LoadState::Running,
                detached: false,
                invalidations,
                waker: None,
            });
            let index = s.loads.len() - 1;
            drop(s);
            Loader { shared, clock, index }
        }
    }

    fn poll(&mut self, index: usize) {
        let caller = &mut self.callers[index];
        let Some(call) = caller.call.as_mut() else { return };
        if caller.result.is_some() {
            return;
        }
        if let Poll::Ready(result) = call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            caller.result = Some(result);
            self.check_result(index);
        }
    }

    fn check_result(&mut self, index: usize) {
        let caller = &self.callers[index];
        let (key, result) = (caller.key, caller.result.clone().expect("checked when finished"));
        let mut s = self.shared.lock().unwrap();
        match result {
            Ok(read) => {
                if !s.produced[key as usize].contains(read.value()) {
                    s.fail(format!(
                        "key {key}: a caller got {}, which no load or insert of it produced",
                        read.value()
                    ));
                }
                match read.served() {
                    Served::Fresh => self.summary.hits += 1,
                    Served::Refreshing => self.summary.refreshing += 1,
                    _ => {}
                }
            }
            Err(Error::Failed(_)) => {}
            Err(other) => s.fail(format!("key {key}: a caller got {other:?}")),
        }
    }

    fn get(&mut self, key: u8) {
        let now = self.now();
        // What the model promises: an unexpired value is served at once, without a load.
        let promised = {
            let s = self.shared.lock().unwrap();
            let states = &s.model[key as usize];
            match states.as_slice() {
                [Some((value, expires))] if now < *expires => Some(*value),
                _ => None,
            }
        };
        let (loads_before, returned_before) = {
            let s = self.shared.lock().unwrap();
            (s.loads.len(), s.loads.iter().map(|l| l.state == LoadState::Returned).collect::<Vec<_>>())
        };
        let (cache, loader) = (self.cache.clone(), self.loader(key));
        let call: Call = Box::pin(async move { cache.try_get_with(key, loader).await });
        self.callers.push(Caller { key, call: Some(call), result: None });
        let index = self.callers.len() - 1;
        self.poll(index);
        if let Some(value) = promised {
            let got = self.callers[index].result.clone();
            let mut s = self.shared.lock().unwrap();
            // The read may have driven a refresh kept by the entry to its end, and been served
            // the refreshed value: a load of this key that returned during this poll.
            let refreshed: Vec<u64> = s.loads[..loads_before]
                .iter()
                .zip(&returned_before)
                .filter(|(l, before)| l.key == key && l.state == LoadState::Returned && !**before)
                .map(|(l, _)| l.value)
                .collect();
            let ok = matches!(&got, Some(Ok(read))
                if (*read.value() == value || refreshed.contains(read.value()))
                    && matches!(read.served(), Served::Fresh | Served::Refreshing));
            if !ok {
                s.fail(format!("key {key}: a hit on {value} (now {now}) was served {got:?}"));
            }
            let refreshing = matches!(&got, Some(Ok(read)) if read.served() == Served::Refreshing);
            if !refreshing && s.loads.len() != loads_before {
                s.fail(format!("key {key}: a fresh hit started a load"));
            }
        }
    }

    fn complete(&mut self, key: u8, ok: bool) {
        let mut s = self.shared.lock().unwrap();
        if let Some(load) = s.loads.iter_mut().find(|l| l.key == key && l.state == LoadState::Running) {
            load.tell(ok);
            if !ok {
                self.summary.failures += 1;
            }
        }
        drop(s);
        // The callers that wait for it drive it (a kept refresh is driven by the next get).
        for index in 0..self.callers.len() {
            self.poll(index);
        }
    }

    fn detach(&mut self, key: u8, write: Held, invalidate: bool) {
        let mut s = self.shared.lock().unwrap();
        for load in s
            .loads
            .iter_mut()
            .filter(|l| l.key == key && !matches!(l.state, LoadState::Returned | LoadState::Dropped))
        {
            if !load.detached {
                self.summary.detached += 1;
            }
            load.detached = true;
        }
        if invalidate {
            s.invalidations += 1;
        }
        if let Some((value, _)) = write {
            s.produced[key as usize].push(value);
        }
        s.model[key as usize] = vec![write];
    }

    fn step(&mut self, op: CacheOp) {
        match op {
            CacheOp::Get { key } => self.get(key % KEYS),
            CacheOp::Poll { caller } => {
                if !self.callers.is_empty() {
                    self.poll(caller as usize % self.callers.len());
                }
            }
            CacheOp::Advance { ms: by } => self.clock.advance(ms(u64::from(by % 16))),
            CacheOp::Complete { key, ok } => self.complete(key % KEYS, ok),
            CacheOp::Invalidate { key } => {
                let key = key % KEYS;
                self.cache.invalidate(&key);
                self.detach(key, None, true);
            }
            CacheOp::Insert { key } => {
                let key = key % KEYS;
                let value = {
                    let mut s = self.shared.lock().unwrap();
                    s.next_value += 1;
                    s.next_value - 1
                };
                self.cache.insert(key, value);
                let now = self.now();
                self.detach(key, Some((value, now + TTL)), false);
            }
            CacheOp::Drop { caller } => {
                if !self.callers.is_empty() {
                    let index = caller as usize % self.callers.len();
                    drop(self.callers[index].call.take());
                }
            }
        }
        self.check_held();
    }

    /// `peek` agrees with one of the model's states; the model keeps those that agree.
    fn check_held(&mut self) {
        let now = self.now();
        for key in 0..KEYS {
            let seen = self.cache.peek(&key);
            let mut s = self.shared.lock().unwrap();
            let states = &mut s.model[key as usize];
            let agrees = |held: &Held| match held {
                Some((value, expires)) if now < *expires => seen == Some(*value),
                _ => seen.is_none(),
            };
            let before = states.clone();
            states.retain(agrees);
            if states.is_empty() {
                s.fail(format!("key {key} at {now}: the cache holds {seen:?}, the model {before:?}"));
            }
        }
    }

    /// Lets every load finish and polls everyone until nothing moves; then nobody may be left.
    fn finish(&mut self) {
        for _ in 0..64 {
            let mut s = self.shared.lock().unwrap();
            for load in s.loads.iter_mut().filter(|l| l.state == LoadState::Running) {
                load.tell(true);
            }
            drop(s);
            for index in 0..self.callers.len() {
                self.poll(index);
            }
            // A get per key drives a refresh kept by its entry.
            for key in 0..KEYS {
                let (cache, loader) = (self.cache.clone(), self.loader(key));
                let mut call: Call = Box::pin(async move { cache.try_get_with(key, loader).await });
                for _ in 0..4 {
                    if call.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready() {
                        break;
                    }
                    let mut s = self.shared.lock().unwrap();
                    for load in s.loads.iter_mut().filter(|l| l.state == LoadState::Running) {
                        load.tell(true);
                    }
                }
            }
            let s = self.shared.lock().unwrap();
            let running =
                s.loads.iter().any(|l| matches!(l.state, LoadState::Running | LoadState::Told { .. }));
            drop(s);
            let waiting = self.callers.iter().any(|c| c.call.is_some() && c.result.is_none());
            if !running && !waiting && self.cache.loading() == 0 {
                return;
            }
        }
        let s = self.shared.lock().unwrap();
        let running: Vec<_> = s
            .loads
            .iter()
            .filter(|l| !matches!(l.state, LoadState::Returned | LoadState::Dropped))
            .map(|l| (l.key, l.state))
            .collect();
        drop(s);
        let waiting = self.callers.iter().filter(|c| c.call.is_some() && c.result.is_none()).count();
        self.shared.lock().unwrap().fail(format!(
            "stranded: {waiting} callers waiting, loads {running:?}, {} flights in the air",
            self.cache.loading()
        ));
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `input`; returns what it did, or the first broken promise.
pub fn run_cache_ops(input: &CacheOps) -> Result<CacheSummary, String> {
    let mut driver = Driver::new(input.refresh);
    for (step, op) in input.ops.iter().take(MAX_CACHE_OPS).enumerate() {
        driver.step(*op);
        if let Some(v) = driver.shared.lock().unwrap().violation.take() {
            return Err(format!("step {step} ({op:?}): {v}\nops: {:?}", &input.ops[..=step]));
        }
    }
    driver.finish();
    if let Some(v) = driver.shared.lock().unwrap().violation.take() {
        return Err(format!("at the end: {v}\nops: {:?}", input.ops));
    }
    driver.summary.loads = driver.shared.lock().unwrap().loads.len() as u64;
    Ok(driver.summary)
}

/// The target's body: panics with the broken promise.
pub fn check_cache_ops(data: &[u8]) {
    let input = CacheOps::decode(data);
    if let Err(violation) = run_cache_ops(&input) {
        panic!("{violation}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_cache_ops_keep_the_contract() {
        let mut total = CacheSummary::default();
        for seed in 0..4000u64 {
            let data = crate::pseudo_random_bytes(seed, 32 + (seed as usize % 300));
            match run_cache_ops(&CacheOps::decode(&data)) {
                Ok(s) => {
                    total.loads += s.loads;
                    total.hits += s.hits;
                    total.refreshing += s.refreshing;
                    total.detached += s.detached;
                    total.failures += s.failures;
                }
                Err(v) => panic!("seed {seed}: {v}"),
            }
        }
        eprintln!("{total:?}");
        // The smoke run reached every behaviour it is about.
        assert!(total.loads > 0 && total.hits > 0 && total.refreshing > 0, "{total:?}");
        assert!(total.detached > 0 && total.failures > 0, "{total:?}");
    }
}

#[cfg(test)]
mod scenarios {
    use super::*;

    #[test]
    fn a_get_past_refresh_after_is_served_refreshing() {
        let ops = vec![
            CacheOp::Get { key: 0 },
            CacheOp::Complete { key: 0, ok: true },
            CacheOp::Advance { ms: 6 },
            CacheOp::Get { key: 0 },
            CacheOp::Get { key: 0 },
        ];
        let summary = run_cache_ops(&CacheOps { refresh: true, ops }).unwrap();
        assert_eq!(summary.refreshing, 2, "{summary:?}");
    }
}
