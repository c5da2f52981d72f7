//! Batches: [`Group::work_batch`] fetches many keys in one call, and each key is still a flight
//! of its own, so that keys already in the air are joined and never fetched twice.
//!
//! # The mechanism
//!
//! A batch call joins every key's flight in shared-work mode. Keys already in flight (from
//! single calls or other batches) are followed. For the keys it leads, it makes one [`Batch`]:
//! an `Arc` that owns the user's fetch future for all of them, one result slot and one waker
//! slot per key. Each led key's flight gets a small shared work future, its [`Part`] ("my part
//! of the batch"), which is what the flight's waiters drive:
//!
//! * polling a part polls the fetch, when the fetch wants polling and nobody else is polling it
//!   (a try-lock, `POLLING`), with a waker that wakes every part's flight: so any waiter of any
//!   key of the batch drives the fetch, and a stalled or dropped caller holds nobody up;
//! * when the fetch returns, its output is split into one value per key, the fetch is dropped,
//!   every slot is filled and every part's flight is woken; each part then returns its key's
//!   value, which ends its flight the ordinary way;
//! * a part dropped (its flight abandoned by its last waiter, or finished) counts itself out;
//!   the last part out drops the fetch. So the fetch is dropped only when every waiter of every
//!   key of the batch has left, or when it has finished.
//!
//! # Access protocol of a [`Batch`]
//!
//! * `state` holds `POLLING` (a part is polling the fetch: the one holder of `fetch`),
//!   `NOTIFIED` (the fetch's waker fired since its last poll; set at first, so that the first
//!   part polled polls it) and `DONE` (every slot is filled; final).
//! * `fetch` is touched by the holder of `POLLING`, or by the last part out (the count of parts
//!   at zero: nobody can poll any more, since polls happen inside parts).
//! * `slots` (a lock held for a few moves, never while user code runs) holds the results, taken
//!   once each by their part, and the wakers of the parts' flights.
//!
//! The wake protocol is the flight's own one level up: a part polled while another polls the
//! fetch, or while the fetch does not want polling, returns `Pending` with its waker registered
//! first; the fetch's waker wakes every part when nobody polls the fetch, and otherwise the
//! part that polls it wakes them all once its poll returns.

use crate::flight::{BoxedWork, Flight, Mode, Owned};
use crate::group::{DefaultHashBuilder, Group};
use crate::handle::{Driven, Handle, NotJoined};
use crate::outcome::{Aborted, Error, Outcome, split_try};
use crate::sync::{
    Arc, AtomicUsize, Mutex,
    Ordering::{AcqRel, Acquire},
    StdArc, UnsafeCell,
};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use event_listener::EventListener;
use pin_project_lite::pin_project;
use std::collections::HashMap;

/// The value of a fallible batch's keys.
type TryValue<T, E> = Result<Option<T>, StdArc<E>>;

/// A caller's place in a flight of a group.
type GroupHandle<'a, K, V, S> = Handle<Group<K, V, S>, &'a Group<K, V, S>>;

/// The fetch of a batch, boxed: its output is already split into one value per key, each with
/// the place of its part in the batch.
pub(crate) type BoxFetch<V> = Pin<Box<dyn Future<Output = Vec<(usize, V)>> + Send>>;

const POLLING: usize = 1;
const NOTIFIED: usize = 1 << 1;
const DONE: usize = 1 << 2;

/// The keys a batch fetches, each with its place in the batch (internal; public only so that
/// it can appear in [`FetchMany`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct KeyIndex<K> {
    places: HashMap<K, usize, DefaultHashBuilder>,
    len: usize,
}

impl<K: Hash + Eq + Clone> KeyIndex<K> {
    /// The index of `keys` (the keys' `Clone`, `Hash` and `Eq` run here).
    pub(crate) fn new(keys: &[K]) -> Self {
        let mut places = HashMap::with_capacity_and_hasher(keys.len(), DefaultHashBuilder::default());
        for (place, key) in keys.iter().enumerate() {
            places.entry(key.clone()).or_insert(place);
        }
        Self { places, len: keys.len() }
    }

    /// Puts each returned item in its key's place: keys the batch did not ask for are dropped,
    /// the first item of a key returned twice wins, and a key not returned gets `None`.
    fn place<T>(&self, items: impl IntoIterator<Item = (K, T)>) -> Vec<Option<T>> {
        let mut values: Vec<Option<T>> = (0..self.len).map(|_| None).collect();
        for (key, value) in items {
            if let Some(&place) = self.places.get(&key) {
                values[place].get_or_insert(value);
            }
        }
        values
    }

    /// How many keys the batch fetches.
    fn len(&self) -> usize {
        self.len
    }
}

/// How a batch call's closure fetches many keys and how its output becomes each key's value:
/// implemented for the closures of [`Group::work_batch`] and [`Group::try_work_batch`]
/// (internal; public only so that it can appear in the bounds of [`WorkBatch`]).
#[doc(hidden)]
pub trait FetchMany<K, V> {
    /// The fetch.
    type Future: Future + Send + 'static;

    /// Calls the closure with the keys to fetch.
    fn fetch(&self, keys: Vec<K>) -> Self::Future;

    /// One value per key of `keys`, in its order, from the fetch's output.
    fn split(output: <Self::Future as Future>::Output, keys: &KeyIndex<K>) -> Vec<V>;
}

impl<K, V, M: FetchMany<K, V>> FetchMany<K, V> for &M {
    type Future = M::Future;

    fn fetch(&self, keys: Vec<K>) -> M::Future {
        (**self).fetch(keys)
    }

    fn split(output: <M::Future as Future>::Output, keys: &KeyIndex<K>) -> Vec<V> {
        M::split(output, keys)
    }
}

