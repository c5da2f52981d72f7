//! One flight: the shared state of every caller waiting on one execution of the work.
//!
//! # Access protocol
//!
//! A flight lives in an `Arc` shared by its table entry (while it is the key's current flight),
//! every waiter's handle, and (shared work only) the wakers its work future holds.
//!
//! * `state` is the authority (see [`crate::state`]). The waiter count changes only under the
//!   table lock while the flight is current, so joins and "last one out" never race.
//! * `result` is written once, by the holder of `CLAIMED` (the one finisher), before the release
//!   that moves the phase to `DONE` or `ABORTED`; it is read (cloned) only after an acquire load
//!   has seen one of those phases, by a caller counted at that moment; the last of them (the
//!   count at 1, every other reader's release seen) takes it instead of cloning. No user code
//!   runs between the claim and the release: the value is moved in, never cloned there.
//! * `work` (shared work only) is touched by the holder of `DRIVING` alone, by the holder of
//!   `CLAIMED` (nobody takes `DRIVING` once it is set), or by the last waiter out once the count is
//!   zero and the flight is closing (nobody can take `DRIVING`).
//! * `event` wakes sleeping waiters: all of them when the flight finishes, when a work-mode
//!   flight is vacated, and when shared work's waker fires while nobody is polling the work.

use crate::observe::FlightObs;
use crate::outcome::Aborted;
use crate::state::{self, State};
use crate::sync::{
    Arc, AtomicUsize, AtomicWaker,
    Ordering::{AcqRel, Acquire, Relaxed},
    UnsafeCell,
};
use alloc::boxed::Box;
use core::future::Future;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use event_listener::{Event, EventListener};

/// A shared flight's work, owned by the flight.
pub(crate) type BoxedWork<V> = Pin<Box<dyn Future<Output = Result<V, Aborted>> + Send>>;

/// What a flight owns besides its result, on its way to [`Flight::install`]: shared work to
/// drive (boxed, or small enough to be stored in the flight itself), or a detached task's handle
/// (dropping that handle detaches or aborts the task, as its `Spawn` chose). Internal.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub(crate) enum Owned<V> {
    Work(BoxedWork<V>),
    /// Small shared work, carried here until the flight stores it (see [`Owned::shared`]).
    Inline(InlineWork<V>),
    /// The task's handle, kept only when dropping it aborts the task.
    Task(#[allow(dead_code)] Option<Box<dyn Send>>),
}

impl<V> Owned<V> {
    /// Shared work: stored in the flight's own allocation when it fits [`INLINE_WORDS`] words
    /// (no allocation of its own), boxed otherwise.
    pub(crate) fn shared<F>(work: F) -> Self
    where
        F: Future<Output = Result<V, Aborted>> + Send + 'static,
        V: Send + Sync + 'static,
    {
        if fits_inline::<F>() { Self::Inline(InlineWork::new(work)) } else { Self::Work(Box::pin(work)) }
    }
}

