//! [`Batcher`]: single-key loads from concurrent callers, collected into batches
//! (DataLoader-style), on the flights and batches of [`Group::work_batch`].
//!
//! # The mechanism
//!
//! A load joins its key's flight like any call (so a key already in flight, from a single call,
//! a batch or another load, is joined, never fetched twice). A load that leads its key adds it
//! to the batcher's *open batch*: a [`Batch`] whose shared fetch first waits out the window,
//! then fetches every key collected meanwhile. The window is part of the batch's shared work:
//! any waiter of any key of the batch drives it, so there is no "collector" whose cancellation
//! could strand the others (async-graphql#555). A load dropped while its key waits in the
//! window drops its part, and the key is left out of the fetch; when every load of the batch
//! has gone, the window and the batch go with them.

use crate::batch::{
    Batch, BoxFetch, Call, FetchMany, Many, Part, Step, TryMany, WorkBatch, make_fetch, shared_mode, step,
};
use crate::flight::Owned;
use crate::group::{DefaultHashBuilder, Group};
use crate::handle::{Handle, NotJoined};
use crate::outcome::{Aborted, Error, Outcome, split_try};
use crate::spawn::Sleep;
use crate::sync::{Arc, Mutex, StdArc};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

/// How many keys a [`Batcher`] puts in one fetch unless told otherwise.
pub const DEFAULT_MAX_BATCH: usize = 100;

/// How many times a [`Batcher`]'s window yields to the executor unless told otherwise.
pub const DEFAULT_YIELDS: usize = 10;

/// Collects single-key loads from concurrent callers into batches, DataLoader-style: each
/// [`load`](Self::load) waits for a short window (a few yields to the executor by default, or
/// a timer), during which concurrent loads of other keys join the same batch; then the batch's
/// keys are fetched by one call of the fetch function. A batch closes early once it holds
/// [`max_batch`](Self::max_batch) keys.
///
/// Every key is a flight of the batcher's [`Group`]: a load of a key already in flight (from
/// another load, a [`work_batch`](Group::work_batch), or a single call on
/// [`group`](Self::group)) joins it and is never fetched twice, inside a window or across
/// windows. A key the fetch did not return gets `None` (the value is `Option<T>`, as for
/// `work_batch`); the fallible form shares the fetch's error with every key of the batch.
///
/// No runtime is needed with the default window (yields); [`window`](Self::window) takes a
/// timer from a runtime adapter's [`Sleep`].
///
/// # Cancel safety
///
/// The window and the fetch are the batch's shared work: any load waiting on any key of the
/// batch drives them. Dropping a load, whether it opened the batch or not, fails nobody: a load
/// dropped while its key waits in the window takes its key out of the fetch (unless another
/// caller waits for that key too); dropped during the fetch, the others go on with the same
/// fetch, which is dropped only when every waiter of every key of the batch has left.
///
/// # Panics
///
/// A panic of the fetch (its closure, its poll) or of the window's timer is resumed in the
/// load that was driving it; every other load of the batch gets [`Aborted::is_panic`], and
/// every key is free again.
///
/// # Unwind safety
///
/// As for [`work_batch`](Group::work_batch) (its `# Unwind safety`): the keys' `Clone`, `Hash` and `Eq`
/// run as a load joins (a panic there reaches that load alone) and as the window closes (a
/// panic of the batch, as above). A [`Sleep`] that panics is a panic of the batch.
///
/// # Examples
///
/// ```
/// use coalescer::Batcher;
/// use std::sync::{Arc, Mutex};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let queries = Arc::new(Mutex::new(Vec::new()));
/// let users = {
///     let queries = queries.clone();
///     Arc::new(Batcher::new(move |mut ids: Vec<u32>| {
///         ids.sort();
///         queries.lock().unwrap().push(ids.clone()); // SELECT ... WHERE id IN (ids)
///         async move { ids.into_iter().filter(|id| *id != 4).map(|id| (id, format!("user {id}"))) }
///     }))
/// };
/// let mut loads = Vec::new();
/// for id in [1, 2, 3, 2, 4] {
///     let users = users.clone();
///     loads.push(tokio::spawn(async move { users.load(id).await.unwrap().into_value() }));
/// }
/// let mut names = Vec::new();
/// for load in loads {
///     names.push(load.await.unwrap());
/// }
/// assert_eq!(names[1], Some("user 2".to_string()));
/// assert_eq!(names[4], None); // no such user
/// // Usually one query for all five loads; never a key fetched twice at once.
/// let fetched: usize = queries.lock().unwrap().iter().map(Vec::len).sum();
/// assert!(fetched <= 4 + 1);
/// # });
/// ```
pub struct Batcher<K: Hash + Eq, V, M, W = Yields, S: BuildHasher = DefaultHashBuilder> {
    group: Group<K, V, S>,
    fetch: StdArc<M>,
    window: StdArc<W>,
    max: usize,
    /// The batch that collects keys now, if any (it may have closed since).
    open: Mutex<Option<Arc<Open<K, V>>>>,
}