/// The closure of [`Group::work_batch`] (internal).
#[doc(hidden)]
#[derive(Debug)]
pub struct Many<F>(pub(crate) F);

/// The closure of [`Group::try_work_batch`] (internal).
#[doc(hidden)]
#[derive(Debug)]
pub struct TryMany<F>(pub(crate) F);

impl<K, T, F, Fut, I> FetchMany<K, Option<T>> for Many<F>
where
    K: Hash + Eq + Clone,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = I> + Send + 'static,
    I: IntoIterator<Item = (K, T)>,
{
    type Future = Fut;

    fn fetch(&self, keys: Vec<K>) -> Fut {
        (self.0)(keys)
    }

    fn split(output: I, keys: &KeyIndex<K>) -> Vec<Option<T>> {
        keys.place(output)
    }
}

impl<K, T, E, F, Fut, I> FetchMany<K, Result<Option<T>, StdArc<E>>> for TryMany<F>
where
    K: Hash + Eq + Clone,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<I, E>> + Send + 'static,
    I: IntoIterator<Item = (K, T)>,
{
    type Future = Fut;

    fn fetch(&self, keys: Vec<K>) -> Fut {
        (self.0)(keys)
    }

    fn split(output: Result<I, E>, keys: &KeyIndex<K>) -> Vec<Result<Option<T>, StdArc<E>>> {
        match output {
            Ok(items) => keys.place(items).into_iter().map(Ok).collect(),
            Err(e) => {
                let e = StdArc::new(e);
                (0..keys.len()).map(|_| Err(e.clone())).collect()
            }
        }
    }
}

pin_project! {
    /// The user's fetch, whose output is split into one value per key, each with its part's
    /// place in the batch (boxed into a batch).
    struct Split<Fut: Future, K, V> {
        #[pin]
        fut: Fut,
        keys: KeyIndex<K>,
        places: Vec<usize>,
        split: fn(Fut::Output, &KeyIndex<K>) -> Vec<V>,
    }
}

impl<Fut: Future, K, V> Future for Split<Fut, K, V> {
    type Output = Vec<(usize, V)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = core::task::ready!(this.fut.poll(cx));
        let values = (this.split)(output, this.keys);
        Poll::Ready(core::mem::take(this.places).into_iter().zip(values).collect())
    }
}

/// Makes the boxed fetch of `keys`, whose values go to the parts at `places` (user code: the
/// closure, and the keys' `Clone`, `Hash` and `Eq`; the caller catches a panic).
pub(crate) fn make_fetch<K, V, M>(fetch: &M, keys: Vec<K>, places: Vec<usize>) -> BoxFetch<V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: 'static,
    M: FetchMany<K, V>,
{
    let index = KeyIndex::new(&keys);
    Box::pin(Split { fut: fetch.fetch(keys), keys: index, places, split: M::split })
}

/// One fetch shared by the flights of several keys (see the module's access protocol).
pub(crate) struct Batch<V> {
    state: AtomicUsize,
    /// Parts not dropped yet; the last one out drops the fetch.
    parts: AtomicUsize,
    fetch: UnsafeCell<Option<BoxFetch<V>>>,
    slots: Mutex<Slots<V>>,
}

/// What a batch hands to each part: its result, and the waker of the flight it belongs to;
/// and which parts have been dropped (a batcher leaves their keys out of its fetch).
struct Slots<V> {
    results: Vec<Option<Result<V, Aborted>>>,
    wakers: Vec<Option<Waker>>,
    left: Vec<bool>,
}

// SAFETY: `fetch` is reached by one thread at a time (the holder of `POLLING`, or the last part
// out, when nobody can poll); results and wakers move through the `slots` lock. So sharing a
// batch needs only `V: Send` (a value moves from the thread that fetched to the one that reads).
unsafe impl<V: Send> Sync for Batch<V> {}