/// What the flight keeps of what it owns (see [`Owned`]). Small shared work is stored in the
/// flight's `slot`, and only its vtable here.
enum Stored<V> {
    Work(BoxedWork<V>),
    /// Polls and drops the work in the flight's `slot`.
    Inline(VTable<V>),
    Task(#[allow(dead_code)] Option<Box<dyn Send>>),
}

/// Words of shared work that a flight stores in itself instead of boxing it. The flight's result
/// slot doubles as this work's place (see [`Slot`]), so the flight grows only when its result
/// slot is smaller than this (for a `u64` value it is exactly this size).
const INLINE_WORDS: usize = 4;

/// Whether `F` is stored in its flight, not boxed.
const fn fits_inline<F>() -> bool {
    size_of::<F>() <= size_of::<[usize; INLINE_WORDS]>() && align_of::<F>() <= align_of::<usize>()
}

/// A flight's result, or its small shared work while that is installed: the two are never
/// alive at once. The work is installed before anyone can read the result, and dropped (by the
/// finisher, which holds `CLAIMED`, or by the last waiter out of a closing flight) before the
/// result is published; the slot holds an empty result again once the work is gone (even when
/// the work's `Drop` panics). `repr(C)`: both fields start at the slot's address.
#[repr(C)]
union Slot<V> {
    result: ManuallyDrop<Option<Result<V, Aborted>>>,
    work: MaybeUninit<[usize; INLINE_WORDS]>,
}

/// Polls a flight's inline work once; the caller holds `DRIVING` (see [`InlineWork::new`]).
type InlineDriveFn<V> = unsafe fn(&Arc<Flight<V>>) -> Poll<Result<V, Aborted>>;

/// How to drive (see [`Flight::drive`]) and drop a future stored in a flight's [`Slot`].
struct InlineVTable<V> {
    drive: InlineDriveFn<V>,
    drop: unsafe fn(*mut ()),
}

/// A `&'static InlineVTable<V>`, held as a pointer so that `V` need not be `'static` wherever a
/// flight is named (only shared work, whose `V` is `'static`, makes one).
struct VTable<V>(NonNull<InlineVTable<V>>);

impl<V> Clone for VTable<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for VTable<V> {}

// SAFETY: it is a `&'static` to function pointers, never written.
unsafe impl<V> Send for VTable<V> {}
// SAFETY: as for `Send`.
unsafe impl<V> Sync for VTable<V> {}

impl<V> VTable<V> {
    fn get(&self) -> &InlineVTable<V> {
        // SAFETY: made from a `&'static` in `InlineWork::new`; the vtable is never written.
        unsafe { self.0.as_ref() }
    }
}

/// Small shared work on its way into its flight (see [`Owned::shared`]): the future's bytes,
/// and how to poll and drop it. Dropped before it is installed, it drops the future. It is
/// `Send` (raw bytes), and only `Send` futures are put in it (`new`).
pub(crate) struct InlineWork<V> {
    data: MaybeUninit<[usize; INLINE_WORDS]>,
    vtable: VTable<V>,
}

impl<V> InlineWork<V> {
    fn new<F>(work: F) -> Self
    where
        F: Future<Output = Result<V, Aborted>> + Send + 'static,
        V: Send + Sync + 'static,
    {
        assert!(fits_inline::<F>(), "made only for work that fits"); // folded away
        /// Polls the `F` in the flight's slot once, with the flight's waker.
        ///
        /// # Safety
        ///
        /// The caller holds `DRIVING`, and the slot holds a live `F` (installed, not dropped).
        unsafe fn drive<F, V>(this: &Arc<Flight<V>>) -> Poll<F::Output>
        where
            F: Future<Output = Result<V, Aborted>>,
            V: Send + Sync + 'static,
        {
            Flight::with_waker(this, |cx| {
                this.slot.with_mut(|slot| {
                    // SAFETY: the caller's obligation: the slot holds an `F`, and the holder of
                    // `DRIVING` is the one that reaches it.
                    let work = unsafe { &mut *slot.cast::<F>() };
                    // SAFETY: the `F` does not move until it is dropped (it lies in the flight).
                    unsafe { Pin::new_unchecked(work) }.poll(cx)
                })
            })
        }
        /// Drops the `F` at `data` in place.
        unsafe fn drop<F>(data: *mut ()) {
            // SAFETY: the caller passes the address of a live `F`, and drops it only this once.
            unsafe { core::ptr::drop_in_place(data.cast::<F>()) }
        }
        let mut data = MaybeUninit::<[usize; INLINE_WORDS]>::uninit();
        // SAFETY: `data` is large and aligned enough for `F` (`fits_inline`) and holds nothing.
        unsafe { data.as_mut_ptr().cast::<F>().write(work) };
        let vtable: &'static InlineVTable<V> =
            const { &InlineVTable { drive: drive::<F, V>, drop: drop::<F> } };
        Self { data, vtable: VTable(NonNull::from(vtable)) }
    }
}

impl<V> Drop for InlineWork<V> {
    fn drop(&mut self) {
        // SAFETY: `data` holds the (never polled) future `vtable` was made for; `install` moves
        // it out with `ManuallyDrop`, so this runs only for work that was never installed.
        unsafe { (self.vtable.get().drop)(self.data.as_mut_ptr().cast()) }
    }
}

/// How a flight's work runs, fixed when the flight is created. Internal.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub enum Mode<V> {
    /// In the leader's future; a dropped leader vacates the flight for a promotion.
    Work,
    /// Owned by the flight and polled by whichever waiter holds `DRIVING`.
    Shared(DriveFn<V>),
    /// Spawned on a runtime; the task counts as a waiter and finishes the flight itself.
    /// With `abort`, the last caller out frees the key and drops (aborts) the task.
    Detached { abort: bool },
}