/// A batch that collects keys: its keys in the order of its parts' places.
struct Open<K, V> {
    keys: Mutex<Keys<K>>,
    batch: Arc<Batch<V>>,
}

struct Keys<K> {
    keys: Vec<K>,
    /// The window has closed (or the batch is full): no key may join any more.
    closed: bool,
}

impl<K, V: Send + Sync + 'static> Open<K, V> {
    /// Adds `key` (taken out of the option) and returns its part, with whether the batch is
    /// now full; `None` (and the key left in place) once the batch has closed or was abandoned.
    fn add(&self, key: &mut Option<K>, max: usize) -> Option<(Part<V>, bool)> {
        self.keys.with(|k| {
            if k.closed {
                return None;
            }
            let part = Batch::add_part(&self.batch)?;
            k.keys.push(key.take().expect("a key to add"));
            k.closed = k.keys.len() >= max;
            Some((part, k.closed))
        })
    }
}

/// When a batch's window closes.
///
/// # Examples
///
/// ```
/// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) })
///     .yields(3); // a `Yields(3)` window
/// # let _ = users;
/// ```
pub trait Window {
    /// Resolves when the window closes.
    type Timer: Future<Output = ()> + Send + 'static;

    /// A window that opens now.
    fn start(&self) -> Self::Timer;
}

/// A window of a number of yields to the executor: the batch's driver gives every other task
/// its turn that many times before the fetch (tasks that were ready meanwhile add their keys).
/// Needs no runtime. The default, with [`DEFAULT_YIELDS`].
///
/// # Examples
///
/// ```
/// use coalescer::{Window, Yields};
/// let mut timer = std::pin::pin!(Yields(1).start());
/// let waker = std::task::Waker::noop();
/// let mut cx = std::task::Context::from_waker(waker);
/// assert!(timer.as_mut().poll(&mut cx).is_pending());
/// assert!(timer.as_mut().poll(&mut cx).is_ready());
/// # use std::future::Future;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yields(pub usize);

impl Window for Yields {
    type Timer = YieldTimes;

    fn start(&self) -> YieldTimes {
        YieldTimes(self.0)
    }
}

/// The timer of a [`Yields`] window: pending (having woken itself) that many times.
#[derive(Debug)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct YieldTimes(usize);

impl Future for YieldTimes {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A window of a fixed duration, timed by a runtime adapter's [`Sleep`] (made by
/// [`Batcher::window`]). It opens when the batch's first key arrives.
#[derive(Debug)]
pub struct Timed<Sl> {
    sleep: Sl,
    duration: Duration,
}

impl<Sl: Sleep> Window for Timed<Sl>
where
    Sl::Timer: Send + 'static,
{
    type Timer = Sl::Timer;

    fn start(&self) -> Sl::Timer {
        self.sleep.sleep(self.duration)
    }
}

impl<K, T, F, Fut, I> Batcher<K, Option<T>, Many<F>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = I> + Send + 'static,
    I: IntoIterator<Item = (K, T)>,
{
    /// A batcher over `fetch_many`, which gets the keys of a batch and returns `(key, value)`
    /// pairs in any order (as [`Group::work_batch`]'s fetch does). Batches of up to
    /// [`DEFAULT_MAX_BATCH`] keys, a window of [`DEFAULT_YIELDS`] yields, a new [`Group`].
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id * 2)) });
    /// let v = futures_lite::future::block_on(users.load(21)).unwrap();
    /// assert_eq!(*v.value(), Some(42));
    /// ```
    pub fn new(fetch_many: F) -> Self {
        Self::with_fetch(Many(fetch_many))
    }
}