impl<V: Send + Sync + 'static> Batch<V> {
    /// A batch of `n` keys fetched by `fetch`, as its `n` parts (the key at place `i` gets the
    /// `i`-th).
    pub(crate) fn parts(fetch: BoxFetch<V>, n: usize) -> Vec<Part<V>> {
        Self::with(Some(fetch), None, n)
    }

    /// A batch whose fetch could not even be made (the closure or a key's `Hash`/`Eq`
    /// panicked): each part ends its flight with `aborted`.
    pub(crate) fn failed(aborted: &Aborted, n: usize) -> Vec<Part<V>> {
        Self::with(None, Some(aborted), n)
    }

    fn with(fetch: Option<BoxFetch<V>>, failed: Option<&Aborted>, n: usize) -> Vec<Part<V>> {
        let state = if failed.is_some() { DONE } else { NOTIFIED };
        let batch = Arc::new(Self {
            state: AtomicUsize::new(state),
            parts: AtomicUsize::new(n),
            fetch: UnsafeCell::new(fetch),
            slots: Mutex::new(Slots {
                results: (0..n).map(|_| failed.map(|a| Err(a.clone()))).collect(),
                wakers: (0..n).map(|_| None).collect(),
                left: alloc::vec![false; n],
            }),
        });
        (0..n).map(|place| Part { batch: batch.clone(), place }).collect()
    }

    /// A batch that collects keys (a batcher's): its first part, with the fetch that `make`
    /// makes from the batch (it reads which parts are left when its window closes).
    pub(crate) fn collecting(make: impl FnOnce(&Arc<Self>) -> BoxFetch<V>) -> Part<V> {
        let part = Self::with(None, None, 1).pop().expect("one part");
        let fetch = make(&part.batch);
        // SAFETY: the one part is not installed in any flight yet, so nobody polls the batch.
        part.batch.fetch.with_mut(|slot| unsafe { *slot = Some(fetch) });
        part
    }

    /// One more part, at the next place; `None` once every part has been dropped (the batch,
    /// abandoned, has dropped its fetch). The caller (a batcher) holds the lock of the batch's
    /// key list, so that places and keys stay in step.
    pub(crate) fn add_part(this: &Arc<Self>) -> Option<Part<V>> {
        // Never up from zero: an abandoned batch stays abandoned.
        this.parts.fetch_update(AcqRel, Acquire, |n| (n > 0).then_some(n + 1)).ok()?;
        let place = this.slots.with(|s| {
            s.results.push(None);
            s.wakers.push(None);
            s.left.push(false);
            s.left.len() - 1
        });
        Some(Part { batch: this.clone(), place })
    }

    /// Which of the first `n` parts are still there (not dropped).
    pub(crate) fn present(&self, n: usize) -> Vec<bool> {
        self.slots.with(|s| s.left.iter().take(n).map(|left| !left).collect())
    }

    /// Polls part `place`: its result if the batch is done, else the fetch once if it wants
    /// polling and nobody else polls it.
    fn poll_part(this: &Arc<Self>, place: usize, cx: &mut Context<'_>) -> Poll<Result<V, Aborted>> {
        // Register first, then check the state (never check-then-register). The waker is
        // cloned, and the one it replaces dropped, outside the lock (an executor's code).
        let waker = cx.waker().clone();
        let (ready, unused) = this.slots.with(|s| match s.results[place].take() {
            Some(result) => (Some(result), Some(waker)),
            None => match &s.wakers[place] {
                Some(w) if w.will_wake(&waker) => (None, Some(waker)),
                _ => (None, s.wakers[place].replace(waker)),
            },
        });
        drop(unused);
        if let Some(result) = ready {
            return Poll::Ready(result);
        }
        let mut s = this.state.load(Acquire);
        loop {
            if s & DONE != 0 {
                let result = this.slots.with(|s| s.results[place].take());
                return Poll::Ready(result.expect("a done batch filled every slot, each taken once"));
            }
            if s & POLLING != 0 || s & NOTIFIED == 0 {
                // Someone polls the fetch now, or it holds the batch's waker: either will wake
                // every part.
                return Poll::Pending;
            }
            match this.state.compare_exchange_weak(s, (s | POLLING) & !NOTIFIED, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        Self::poll_fetch(this, place)
    }

    /// Polls the fetch; the caller holds `POLLING`.
    fn poll_fetch(this: &Arc<Self>, place: usize) -> Poll<Result<V, Aborted>> {
        let waker = Waker::from(StdArc::new(BatchWaker(this.clone())));
        let mut cx = Context::from_waker(&waker);
        let polled = crate::sync::catch(|| {
            // SAFETY: the caller holds `POLLING`: the one reference to the slot. The fetch stays
            // pinned in its box.
            this.fetch.with_mut(|fetch| match unsafe { &mut *fetch } {
                Some(fetch) => fetch.as_mut().poll(&mut cx),
                None => unreachable!("a batch that is not done still has its fetch"),
            })
        });
        match polled {
            Ok(Poll::Pending) => {
                if this.state.fetch_and(!POLLING, AcqRel) & NOTIFIED != 0 {
                    // The fetch's waker fired during the poll and told nobody.
                    this.wake_parts();
                }
                Poll::Pending
            }
            Ok(Poll::Ready(values)) => {
                let (own, dropped) = this.end(place, values.into_iter().map(|(i, v)| (i, Ok(v))));
                if let Some(payload) = dropped {
                    // The fetch's `Drop` panicked: the other keys have their values; this key's
                    // flight ends with the panic, resumed in the caller that drove it.
                    crate::sync::resume(payload);
                }
                Poll::Ready(own)
            }
            Err(payload) => {
                let aborted = Aborted::panic(&*payload);
                let n = this.slots.with(|s| s.results.len());
                // A second panic, of the fetch's `Drop`, is dropped: the first one is resumed.
                drop(this.end(place, (0..n).map(|i| (i, Err(aborted.clone())))));
                crate::sync::resume(payload)
            }
        }
    }

    /// Ends the batch with `results` (one per part); the caller holds `POLLING`. The fetch is
    /// dropped first (the keys are freed only after it is gone), then every slot is filled and
    /// every other part's flight woken. Returns the caller's own result, and the payload of a
    /// panic of the fetch's `Drop`.
    fn end(
        &self,
        place: usize,
        results: impl Iterator<Item = (usize, Result<V, Aborted>)>,
    ) -> (Result<V, Aborted>, Option<crate::sync::Caught>) {
        // SAFETY: the caller holds `POLLING`.
        let fetch = self.fetch.with_mut(|fetch| unsafe { (*fetch).take() });
        let dropped = crate::sync::catch(|| drop(fetch)).err();
        let mut own = None;
        let wakers = self.slots.with(|s| {
            for (i, result) in results {
                if i == place {
                    own = Some(result);
                } else {
                    s.results[i] = Some(result);
                }
            }
            s.wakers.iter_mut().map(Option::take).collect::<Vec<_>>()
        });
        self.state.store(DONE, crate::sync::Ordering::Release);
        for (i, waker) in wakers.into_iter().enumerate() {
            if let (Some(waker), true) = (waker, i != place) {
                waker.wake();
            }
        }
        (own.expect("a part that polls was present when its batch's fetch was made"), dropped)
    }

    /// The fetch's waker fired (or a batcher closed the window early): wake every part, unless
    /// someone polls the fetch now (it will, when its poll returns) or a wake is already on its
    /// way.
    pub(crate) fn wake_fetch(&self) {
        let prev = self.state.fetch_or(NOTIFIED, AcqRel);
        if prev & (POLLING | NOTIFIED | DONE) == 0 {
            self.wake_parts();
        }
    }

    /// Wakes every part's flight (its waiters, one of which polls the part again).
    fn wake_parts(&self) {
        let wakers: Vec<Waker> = self.slots.with(|s| s.wakers.iter().flatten().cloned().collect());
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The fetch's waker: wakes the flights of every key of the batch.
struct BatchWaker<V>(Arc<Batch<V>>);

impl<V: Send + Sync + 'static> std::task::Wake for BatchWaker<V> {
    fn wake(self: StdArc<Self>) {
        self.0.wake_fetch();
    }

    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.wake_fetch();
    }
}

/// One key's share of a batch: the shared work of that key's flight.
pub(crate) struct Part<V> {
    batch: Arc<Batch<V>>,
    place: usize,
}

impl<V: Send + Sync + 'static> Part<V> {
    /// Boxed, as a flight's shared work.
    pub(crate) fn boxed(self) -> BoxedWork<V> {
        Box::pin(self)
    }
}