impl<V> Clone for Mode<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Mode<V> {}

/// Polls a shared flight's work once; the caller holds `DRIVING`. Made where the bounds that a
/// waker needs (`V: Send + Sync + 'static`) are known, so that any waiter can call it.
#[doc(hidden)]
pub(crate) type DriveFn<V> = fn(&Arc<Flight<V>>) -> Poll<Result<V, Aborted>>;

/// The state one execution of the work shares with its waiters (internal; public only so that
/// it can appear in the bounds of the public futures).
#[doc(hidden)]
pub struct Flight<V> {
    state: AtomicUsize,
    event: Event,
    /// The waker of a detached flight's leader, which waits here rather than on `event`: it is
    /// one waiter, so it needs no listener (an allocation) and no list (another, made by the
    /// event's first listener). Followers listen on `event`.
    leader_waker: AtomicWaker,
    /// The result; before it, the installed work when that is small (see [`Slot`]).
    slot: UnsafeCell<Slot<V>>,
    work: UnsafeCell<Option<Stored<V>>>,
    mode: Mode<V>,
    /// The key's hash, computed once when the flight was created: the table removes the entry by
    /// this and the flight's identity, without running the key's `Hash` or `Eq` again.
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // only the keyed `Group` (std) uses it
    hash: u64,
    /// Its span and start, for the observability features (empty without them).
    obs: FlightObs,
    /// The thread running this flight's work through the blocking API (0 when none), so that a
    /// re-entrant blocking call on that thread panics instead of waiting on itself.
    #[cfg(feature = "std")]
    blocking_thread: AtomicUsize,
}

// SAFETY: the result is written by one thread before a release and read (`&V`, to clone) by many
// after an acquire, so it needs `V: Send + Sync`; the work (boxed, or in the slot: only `Send`
// futures are put there) is `Send` and reached by one thread at a time (the holder of
// `DRIVING`, then the one that drops it); everything else is atomics and an `Event`.
unsafe impl<V: Send + Sync> Sync for Flight<V> {}

impl<V> Flight<V> {
    /// A new flight with its leader counted (and, detached, its task). A shared flight starts
    /// with `DRIVING` held by the leader, which installs the work before anyone may poll it.
    pub(crate) fn new(mode: Mode<V>, hash: u64, permit: bool, obs: FlightObs) -> Self {
        let state = match mode {
            Mode::Work => state::ONE_WAITER,
            Mode::Shared(_) => state::ONE_WAITER | state::DRIVING,
            // `DRIVING` marks a detached flight whose task is not installed yet.
            Mode::Detached { .. } => (2 * state::ONE_WAITER) | state::DRIVING,
        };
        let permit = if permit { state::PERMIT } else { 0 };
        Self {
            state: AtomicUsize::new(state | permit | state::RUNNING),
            event: Event::new(),
            leader_waker: AtomicWaker::new(),
            slot: UnsafeCell::new(Slot { result: ManuallyDrop::new(None) }),
            work: UnsafeCell::new(None),
            mode,
            hash,
            obs,
            #[cfg(feature = "std")]
            blocking_thread: AtomicUsize::new(0),
        }
    }

    pub(crate) fn mode(&self) -> Mode<V> {
        self.mode
    }