impl<K, T, E, F, Fut, I> Batcher<K, Result<Option<T>, StdArc<E>>, TryMany<F>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, E>> + Send + 'static,
    I: IntoIterator<Item = (K, T)>,
{
    /// A batcher over a fallible `fetch_many`: its error is shared (behind one `Arc`) by every
    /// key of the batch, and never retained. Load with [`try_load`](Self::try_load).
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::fallible(|_: Vec<u32>| async { Err::<Vec<(u32, u32)>, _>("down") });
    /// let err = futures_lite::future::block_on(users.try_load(1)).unwrap_err();
    /// assert_eq!(err.failure(), Some(&"down"));
    /// ```
    pub fn fallible(fetch_many: F) -> Self {
        Self::with_fetch(TryMany(fetch_many))
    }
}

impl<K, V, M> Batcher<K, V, M>
where
    K: Hash + Eq,
{
    fn with_fetch(fetch: M) -> Self {
        Self {
            group: Group::new(),
            fetch: StdArc::new(fetch),
            window: StdArc::new(Yields(DEFAULT_YIELDS)),
            max: DEFAULT_MAX_BATCH,
            open: Mutex::new(None),
        }
    }
}

impl<K: Hash + Eq, V, M, W, S: BuildHasher> Batcher<K, V, M, W, S> {
    /// At most `max` keys per fetch (at least 1): a batch that reaches it closes at once. A
    /// builder method: call it before the batcher is shared.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) })
    ///     .max_batch(500);
    /// # let _ = users;
    /// ```
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self
    }

    /// A window of `yields` yields to the executor (no runtime needed; see [`Yields`]). A
    /// builder method.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) })
    ///     .yields(0); // no window: each batch holds the keys that arrived while the last fetched
    /// # let _ = users;
    /// ```
    pub fn yields(self, yields: usize) -> Batcher<K, V, M, Yields, S> {
        self.with_window(Yields(yields))
    }

    /// A window of `duration`, timed by `sleep` (a runtime adapter's [`Sleep`]), from the
    /// moment the batch's first key arrives (async-graphql's DataLoader waits 1 ms). A builder
    /// method.
    ///
    /// # Examples
    ///
    /// ```
    /// # struct Tokio;
    /// # impl coalescer::Sleep for Tokio {
    /// #     type Timer = tokio::time::Sleep;
    /// #     fn sleep(&self, d: std::time::Duration) -> tokio::time::Sleep { tokio::time::sleep(d) }
    /// # }
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) })
    ///     .window(Tokio, std::time::Duration::from_millis(1));
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// assert_eq!(*users.load(3).await.unwrap().value(), Some(3));
    /// # });
    /// ```
    pub fn window<Sl: Sleep>(self, sleep: Sl, duration: Duration) -> Batcher<K, V, M, Timed<Sl>, S>
    where
        Sl::Timer: Send + 'static,
    {
        self.with_window(Timed { sleep, duration })
    }

    /// Any [`Window`]: a timer of your own (one that closes when a request's handler has
    /// polled all its loads, say). A builder method.
    ///
    /// # Examples
    ///
    /// ```
    /// use coalescer::{Batcher, Yields};
    /// let users = Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) })
    ///     .with_window(Yields(2));
    /// # let _ = users;
    /// ```
    pub fn with_window<W2>(self, window: W2) -> Batcher<K, V, M, W2, S> {
        Batcher {
            group: self.group,
            fetch: self.fetch,
            window: StdArc::new(window),
            max: self.max,
            open: self.open,
        }
    }

    /// Uses `group` (a bound on keys in flight, a name for metrics, a hasher) instead of a new
    /// one. A builder method.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) })
    ///     .with_group(coalescer::Group::new().named("users"));
    /// # let _ = users;
    /// ```
    pub fn with_group<S2: BuildHasher>(self, group: Group<K, V, S2>) -> Batcher<K, V, M, W, S2> {
        Batcher { group, fetch: self.fetch, window: self.window, max: self.max, open: self.open }
    }

    /// The group whose flights the loads join: single calls on it (`work`)
    /// share keys with the batches.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) });
    /// assert!(users.group().is_idle());
    /// ```
    pub fn group(&self) -> &Group<K, V, S> {
        &self.group
    }

    /// How many keys wait in the open batch's window now (0 when no window is open). For
    /// metrics and tests.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) });
    /// assert_eq!(users.in_window(), 0);
    /// ```
    pub fn in_window(&self) -> usize {
        let open = self.open.with(|slot| slot.clone());
        open.map_or(0, |open| open.keys.with(|k| if k.closed { 0 } else { k.keys.len() }))
    }

    /// The most keys one fetch gets.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) });
    /// assert_eq!(users.max_batch_size(), coalescer::DEFAULT_MAX_BATCH);
    /// ```
    pub fn max_batch_size(&self) -> usize {
        self.max
    }
}