impl<V: Send + Sync + 'static> Future for Part<V> {
    type Output = Result<V, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Batch::poll_part(&self.batch, self.place, cx)
    }
}

impl<V> Drop for Part<V> {
    fn drop(&mut self) {
        let batch = &*self.batch;
        let place = self.place;
        let left = batch.slots.with(|s| {
            s.left[place] = true;
            (s.wakers[place].take(), s.results[place].take())
        });
        drop(left); // a result's `Drop` is user code: outside the lock
        if batch.parts.fetch_sub(1, AcqRel) == 1 {
            // SAFETY: this was the last part: nobody polls the fetch (polls happen inside
            // parts), and wakers never touch it.
            let fetch = batch.fetch.with_mut(|fetch| unsafe { (*fetch).take() });
            drop(fetch); // a panic of its `Drop` propagates to whoever dropped this part
        }
    }
}

impl<V> fmt::Debug for Part<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part").field("place", &self.place).finish_non_exhaustive()
    }
}

/// The mode of a batch's flights: shared work, driven by any waiter.
pub(crate) fn shared_mode<V: Send + Sync + 'static>() -> Mode<V> {
    Mode::Shared(Flight::poll_work)
}

/// A key of a batch call.
pub(crate) enum Call<'a, K: Hash + Eq, V, S: BuildHasher> {
    /// Not joined yet.
    Start(K),
    /// Its flight is closing: wait until it is gone, then join again.
    Closing {
        key: K,
        flight: Arc<Flight<V>>,
        listener: Option<EventListener>,
    },
    /// Waiting for (and driving) its flight. The key is kept for a promotion, when the flight
    /// is a work-mode flight that this call follows.
    Wait {
        key: Option<K>,
        handle: GroupHandle<'a, K, V, S>,
        listener: Option<EventListener>,
    },
    /// Promoted in a vacated work-mode flight: fetching this key alone, inline. The part goes
    /// first, so that it is dropped before the handle hands the flight over.
    Run {
        part: Part<V>,
        handle: GroupHandle<'a, K, V, S>,
    },
    Done(Result<Outcome<V>, Aborted>),
    Taken,
}

/// What one step of a key did.
pub(crate) enum Step {
    Ready,
    Pending,
    Yielded,
    Rejoin,
}

/// The future of [`Group::work_batch`]: resolves to one result per key, in the order of the
/// keys given.
///
/// It joins every key's flight when first polled and makes one fetch for the keys it leads.
/// Dropping it leaves every flight; see [`work_batch`](Group::work_batch)'s `# Cancel safety`.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let group = coalescer::Group::<u32, Option<String>>::new();
/// let call = group.work_batch([1, 2], |ids| async move { ids.into_iter().map(|id| (id, id.to_string())) });
/// let results: Vec<_> = call.await.into_iter().map(|r| r.unwrap().into_value()).collect();
/// assert_eq!(results, [Some("1".to_string()), Some("2".to_string())]);
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WorkBatch<'a, K: Hash + Eq, V, S: BuildHasher, M> {
    group: &'a Group<K, V, S>,
    fetch: M,
    calls: Vec<Call<'a, K, V, S>>,
    done: bool,
}

// The future is never pinned structurally: the fetch closure is only borrowed, and everything
// else lives in boxes or is `Unpin`.
impl<K: Hash + Eq, V, S: BuildHasher, M> Unpin for WorkBatch<'_, K, V, S, M> {}