    /// What the flight carries for observability.
    pub(crate) fn obs(&self) -> &FlightObs {
        &self.obs
    }

    /// The hash of the flight's key (see the field).
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // only the keyed `Group` (std) uses it
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Whether the flight owns its work and its waiters drive it (shared-work mode).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.mode, Mode::Shared(_))
    }

    /// Whether the flight's work is a spawned task, which counts as one waiter.
    pub(crate) fn is_detached(&self) -> bool {
        matches!(self.mode, Mode::Detached { .. })
    }

    pub(crate) fn load(&self) -> State {
        State(self.state.load(Acquire))
    }

    /// Counts one more waiter. The caller holds the table lock (shared: other joins may count
    /// themselves at the same time, hence the atomic add) and the flight is current.
    pub(crate) fn join(&self) {
        // Relaxed: the table lock orders this with every later decision about the count.
        self.state.fetch_add(state::ONE_WAITER, Relaxed);
    }

    /// One waiter leaves; returns the new state. Leaving a finished flight gives up that
    /// caller's read: the last reader out drops the stored result.
    pub(crate) fn leave(&self, vacate: bool) -> State {
        let next = self.update(|s| Some(s.leave(vacate))).map_or_else(|s| s, |s| s.leave(vacate));
        if next.is_finished() && next.waiters() == 0 {
            drop(self.take_result());
        }
        next
    }

    /// One read-modify-write of the state word; returns the previous state (`Err` when `f`
    /// declined).
    fn update(&self, mut f: impl FnMut(State) -> Option<State>) -> Result<State, State> {
        self.state.fetch_update(AcqRel, Acquire, |s| f(State(s)).map(|n| n.0)).map(State).map_err(State)
    }

    /// Marks an abandoned flight as closing, unless someone is already ending it. The caller is
    /// the waiter whose leave abandoned it (under the table lock while it is current); its owned
    /// work is about to be dropped.
    pub(crate) fn close(&self) -> bool {
        let closing = |s: State| {
            (s.phase() == state::RUNNING && !s.is_claimed())
                .then_some(State((s.0 & !state::PHASE_MASK) | state::CLOSING))
        };
        self.update(closing).is_ok()
    }

    /// Ends a closing flight once its work is dropped and its entry removed: it is final, with no
    /// result (nobody is counted to read one), and the callers waiting for the key are woken.
    pub(crate) fn closed(&self) {
        if self.claim() {
            self.update(|s| Some(s.finish(state::ABORTED, true))).ok();
            self.notify_all();
        }
    }

    /// Takes the lead of a vacated work-mode flight; true for the one waiter that wins. A change
    /// of the count meanwhile (a join, a leave) does not make a vacant flight look taken.
    pub(crate) fn try_promote(&self) -> bool {
        self.update(State::promote).is_ok()
    }

    /// Clears `PERMIT`: true for the one caller that gives the flight's permit back.
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // only the keyed `Group` (std) uses it
    pub(crate) fn take_permit(&self) -> bool {
        self.state.fetch_and(!state::PERMIT, AcqRel) & state::PERMIT != 0
    }

    /// Claims the end of the flight: true for the one caller (or task) that will publish its
    /// result. Every would-be finisher asks; the others leave the flight to the winner.
    pub(crate) fn claim(&self) -> bool {
        self.update(State::claim).is_ok()
    }

    /// A listener for the next notification; the caller checks the state again after this.
    pub(crate) fn listen(&self) -> EventListener {
        let listener = self.event.listen();
        // After the registration, before the caller's check (see `LISTENED`). A load first:
        // when another listener set it, this one's check comes after that, so it sees every
        // change made by a notifier that found the flag clear; thousands of waiters do not
        // all write the state word.
        if self.load().0 & state::LISTENED == 0 {
            self.state.fetch_or(state::LISTENED, AcqRel);
        }
        listener
    }

    /// Wakes every listener on the event, whether or not the state word changed: for a
    /// condition outside it (the flight's span, `FlightObs`).
    pub(crate) fn notify_listeners(&self) {
        self.event.notify(usize::MAX);
    }

    /// Registers the waker of a detached flight's leader (see the field); the leader checks
    /// the state again after it (register, then check: never check-then-register).
    pub(crate) fn register_leader(&self, waker: &Waker) {
        self.leader_waker.register(waker);
    }

    /// Drops a leaving leader's waker, so that the flight does not keep its task alive.
    pub(crate) fn unregister_leader(&self) {
        drop(self.leader_waker.take());
    }

    /// Wakes every sleeping waiter. The caller has just changed the state with a
    /// read-modify-write (the condition its waiters check): when no listener was registered
    /// before that, none is asleep, and the event is left alone (see `LISTENED`).
    pub(crate) fn notify_all(&self) {
        if self.load().0 & state::LISTENED != 0 {
            self.notify_listeners();
        }
        if self.is_detached() {
            self.leader_waker.wake();
        }
    }

    /// Ends the flight in `phase` with `result`; the caller holds `CLAIMED` and has already
    /// taken the flight out of its table, so no waiter can join any more. The result is moved
    /// in (no user code runs before the release), and every counted caller reads it from there:
    /// the finisher too when `finisher_reads` (a caller; not a detached task). Returns the state
    /// the flight ended in.
    pub(crate) fn publish(&self, phase: usize, result: Result<V, Aborted>, finisher_reads: bool) -> State {
        // SAFETY: the caller holds `CLAIMED`, so it is the one writer; readers wait for the
        // release below. The slot holds no result yet (this is its one write) and no work (the
        // finisher dropped it first), so there is nothing to drop in it.
        self.slot.with_mut(|slot| unsafe { result_in(slot).write(Some(result)) });
        // The new state is kept from the update's last (successful) attempt, not computed again.
        let mut next = State(0);
        let prev = self
            .update(|s| {
                next = s.finish(phase, finisher_reads);
                Some(next)
            })
            .unwrap_or_else(|s| s);
        // Counted waiters to hand the result to, or callers waiting for a closing flight to go.
        if next.waiters() > usize::from(finisher_reads) || prev.is_closing() {
            self.notify_all();
        }
        if next.waiters() == 0 {
            drop(self.take_result()); // nobody reads it
        }
        next
    }

    /// The published result, for a caller that was counted when the flight ended and has seen
    /// it end (an acquire load of a final phase): a clone, or the stored value itself for the
    /// last reader. With whether the result went to more than one caller.
    ///
    /// # Panics
    ///
    /// When `V::clone` panics; the read still counts (the last reader drops the stored value).
    pub(crate) fn read(&self) -> (Result<V, Aborted>, bool)
    where
        V: Clone,
    {
        let s = self.load();
        debug_assert!(s.is_finished() && s.waiters() > 0, "a reader was counted when the flight ended");
        if s.waiters() == 1 {
            // Every other reader has cloned and counted itself out: the value is this one's.
            self.state.fetch_sub(state::ONE_WAITER, AcqRel);
            let result = self.take_result().expect("a counted reader finds the result stored");
            return (result, s.is_shared());
        }
        /// Counts the read out even when the clone unwinds.
        struct Read<'a, V>(&'a Flight<V>);
        impl<V> Drop for Read<'_, V> {
            fn drop(&mut self) {
                // A finished flight's count only goes down, and nothing else in the word depends
                // on it: one subtraction is the whole leave (no compare-and-swap loop).
                let prev = State(self.0.state.fetch_sub(state::ONE_WAITER, AcqRel));
                debug_assert!(prev.is_finished() && prev.waiters() > 0, "a reader leaves once");
                if prev.waiters() == 1 {
                    drop(self.0.take_result()); // the last reader out (the others cloned first)
                }
            }
        }
        let _read = Read(self);
        // SAFETY: the caller saw a final phase with an acquire load; the finisher wrote the slot
        // before its release, and only the last reader (after this one's release) takes it.
        let result = self.slot.with(|slot| unsafe { (*result_in(slot.cast_mut())).clone() });
        (result.expect("a counted reader finds the result stored"), s.is_shared())
    }

    /// Takes the stored result; the caller is the last reader, or the finisher of a flight that
    /// nobody reads.
    fn take_result(&self) -> Option<Result<V, Aborted>> {
        // SAFETY: see the callers: no other reader or writer can reach the slot any more.
        self.slot.with_mut(|slot| unsafe { (*result_in(slot)).take() })
    }

    /// Takes the owned work out, to drop it: dropping the returned guard drops it, in place for
    /// work stored in the flight (pinned work never moves). The caller holds `CLAIMED` (shared
    /// work), or is the one waiter whose leave closed the flight (no other can reach the work
    /// then), until the guard is dropped.
    pub(crate) fn take_work(&self) -> TakenWork<'_, V> {
        TakenWork(self)
    }

    /// Installs the owned work and lets go of `DRIVING`. The caller is the leader, right after
    /// creating the flight: nobody else reaches the slot until then (shared work is polled only
    /// under `DRIVING`; a detached task's handle is taken only by the waiter that abandons the
    /// flight, and the leader is counted until after this call). Shared work is marked `WOKEN`,
    /// so that its first poll goes to whichever waiter drives next: the leader, right away.
    ///
    /// Returns true when a detached task was dropped inside `Spawn::spawn` (see
    /// [`task_dropped_in_spawn`](Self::task_dropped_in_spawn)): the leader must end the flight.
    pub(crate) fn install(&self, work: Owned<V>) -> bool {
        let stored = match work {
            Owned::Work(work) => Stored::Work(work),
            Owned::Task(task) => Stored::Task(task),
            Owned::Inline(work) => {
                let work = ManuallyDrop::new(work); // its future moves into the slot
                // SAFETY: see above; the slot holds an empty result (nothing to drop), and is
                // large enough for the work's words (`Slot::work`, at its start: `repr(C)`).
                self.slot.with_mut(|slot| unsafe {
                    slot.cast::<[usize; INLINE_WORDS]>().cast::<MaybeUninit<_>>().write(work.data)
                });
                Stored::Inline(work.vtable)
            }
        };
        // SAFETY: see above; the slot is empty (work is installed once), nothing to drop there.
        self.work.with_mut(|slot| unsafe { slot.write(Some(stored)) });
        if self.is_shared() {
            // `DRIVING` (held since the flight was made) goes and `WOKEN` (clear: no waker of the
            // work existed before) comes, in one step.
            let prev = State(self.state.fetch_xor(state::DRIVING | state::WOKEN, AcqRel));
            debug_assert!(prev.is_driving() && !prev.is_woken(), "shared work is installed once");
            return false;
        }
        let prev = State(self.state.fetch_and(!(state::DRIVING | state::WOKEN), AcqRel));
        self.is_detached() && prev.is_woken()
    }

    /// A detached task was dropped on its leader's thread before the leader installed it, that
    /// is, inside `Spawn::spawn` (which may be about to panic). Marked with `WOKEN`, which
    /// detached flights do not otherwise use; the leader reads it in `install`.
    pub(crate) fn task_dropped_in_spawn(&self) {
        self.state.fetch_or(state::WOKEN, AcqRel);
    }

    /// Takes `DRIVING` when the shared work wants polling (its waker fired) and nobody is
    /// polling it.
    pub(crate) fn try_drive(&self) -> bool {
        let mut s = self.load();
        while s.phase() == state::RUNNING && s.is_woken() && !s.is_driving() && !s.is_claimed() {
            let next = (s.0 | state::DRIVING) & !state::WOKEN;
            match self.state.compare_exchange_weak(s.0, next, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(now) => s = State(now),
            }
        }
        false
    }

    /// Gives `DRIVING` back after a poll that returned `Pending`. Returns true when the work's
    /// waker fired during that poll: nobody was told, so the caller must try to drive again.
    pub(crate) fn stop_driving(&self) -> bool {
        State(self.state.fetch_and(!state::DRIVING, AcqRel)).is_woken()
    }

    /// Polls the shared work once; the caller holds `DRIVING`.
    pub(crate) fn drive(this: &Arc<Self>) -> Poll<Result<V, Aborted>> {
        // SAFETY: the caller holds `DRIVING`: nobody else reaches the work.
        let inline = this.work.with_mut(|slot| match unsafe { &*slot } {
            Some(Stored::Inline(vtable)) => Some(*vtable),
            _ => None,
        });
        if let Some(vtable) = inline {
            // SAFETY: the caller holds `DRIVING`, and the slot holds the work `vtable` is for
            // (installed with it, and dropped only by a holder of `CLAIMED` or the last waiter
            // out of a closing flight, after taking the vtable out).
            return unsafe { (vtable.get().drive)(this) };
        }
        match this.mode {
            Mode::Shared(drive) => drive(this),
            _ => unreachable!("only shared flights are driven"),
        }
    }

    /// Marks (or unmarks) the calling thread as the one running this flight's work in the
    /// blocking API.
    #[cfg(feature = "std")]
    pub(crate) fn run_blocking_on_this_thread(&self, running: bool) {
        let token = if running { crate::sync::thread_token() } else { 0 };
        self.blocking_thread.store(token, Relaxed);
    }

    /// Whether the calling thread is running this flight's work in the blocking API.
    #[cfg(feature = "std")]
    pub(crate) fn is_run_by_this_thread(&self) -> bool {
        self.blocking_thread.load(Relaxed) == crate::sync::thread_token()
    }
}