impl<K, V, M, W, S> Batcher<K, V, M, W, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    M: FetchMany<K, V> + Send + Sync + 'static,
    W: Window + Send + Sync + 'static,
    S: BuildHasher,
{
    /// Loads one key: joins its flight if it is in the air, else adds it to the open batch
    /// (opening one if none is), whose fetch runs once the window closes or the batch is full.
    ///
    /// # Cancel safety
    ///
    /// See the [type's docs](Self#cancel-safety): dropping a load fails nobody.
    ///
    /// # Panics
    ///
    /// See the [type's docs](Self#panics). Polling the future again after it completed panics.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id + 1)) });
    /// let (a, b) = futures_lite::future::block_on(futures_lite::future::zip(users.load(1), users.load(2)));
    /// assert_eq!((*a.unwrap().value(), *b.unwrap().value()), (Some(2), Some(3)));
    /// ```
    pub fn load(&self, key: K) -> Load<'_, K, V, M, W, S> {
        Load { batcher: self, call: Call::Start(key), done: false }
    }

    /// Loads many keys at once, as one batch of its own ([`Group::work_batch`] with this
    /// batcher's fetch and group): keys in flight are joined, the rest fetched together at
    /// once, without a window.
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) });
    /// let results = futures_lite::future::block_on(users.load_many([1, 2]));
    /// assert_eq!(*results[1].as_ref().unwrap().value(), Some(2));
    /// ```
    pub fn load_many(&self, keys: impl IntoIterator<Item = K>) -> WorkBatch<'_, K, V, S, &M> {
        WorkBatch::new(&self.group, keys, &*self.fetch)
    }

    /// Adds a key this call leads to the open batch, or opens one; returns the key's part.
    fn enlist(&self, key: K) -> Part<V> {
        let mut key = Some(key);
        let (part, replaced, full) = self.open.with(|slot| {
            if let Some(open) = slot.as_ref() {
                if let Some((part, full)) = open.add(&mut key, self.max) {
                    return (part, None, full.then(|| open.clone()));
                }
            }
            let (open, part) = self.open_batch(key.take().expect("the key was not added"));
            (part, slot.replace(open), None)
        });
        drop(replaced); // outside the lock
        if let Some(open) = full {
            open.batch.wake_fetch(); // the window is cut short: the fetch wants polling
        }
        part
    }

    /// A new batch holding `key`, and `key`'s part.
    fn open_batch(&self, key: K) -> (Arc<Open<K, V>>, Part<V>) {
        let mut made = None;
        let part = Batch::collecting(|batch| {
            let keys = Mutex::new(Keys { keys: alloc::vec![key], closed: self.max <= 1 });
            let open = Arc::new(Open { keys, batch: batch.clone() });
            made = Some(open.clone());
            let collect = Collect::<K, V, M, W> {
                open,
                fetch: self.fetch.clone(),
                window: self.window.clone(),
                timer: None,
                fetching: None,
            };
            Box::pin(collect) as BoxFetch<V>
        });
        (made.expect("made by `collecting`"), part)
    }
}