impl<'a, K, V, S, M> WorkBatch<'a, K, V, S, M>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
    M: FetchMany<K, V>,
{
    pub(crate) fn new(group: &'a Group<K, V, S>, keys: impl IntoIterator<Item = K>, fetch: M) -> Self {
        Self { group, fetch, calls: keys.into_iter().map(Call::Start).collect(), done: false }
    }

    /// Joins every key not joined yet, and makes one batch of those this call leads.
    fn join_all(&mut self) {
        let (group, calls) = (self.group, &mut self.calls);
        let mut led: Vec<(usize, K)> = Vec::new();
        // The keys' `Clone`, `Hash` and `Eq` run here, and the fetch's closure below: a panic
        // ends the flights led so far (so that their followers are released), then unwinds.
        let joined = crate::sync::catch(|| {
            for (i, call) in calls.iter_mut().enumerate() {
                let Call::Start(key) = call else { continue };
                // By reference: a leader's join clones the key for the map, and a panic there
                // (or in its `Hash` or `Eq`) leaves this call's key where it was.
                let joined = Handle::join(group, &*key, shared_mode());
                let Call::Start(key) = core::mem::replace(call, Call::Taken) else { unreachable!() };
                *call = match joined {
                    Ok(handle) if handle.is_leader() => {
                        led.push((i, key));
                        Call::Wait { key: None, handle, listener: None }
                    }
                    Ok(handle) => Call::Wait { key: Some(key), handle, listener: None },
                    Err(NotJoined::Full(aborted)) => Call::Done(Err(aborted)),
                    Err(NotJoined::Closing(flight)) => Call::Closing { key, flight, listener: None },
                };
            }
        });
        if led.is_empty() {
            if let Err(payload) = joined {
                crate::sync::resume(payload);
            }
            return;
        }
        let (places, keys): (Vec<usize>, Vec<K>) = led.into_iter().unzip();
        let n = keys.len();
        let made = match joined {
            Ok(()) => crate::sync::catch(|| make_fetch(&self.fetch, keys, (0..n).collect())),
            Err(payload) => Err(payload),
        };
        let (parts, panicked) = match made {
            Ok(fetch) => (Batch::parts(fetch, n), None),
            Err(payload) => (Batch::failed(&Aborted::panic(&*payload), n), Some(payload)),
        };
        for (place, part) in places.into_iter().zip(parts) {
            let Call::Wait { handle, .. } = &self.calls[place] else { unreachable!("a led key waits") };
            let detached_dropped = handle.flight().install(Owned::Work(part.boxed()));
            debug_assert!(!detached_dropped, "a batch's flights are shared, not detached");
        }
        if let Some(payload) = panicked {
            crate::sync::resume(payload);
        }
    }
}

impl<K, V, S, M> Future for WorkBatch<'_, K, V, S, M>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
    M: FetchMany<K, V>,
{
    type Output = Vec<Result<Outcome<V>, Aborted>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`WorkBatch` polled after it completed");
        loop {
            if this.calls.iter().any(|c| matches!(c, Call::Start(_))) {
                this.join_all();
            }
            let (mut pending, mut yielded, mut rejoin) = (false, false, false);
            for call in &mut this.calls {
                match step(call, &this.fetch, cx) {
                    Step::Ready => {}
                    Step::Pending => pending = true,
                    Step::Yielded => yielded = true,
                    Step::Rejoin => rejoin = true,
                }
            }
            if rejoin {
                continue;
            }
            if yielded {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if pending {
                return Poll::Pending;
            }
            this.done = true;
            let calls = core::mem::take(&mut this.calls);
            return Poll::Ready(
                calls
                    .into_iter()
                    .map(|call| match call {
                        Call::Done(result) => result,
                        _ => unreachable!("every key is done"),
                    })
                    .collect(),
            );
        }
    }
}

/// Advances one key of a batch call as far as it goes without waiting.
pub(crate) fn step<K, V, S, M>(call: &mut Call<'_, K, V, S>, fetch: &M, cx: &mut Context<'_>) -> Step
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
    M: FetchMany<K, V>,
{
    loop {
        match call {
            Call::Done(_) => return Step::Ready,
            Call::Start(_) | Call::Taken => unreachable!("joined before it is stepped"),
            Call::Closing { flight, listener, .. } => {
                if crate::handle::poll_closed(flight, listener, cx).is_pending() {
                    return Step::Pending;
                }
                let Call::Closing { key, .. } = core::mem::replace(call, Call::Taken) else { unreachable!() };
                *call = Call::Start(key);
                return Step::Rejoin;
            }
            Call::Wait { key, handle, listener } => {
                if let Some(result) = handle.finished_result() {
                    *call = Call::Done(result);
                    return Step::Ready;
                }
                if handle.try_promote() {
                    // A work-mode flight (a single `work` call's) lost its leader: this call runs
                    // its own work, a fetch of this key alone.
                    let key = key.take().expect("only followed work-mode flights are vacated");
                    let made = crate::sync::catch(|| make_fetch(fetch, alloc::vec![key], alloc::vec![0]));
                    let part = match made {
                        Ok(fetch) => Batch::parts(fetch, 1).pop(),
                        Err(payload) => handle.fail(payload),
                    };
                    let Call::Wait { handle, .. } = core::mem::replace(call, Call::Taken) else {
                        unreachable!()
                    };
                    *call = Call::Run { part: part.expect("one part"), handle };
                    continue;
                }
                if handle.flight().is_shared() {
                    match handle.drive() {
                        Driven::Finished(result) => {
                            *call = Call::Done(result);
                            return Step::Ready;
                        }
                        Driven::Yielded => return Step::Yielded,
                        Driven::Idle => {}
                    }
                }
                match listener {
                    // Listen first, then check the state again (never check-then-listen).
                    None => *listener = Some(handle.flight().listen()),
                    Some(l) => match Pin::new(l).poll(cx) {
                        Poll::Ready(()) => *listener = None,
                        Poll::Pending => return Step::Pending,
                    },
                }
            }
            Call::Run { part, handle } => {
                let polled =
                    handle.flight().obs().in_span(|| crate::sync::catch(|| Pin::new(&mut *part).poll(cx)));
                let result = match polled {
                    Ok(Poll::Pending) => return Step::Pending,
                    Ok(Poll::Ready(result)) => result,
                    Err(payload) => handle.fail(payload),
                };
                let Call::Run { part, mut handle } = core::mem::replace(call, Call::Taken) else {
                    unreachable!()
                };
                drop(part); // the fetch is gone before the key is free again
                *call = Call::Done(handle.finish(result));
                return Step::Ready;
            }
        }
    }
}

impl<K: Hash + Eq, V, S: BuildHasher, M> fmt::Debug for WorkBatch<'_, K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.calls.iter().filter(|c| matches!(c, Call::Done(_))).count();
        f.debug_struct("WorkBatch")
            .field("keys", &self.calls.len())
            .field("done", &done)
            .finish_non_exhaustive()
    }
}