impl<V: Send + Sync + 'static> Flight<V> {
    /// The [`DriveFn`] of a shared flight: polls the work with a waker that points at the
    /// flight, not at whichever waiter happens to drive, so a wake reaches the flight even when
    /// that waiter's task has stalled.
    pub(crate) fn poll_work(this: &Arc<Self>) -> Poll<Result<V, Aborted>> {
        Self::with_waker(this, |cx| {
            // SAFETY: the caller holds `DRIVING` (the `DriveFn` contract), so this is the one
            // reference to the slot; the future stays pinned in its box.
            this.work.with_mut(|slot| match unsafe { &mut *slot } {
                Some(Stored::Work(work)) => work.as_mut().poll(cx),
                _ => unreachable!("a driven flight has its boxed work installed (`drive` polls inline work)"),
            })
        })
    }

    /// Calls `f` with a context whose waker points at the flight.
    fn with_waker<R>(this: &Arc<Self>, f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        // A waker that borrows `this`'s count for the poll instead of taking one: it is never
        // dropped (so it gives back nothing it did not take), and a clone the work keeps takes a
        // count of its own through the vtable.
        let data = Arc::as_ptr(this).cast::<()>();
        // SAFETY: `data` points at the flight, which `this` keeps alive for the whole poll; the
        // vtable's functions expect such a pointer; the waker is never dropped nor woken by
        // value (`ManuallyDrop`, and `Context` lends it out as `&Waker` only), so no count is
        // given back that this waker did not take. `Self: Send + Sync + 'static`.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &Self::VTABLE)) });
        f(&mut Context::from_waker(&waker))
    }

    /// The work's waker fired.
    ///
    /// If a waiter is polling the work right now it will see `WOKEN` when it stops and poll
    /// again. Otherwise every sleeping waiter is woken, once per burst of wakes: nothing tells
    /// which waiters' tasks are still being polled, and waking any strict subset could pick only
    /// stalled ones. The first waiter polled takes `DRIVING`; the rest find `WOKEN` clear and
    /// sleep again without touching the work.
    fn wake_work(&self) {
        let prev = State(self.state.fetch_or(state::WOKEN, AcqRel));
        let idle = !prev.is_driving() && !prev.is_woken() && !prev.is_claimed();
        if prev.phase() == state::RUNNING && idle && prev.waiters() > 0 {
            self.notify_all();
        }
    }

    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(Self::waker_clone, Self::waker_wake, Self::waker_wake_by_ref, Self::waker_drop);

    unsafe fn waker_clone(data: *const ()) -> RawWaker {
        // SAFETY: `data` came from `Arc::into_raw` in `waker` and its count is still held.
        unsafe { Arc::increment_strong_count(data.cast::<Self>()) };
        RawWaker::new(data, &Self::VTABLE)
    }

    unsafe fn waker_wake(data: *const ()) {
        // SAFETY: `data` came from `Arc::into_raw`; waking by value consumes that count.
        let flight = unsafe { Arc::from_raw(data.cast::<Self>()) };
        flight.wake_work();
    }

    unsafe fn waker_wake_by_ref(data: *const ()) {
        // SAFETY: `data` came from `Arc::into_raw` and the waker still owns its count.
        let flight = unsafe { &*data.cast::<Self>() };
        flight.wake_work();
    }

    unsafe fn waker_drop(data: *const ()) {
        // SAFETY: `data` came from `Arc::into_raw`; dropping the waker gives its count back.
        unsafe { Arc::decrement_strong_count(data.cast::<Self>()) };
    }
}