impl<K, T, E, M, W, S> Batcher<K, Result<Option<T>, StdArc<E>>, M, W, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    M: FetchMany<K, Result<Option<T>, StdArc<E>>> + Send + Sync + 'static,
    W: Window + Send + Sync + 'static,
    S: BuildHasher,
{
    /// The fallible form of [`load`](Self::load), for a [`fallible`](Batcher::fallible)
    /// batcher.
    ///
    /// # Errors
    ///
    /// [`Error::Failed`] with the fetch's error (shared by every key of the batch), or
    /// [`Error::Aborted`].
    ///
    /// # Cancel safety
    ///
    /// As for [`load`](Self::load).
    ///
    /// # Panics
    ///
    /// As for [`load`](Self::load).
    ///
    /// # Examples
    ///
    /// ```
    /// let users = coalescer::Batcher::fallible(|ids: Vec<u32>| async move { Ok::<_, String>(ids.into_iter().map(|id| (id, id))) });
    /// assert_eq!(*futures_lite::future::block_on(users.try_load(5)).unwrap().value(), Some(5));
    /// ```
    pub fn try_load(&self, key: K) -> TryLoad<'_, K, Result<Option<T>, StdArc<E>>, M, W, S> {
        TryLoad { inner: self.load(key) }
    }
}

impl<K: Hash + Eq, V, M, W: fmt::Debug, S: BuildHasher> fmt::Debug for Batcher<K, V, M, W, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("group", &self.group)
            .field("window", &self.window)
            .field("max_batch", &self.max)
            .finish_non_exhaustive()
    }
}

/// A batch's shared work in a batcher: the window, then the fetch of the keys collected.
struct Collect<K, V, M, W: Window> {
    open: Arc<Open<K, V>>,
    fetch: StdArc<M>,
    window: StdArc<W>,
    timer: Option<Pin<Box<W::Timer>>>,
    fetching: Option<BoxFetch<V>>,
}

impl<K, V, M, W> Future for Collect<K, V, M, W>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
    M: FetchMany<K, V>,
    W: Window,
{
    type Output = Vec<(usize, V)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.fetching.is_none() {
            let closed = this.open.keys.with(|k| k.closed);
            if !closed {
                let window = &this.window;
                let timer = this.timer.get_or_insert_with(|| Box::pin(window.start()));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            this.timer = None;
            // Close the window, and leave out the keys whose loads have all gone.
            let keys = this.open.keys.with(|k| {
                k.closed = true;
                core::mem::take(&mut k.keys)
            });
            let present = this.open.batch.present(keys.len());
            let (mut live, mut places, mut gone) = (Vec::new(), Vec::new(), Vec::new());
            for (place, (key, here)) in keys.into_iter().zip(present).enumerate() {
                if here {
                    live.push(key);
                    places.push(place);
                } else {
                    gone.push(key);
                }
            }
            drop(gone);
            this.fetching = Some(make_fetch(&*this.fetch, live, places));
        }
        this.fetching.as_mut().expect("made above").as_mut().poll(cx)
    }
}

/// The future of [`Batcher::load`]: resolves to the key's [`Outcome`], or to [`Aborted`].
///
/// # Examples
///
/// ```
/// let users = coalescer::Batcher::new(|ids: Vec<u32>| async move { ids.into_iter().map(|id| (id, id)) });
/// let load: coalescer::futures::Load<'_, u32, Option<u32>, _, _, _> = users.load(1);
/// assert_eq!(*futures_lite::future::block_on(load).unwrap().value(), Some(1));
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Load<'a, K: Hash + Eq, V, M, W, S: BuildHasher> {
    batcher: &'a Batcher<K, V, M, W, S>,
    call: Call<'a, K, V, S>,
    done: bool,
}