/// The future of [`Group::try_work_batch`]: a [`WorkBatch`] whose fetch's error is shared by
/// every key of the batch behind an `Arc`.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let group = coalescer::TryGroup::<u32, Option<u32>, &str>::new();
/// let results = group.try_work_batch([1, 2], |_| async { Err::<Vec<(u32, u32)>, _>("down") }).await;
/// assert!(results.iter().all(|r| r.as_ref().unwrap_err().failure() == Some(&"down")));
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct TryWorkBatch<'a, K: Hash + Eq, V, S: BuildHasher, M> {
    inner: WorkBatch<'a, K, V, S, M>,
}

impl<K, T, E, S, M> Future for TryWorkBatch<'_, K, Result<T, StdArc<E>>, S, M>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher,
    M: FetchMany<K, Result<T, StdArc<E>>>,
{
    type Output = Vec<Result<Outcome<T>, Error<E>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().inner)
            .poll(cx)
            .map(|results| results.into_iter().map(split_try).collect())
    }
}

impl<K: Hash + Eq, V, S: BuildHasher, M> fmt::Debug for TryWorkBatch<'_, K, V, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryWorkBatch").field(&self.inner).finish()
    }
}

impl<K, T, S> Group<K, Option<T>, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    /// Fetches many keys in one call, each key still a flight of its own: keys already in
    /// flight (from single calls such as [`work`](Self::work), or from other batches) are
    /// joined, never fetched twice; the others are fetched together by one call of
    /// `fetch_many`, and each key's flight is completed from its result.
    ///
    /// `fetch_many` gets the keys this call leads (in the order given, without the keys it
    /// joined) and returns `(key, value)` pairs in any order, as a `Vec`, a `HashMap` or any
    /// iterator: the rows of a `WHERE id IN (...)`. It is called once per batch, and once
    /// more for each key whose single-call leader this call replaces (see below), hence `Fn`.
    ///
    /// Resolves to one result per key, **in the order of `keys`** (a duplicate key gets its
    /// result twice), so that results zip with the request: the order of a GraphQL list, of a
    /// page. (A map would lose duplicates and need `K: Clone` once more to hand keys back.)
    ///
    /// The group's value is `Option<T>`: a key the fetch did not return gets `None`, shared
    /// like any value with every caller of that key, the single calls included. An absent row
    /// is an answer ("not found"), not a failure, so it is neither a hang nor an error; keys
    /// the batch did not ask for are ignored, and of a key returned twice the first wins.
    ///
    /// # Cancel safety
    ///
    /// The fetch is shared work: any waiter of any key of the batch drives it (this call, a
    /// single call that joined one of its keys, another batch). Dropping this call, before or
    /// during the fetch, fails nobody: the callers left keep driving the same fetch; it is
    /// dropped (cancelled) only when every waiter of every key of it has left, and each key is
    /// freed as its last waiter leaves: a key whose callers have all gone is freed at once,
    /// even though the fetch goes on for the batch's other keys, so that a later call for it
    /// starts a new flight of its own (the old fetch's value for it is then dropped, never
    /// handed out). A key whose flight was started by
    /// [`work`](Self::work) (work mode) is joined under that flight's rules: if its leader is
    /// dropped, this call may be promoted and then fetches that key alone, inside its own
    /// future.
    ///
    /// # Panics
    ///
    /// When the fetch panics (its closure, its poll, or the splitting of its output), the
    /// panic is resumed in the caller that was driving it and every other caller of every key
    /// of the batch gets [`Aborted::is_panic`] (with the message); every key is free again.
    /// Polling the future again after it completed panics.
    ///
    /// # Unwind safety
    ///
    /// The keys' `Clone`, `Hash` and `Eq` run as the call joins (and as the output is matched
    /// to the keys): a panic there ends the flights this call leads with
    /// [`Aborted::is_panic`] and is resumed in this call. The fetch's `Drop` runs when it
    /// finished, in the caller that drove it (the other keys get their values; that caller's
    /// key ends with the panic, resumed there), or in the last caller to leave (the keys are
    /// freed all the same, and the panic propagates out of that caller's drop). `V::clone` is
    /// as for a [shared group's `work`](crate::SharedGroup).
    ///
    /// # Examples
    ///
    /// Two overlapping requests cost one fetch of {1, 2, 3} and one of {4}; a single call for
    /// key 2 meanwhile joins the batch instead of fetching:
    ///
    /// ```
    /// use coalescer::Group;
    /// use futures_lite::future::{poll_fn, poll_once, zip};
    /// use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    /// use std::sync::{Arc, Mutex};
    /// use std::task::Poll;
    ///
    /// # futures_lite::future::block_on(async {
    /// let group = Group::<u32, Option<String>>::new();
    /// let (fetched, open) = (Mutex::new(Vec::new()), Arc::new(AtomicBool::new(false)));
    /// let users = |ids: Vec<u32>| {
    ///     fetched.lock().unwrap().push(ids.clone());
    ///     let open = open.clone();
    ///     async move {
    ///         // Stand-in for a slow `SELECT ... WHERE id IN (...)`; there is no row 3.
    ///         poll_fn(|cx| if open.load(SeqCst) { Poll::Ready(()) } else { cx.waker().wake_by_ref(); Poll::Pending }).await;
    ///         ids.into_iter().filter(|id| *id != 3).map(|id| (id, format!("user {id}")))
    ///     }
    /// };
    /// let mut first = std::pin::pin!(group.work_batch([1, 2, 3], &users));
    /// let mut second = std::pin::pin!(group.work_batch([2, 3, 4], &users));
    /// let mut single = std::pin::pin!(group.work(&2, || async { unreachable!("joins the batch") }));
    /// assert!(poll_once(first.as_mut()).await.is_none()); // {1, 2, 3} in flight
    /// assert!(poll_once(second.as_mut()).await.is_none()); // joins 2 and 3, fetches {4}
    /// assert!(poll_once(single.as_mut()).await.is_none()); // joins 2
    /// open.store(true, SeqCst);
    /// let ((first, second), single) = zip(zip(first, second), single).await;
    /// assert_eq!(*fetched.lock().unwrap(), [vec![1, 2, 3], vec![4]]);
    /// assert_eq!(first[1].as_ref().unwrap().value().as_deref(), Some("user 2"));
    /// assert_eq!(second[2].as_ref().unwrap().value().as_deref(), Some("user 4"));
    /// assert_eq!(single.unwrap().value().as_deref(), Some("user 2"));
    /// assert_eq!(*second[1].as_ref().unwrap().value(), None); // no row 3: `None` for every caller
    /// assert!(group.is_idle()); // not a cache
    /// # });
    /// ```
    pub fn work_batch<F, Fut, I>(
        &self,
        keys: impl IntoIterator<Item = K>,
        fetch_many: F,
    ) -> WorkBatch<'_, K, Option<T>, S, Many<F>>
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = I> + Send + 'static,
        I: IntoIterator<Item = (K, T)>,
    {
        WorkBatch::new(self, keys, Many(fetch_many))
    }

    /// The blocking twin of [`work_batch`](Self::work_batch): the fetch is a plain closure run
    /// on this thread for the keys this call leads; keys in flight are joined, and this thread
    /// parks until their flights end (driving shared work, a batch's fetch included, when it
    /// is its turn). Async and blocking callers can share the keys' flights.
    ///
    /// The flights this call leads run their work on this thread (work mode): a caller that
    /// joins one of them waits for it (threads are not cancelled).
    ///
    /// # Panics
    ///
    /// When `fetch_many` panics, every other caller of the keys this call leads gets
    /// [`Aborted::is_panic`], the keys are freed, and the panic is resumed here. A call for a
    /// key whose work this very thread is running panics instead of waiting on itself.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u32, Option<u32>>::new();
    /// let results = group.work_batch_blocking([3, 4], |ids| ids.into_iter().filter(|id| *id == 3).map(|id| (id, id)));
    /// let values: Vec<_> = results.into_iter().map(|r| r.unwrap().into_value()).collect();
    /// assert_eq!(values, [Some(3), None]);
    /// ```
    pub fn work_batch_blocking<I>(
        &self,
        keys: impl IntoIterator<Item = K>,
        fetch_many: impl Fn(Vec<K>) -> I,
    ) -> Vec<Result<Outcome<Option<T>>, Aborted>>
    where
        I: IntoIterator<Item = (K, T)>,
    {
        run_blocking(self, keys, &|keys: Vec<K>| {
            let index = KeyIndex::new(&keys);
            index.place(fetch_many(keys))
        })
    }
}