/// The result in a flight's slot (see [`Slot`]).
fn result_in<V>(slot: *mut Slot<V>) -> *mut Option<Result<V, Aborted>> {
    slot.cast()
}

impl<V> Drop for Flight<V> {
    #[inline(always)] // a test and a branch for every flight that ends: no call of its own
    fn drop(&mut self) {
        // Work in the slot is dropped before the result is (a flight is dropped with its work
        // still installed only when its waiters went without finishing or closing it: a panic
        // where panics cannot be caught). Boxed work and a task's handle are dropped with the
        // `work` field, after this.
        // SAFETY: nothing else reaches the flight any more.
        if self.work.with_mut(|slot| matches!(unsafe { &*slot }, Some(Stored::Inline(_)))) {
            drop(self.take_work());
        }
        // SAFETY: the slot holds a result now (`TakenWork`), and nothing reaches it any more.
        self.slot.with_mut(|slot| unsafe { core::ptr::drop_in_place(result_in(slot)) });
    }
}

/// The owned work of a flight, taken to be dropped (see [`Flight::take_work`]).
pub(crate) struct TakenWork<'a, V>(&'a Flight<V>);

impl<V> Drop for TakenWork<'_, V> {
    fn drop(&mut self) {
        let flight = self.0;
        // SAFETY: the creator of this guard is the one that may reach the work (`take_work`).
        let inline = flight.work.with_mut(|slot| match unsafe { &*slot } {
            Some(Stored::Inline(vtable)) => Some(*vtable),
            _ => None,
        });
        let Some(vtable) = inline else {
            // SAFETY: see above.
            drop(flight.work.with_mut(|slot| unsafe { (*slot).take() }));
            return;
        };
        // The vtable is all the field holds (nothing to drop there); the work is in the slot.
        // SAFETY: see above.
        flight.work.with_mut(|slot| unsafe { slot.write(None) });
        /// Leaves an empty result in the slot once the work is dropped, even if its `Drop`
        /// panics.
        struct Empty<'a, V>(&'a Flight<V>);
        impl<V> Drop for Empty<'_, V> {
            fn drop(&mut self) {
                // SAFETY: the work's place is dead; nobody else reaches the slot until the
                // flight ends (after this drop).
                self.0.slot.with_mut(|slot| unsafe { result_in(slot).write(None) });
            }
        }
        let _empty = Empty(flight);
        // SAFETY: the slot holds the installed work `vtable` was made for, alive (it is taken
        // out of `work` here, once), and it is dropped where it lies.
        flight.slot.with_mut(|slot| unsafe { (vtable.get().drop)(slot.cast()) });
    }
}

impl<V> core::fmt::Debug for Flight<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Flight").field("state", &self.load()).field("shared", &self.is_shared()).finish()
    }
}