// Never pinned structurally: everything it holds is `Unpin` or borrowed.
impl<K: Hash + Eq, V, M, W, S: BuildHasher> Unpin for Load<'_, K, V, M, W, S> {}

impl<'a, K, V, M, W, S> Load<'a, K, V, M, W, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    M: FetchMany<K, V> + Send + Sync + 'static,
    W: Window + Send + Sync + 'static,
    S: BuildHasher,
{
    /// Joins the key's flight; leading it, adds the key to the open batch.
    fn join(&mut self) {
        if !matches!(self.call, Call::Start(_)) {
            return;
        }
        let batcher = self.batcher;
        let Call::Start(key) = &self.call else { unreachable!() };
        // By reference: a leader's join clones the key (user code: a panic leaves nothing
        // joined, and this call's key where it was).
        let joined = Handle::join(&batcher.group, key, shared_mode());
        let Call::Start(key) = core::mem::replace(&mut self.call, Call::Taken) else { unreachable!() };
        self.call = match joined {
            Ok(handle) if handle.is_leader() => {
                let enlisted = crate::sync::catch(|| batcher.enlist(key));
                let (part, panicked) = match enlisted {
                    Ok(part) => (part, None),
                    Err(payload) => {
                        let failed = Batch::failed(&Aborted::panic(&*payload), 1).pop();
                        (failed.expect("one part"), Some(payload))
                    }
                };
                let dropped_task = handle.flight().install(Owned::Work(part.boxed()));
                debug_assert!(!dropped_task, "a batcher's flights are shared, not detached");
                self.call = Call::Wait { key: None, handle, listener: None };
                if let Some(payload) = panicked {
                    crate::sync::resume(payload);
                }
                return;
            }
            Ok(handle) => Call::Wait { key: Some(key), handle, listener: None },
            Err(NotJoined::Full(aborted)) => Call::Done(Err(aborted)),
            Err(NotJoined::Closing(flight)) => Call::Closing { key, flight, listener: None },
        };
    }
}

impl<K, V, M, W, S> Future for Load<'_, K, V, M, W, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    M: FetchMany<K, V> + Send + Sync + 'static,
    W: Window + Send + Sync + 'static,
    S: BuildHasher,
{
    type Output = Result<Outcome<V>, Aborted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`Load` polled after it completed");
        loop {
            this.join();
            match step(&mut this.call, &*this.batcher.fetch, cx) {
                Step::Ready => {
                    this.done = true;
                    let Call::Done(result) = core::mem::replace(&mut this.call, Call::Taken) else {
                        unreachable!("a ready call is done")
                    };
                    return Poll::Ready(result);
                }
                Step::Pending => return Poll::Pending,
                Step::Yielded => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Rejoin => {}
            }
        }
    }
}

impl<K: Hash + Eq, V, M, W, S: BuildHasher> fmt::Debug for Load<'_, K, V, M, W, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load").field("done", &self.done).finish_non_exhaustive()
    }
}

/// The future of [`Batcher::try_load`]: a [`Load`] whose fetch's error is shared by every key
/// of its batch.
///
/// # Examples
///
/// ```
/// let users = coalescer::Batcher::fallible(|_: Vec<u32>| async { Err::<Vec<(u32, u32)>, _>("down") });
/// assert!(futures_lite::future::block_on(users.try_load(1)).unwrap_err().is_failed());
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct TryLoad<'a, K: Hash + Eq, V, M, W, S: BuildHasher> {
    inner: Load<'a, K, V, M, W, S>,
}

impl<K, T, E, M, W, S> Future for TryLoad<'_, K, Result<Option<T>, StdArc<E>>, M, W, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    M: FetchMany<K, Result<Option<T>, StdArc<E>>> + Send + Sync + 'static,
    W: Window + Send + Sync + 'static,
    S: BuildHasher,
{
    type Output = Result<Outcome<Option<T>>, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().inner).poll(cx).map(split_try)
    }
}

impl<K: Hash + Eq, V, M, W, S: BuildHasher> fmt::Debug for TryLoad<'_, K, V, M, W, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryLoad").field(&self.inner).finish()
    }
}