impl<K, T, E, S> Group<K, Result<Option<T>, StdArc<E>>, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher,
{
    /// The fallible form of [`work_batch`](Self::work_batch), on a
    /// [`TryGroup<K, Option<T>, E>`](crate::TryGroup): an `Err` of the fetch is shared by every
    /// key of the batch (behind one `Arc`, so `E` needs no `Clone`) and never retained.
    ///
    /// # Errors
    ///
    /// Each key's result is [`Error::Failed`] with the fetch's error when the fetch of its
    /// batch failed, or [`Error::Aborted`] as for `work_batch`.
    ///
    /// # Cancel safety
    ///
    /// As for [`work_batch`](Self::work_batch).
    ///
    /// # Panics
    ///
    /// As for [`work_batch`](Self::work_batch).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// #[derive(Debug)]
    /// struct Down; // no Clone needed
    /// let group = coalescer::TryGroup::<u32, Option<u32>, Down>::new();
    /// let results = group.try_work_batch([1, 2], |_| async { Err::<Vec<(u32, u32)>, _>(Down) }).await;
    /// let (a, b) = (results[0].as_ref().unwrap_err(), results[1].as_ref().unwrap_err());
    /// assert!(a.is_failed() && b.is_failed());
    /// let ok = group.try_work_batch([1], |ids| async move { Ok::<_, Down>(ids.into_iter().map(|id| (id, id))) }).await;
    /// assert_eq!(*ok[0].as_ref().unwrap().value(), Some(1));
    /// # });
    /// ```
    pub fn try_work_batch<F, Fut, I>(
        &self,
        keys: impl IntoIterator<Item = K>,
        fetch_many: F,
    ) -> TryWorkBatch<'_, K, TryValue<T, E>, S, TryMany<F>>
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (K, T)>,
    {
        TryWorkBatch { inner: WorkBatch::new(self, keys, TryMany(fetch_many)) }
    }

    /// The fallible form of [`work_batch_blocking`](Self::work_batch_blocking).
    ///
    /// # Errors
    ///
    /// As for [`try_work_batch`](Self::try_work_batch).
    ///
    /// # Panics
    ///
    /// As for [`work_batch_blocking`](Self::work_batch_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::TryGroup::<u32, Option<u32>, String>::new();
    /// let results = group.try_work_batch_blocking([1], |_| Err::<Vec<(u32, u32)>, _>("down".to_string()));
    /// assert_eq!(results[0].as_ref().unwrap_err().failure().map(String::as_str), Some("down"));
    /// ```
    pub fn try_work_batch_blocking<I>(
        &self,
        keys: impl IntoIterator<Item = K>,
        fetch_many: impl Fn(Vec<K>) -> Result<I, E>,
    ) -> Vec<Result<Outcome<Option<T>>, Error<E>>>
    where
        I: IntoIterator<Item = (K, T)>,
    {
        let results = run_blocking(self, keys, &|keys: Vec<K>| {
            let index = KeyIndex::new(&keys);
            match fetch_many(keys) {
                Ok(items) => index.place(items).into_iter().map(Ok).collect(),
                Err(e) => {
                    let e = StdArc::new(e);
                    (0..index.len()).map(|_| Err(e.clone())).collect()
                }
            }
        });
        results.into_iter().map(split_try).collect()
    }
}

/// A key of a blocking batch call.
enum Blocked<'a, K: Hash + Eq, V, S: BuildHasher> {
    Led(GroupHandle<'a, K, V, S>),
    Followed(K, GroupHandle<'a, K, V, S>),
    Done(Result<Outcome<V>, Aborted>),
}

/// The blocking batch: joins every key (work mode: the fetch runs on this thread), runs `fetch`
/// for the keys it leads, then parks until the flights of the keys it follows end.
fn run_blocking<K, V, S>(
    group: &Group<K, V, S>,
    keys: impl IntoIterator<Item = K>,
    fetch: &dyn Fn(Vec<K>) -> Vec<V>,
) -> Vec<Result<Outcome<V>, Aborted>>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher,
{
    // A panic of a key's `Clone`, `Hash` or `Eq` unwinds through `calls`: each led handle
    // leaves its work-mode flight, which promotes a waiting follower (nobody hangs).
    let mut calls = Vec::new();
    let mut led = Vec::new();
    for key in keys {
        calls.push(match join_blocking(group, &key) {
            Err(aborted) => Blocked::Done(Err(aborted)),
            Ok(handle) if handle.is_leader() => {
                led.push(key);
                Blocked::Led(handle)
            }
            Ok(handle) => Blocked::Followed(key, handle),
        });
    }
    if !led.is_empty() {
        let led_flights =
            || calls.iter().filter_map(|c| if let Blocked::Led(h) = c { Some(h.flight()) } else { None });
        led_flights().for_each(|f| f.run_blocking_on_this_thread(true));
        let fetched = crate::sync::catch(|| fetch(led));
        led_flights().for_each(|f| f.run_blocking_on_this_thread(false));
        match fetched {
            Ok(values) => {
                let mut values = values.into_iter();
                for call in &mut calls {
                    if let Blocked::Led(handle) = call {
                        let value = values.next().expect("one value per led key");
                        *call = Blocked::Done(handle.finish(Ok(value)));
                    }
                }
            }
            Err(payload) => {
                let aborted = Aborted::panic(&*payload);
                for call in &mut calls {
                    if let Blocked::Led(handle) = call {
                        handle.end(Err(aborted.clone()), Some(crate::stats::Event::Panic));
                    }
                }
                crate::sync::resume(payload)
            }
        }
    }
    calls
        .into_iter()
        .map(|call| match call {
            Blocked::Done(result) => result,
            Blocked::Followed(key, mut handle) => wait_blocking(&mut handle, key, fetch),
            Blocked::Led(_) => unreachable!("every led key is done"),
        })
        .collect()
}

/// Joins `key`'s flight in work mode on this thread, first waiting out a closing one.
fn join_blocking<'a, K, V, S>(group: &'a Group<K, V, S>, key: &K) -> Result<GroupHandle<'a, K, V, S>, Aborted>
where
    K: Hash + Eq + Clone,
    S: BuildHasher,
{
    loop {
        match Handle::join(group, key, Mode::Work) {
            Ok(handle) => return Ok(handle),
            Err(NotJoined::Full(aborted)) => return Err(aborted),
            Err(NotJoined::Closing(flight)) => {
                let mut listener: Option<EventListener> = None;
                while flight.load().is_closing() {
                    match listener.take() {
                        // Listen first, then check again (never check-then-listen).
                        None => listener = Some(flight.listen()),
                        Some(l) => event_listener::Listener::wait(l),
                    }
                }
            }
        }
    }
}

/// Parks until a followed key's flight ends; promoted (its single-call leader left), fetches
/// that key alone on this thread; drives shared work when it is its turn.
fn wait_blocking<K, V, S>(
    handle: &mut GroupHandle<'_, K, V, S>,
    key: K,
    fetch: &dyn Fn(Vec<K>) -> Vec<V>,
) -> Result<Outcome<V>, Aborted>
where
    K: Hash + Eq,
    V: Clone,
    S: BuildHasher,
{
    let mut listener: Option<EventListener> = None;
    loop {
        if let Some(result) = handle.finished_result() {
            return result;
        }
        if handle.try_promote() {
            handle.flight().run_blocking_on_this_thread(true);
            let fetched = crate::sync::catch(|| fetch(alloc::vec![key]));
            handle.flight().run_blocking_on_this_thread(false);
            return match fetched {
                Ok(values) => handle.finish(Ok(values.into_iter().next().expect("one value per key"))),
                Err(payload) => handle.fail(payload),
            };
        }
        assert!(
            !handle.flight().is_run_by_this_thread(),
            "coalescer: re-entrant `work_batch_blocking` for a key whose work this thread is running; \
             it would wait on itself forever"
        );
        if handle.flight().is_shared() {
            match handle.drive() {
                Driven::Finished(result) => return result,
                Driven::Yielded => {
                    std::thread::yield_now();
                    continue;
                }
                Driven::Idle => {}
            }
        }
        match listener.take() {
            // Listen first, then check the state again (never check-then-listen).
            None => listener = Some(handle.flight().listen()),
            Some(l) => event_listener::Listener::wait(l),
        }
    }
}
