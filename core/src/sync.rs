//! The one place that names `loom`, `core::sync` or `alloc::sync`.
//!
//! Everything else in the crate takes its atomics, `Arc`, `UnsafeCell` and `Mutex` from here, so
//! that `RUSTFLAGS="--cfg loom"` swaps all of them for loom's model-checked versions at once.
//! The loom switch is for this crate's own tests and is outside semver.

// Functions that need the `Arc` of a flight take it as `this: &Arc<Self>`: stable Rust accepts
// `self: &Arc<Self>` only for the standard `Arc`, not for loom's.
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};

/// `Arc::new(make())`, with the value made in its allocation rather than moved into it: a
/// flight is larger than what the compiler copies without a call to `memcpy` (29 instructions
/// per call in the benches' count), and the move after the allocation cannot be elided.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn arc_in_place<T>(make: impl FnOnce() -> T) -> Arc<T> {
    // `Arc::new` of an uninitialised value: its layout is a constant (`Arc::new_uninit`
    // computes it at run time), and copying nothing costs nothing.
    let mut arc = Arc::new(core::mem::MaybeUninit::<T>::uninit());
    Arc::get_mut(&mut arc).expect("a new `Arc` is unique").write(make());
    // SAFETY: the value was written just above; nobody else holds this `Arc` yet.
    unsafe { arc.assume_init() }
}

/// `Arc::new(make())` (loom's `Arc` has no uninitialised form).
#[cfg(loom)]
pub(crate) fn arc_in_place<T>(make: impl FnOnce() -> T) -> Arc<T> {
    Arc::new(make())
}

/// The `Arc` of the public API (an `Arc<Group>` for detached work, the `Arc<E>` of a shared
/// error): always alloc's, even under loom, since it is handed to and from callers.
pub(crate) use alloc::sync::Arc as StdArc;

/// The counters' atomic: always the platform's, even under loom, since the counters are not part
/// of the flight protocol (a model need not explore their interleavings). 64 bits wherever the
/// target has 64-bit atomics, so that a counter does not wrap on a 32-bit target.
#[cfg(target_has_atomic = "64")]
pub(crate) use core::sync::atomic::AtomicU64 as CounterAtomic;
/// The counters' atomic (see above); a target without 64-bit atomics counts in a `usize`.
#[cfg(not(target_has_atomic = "64"))]
pub(crate) use core::sync::atomic::AtomicUsize as CounterAtomic;

/// A number unique to the calling thread while it lives (the address of a thread-local).
#[cfg(all(feature = "std", not(loom)))]
pub(crate) fn thread_token() -> usize {
    std::thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| core::ptr::from_ref(t) as usize)
}

/// A number unique to the calling loom thread. Loom runs all its threads on one OS thread (a
/// `std` thread-local would be shared by all of them) and allocates a loom thread-local on its
/// first use (an address could be that of a finished thread's), so this one is a counter.
#[cfg(all(feature = "std", loom))]
pub(crate) fn thread_token() -> usize {
    static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);
    loom::thread_local!(static TOKEN: usize = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

/// A number unique to the calling thread while it lives; without `std` there are no threads
/// to tell apart (0).
#[cfg(not(feature = "std"))]
pub(crate) fn thread_token() -> usize {
    0
}

/// What [`catch`] caught: a panic's payload, or nothing at all where panics cannot be caught.
#[cfg(feature = "std")]
pub(crate) type Caught = alloc::boxed::Box<dyn core::any::Any + Send>;
/// What [`catch`] caught: a panic's payload, or nothing at all where panics cannot be caught.
#[cfg(not(feature = "std"))]
pub(crate) type Caught = core::convert::Infallible;

/// Runs `f`, catching a panic where the platform can. With `std`, user code (the work, its
/// `Drop`, the blocking closure) runs under `catch_unwind`, which costs nothing until a panic.
/// Without `std` a panic cannot be caught: it unwinds through the caller, and the guards on the
/// way (a finisher's, a driver's, a handle's) release what that caller held.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    #[cfg(feature = "std")]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    }
    #[cfg(not(feature = "std"))]
    {
        Ok(f())
    }
}

/// Resumes a panic that [`catch`] caught.
pub(crate) fn resume(caught: Caught) -> ! {
    #[cfg(feature = "std")]
    {
        std::panic::resume_unwind(caught)
    }
    #[cfg(not(feature = "std"))]
    {
        match caught {}
    }
}

/// A slot for one waker: `register` then check the condition; make the condition true then
/// `wake`, and the registered task is woken (its contract, which loom's model of it keeps too).
/// The `atomic-waker` crate's (the one of `futures` and `async-task`), or loom's under loom.
#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;

/// A slot for one waker (see the other build): loom's mock, with `register` by reference.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        Self(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &core::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }

    pub(crate) fn take(&self) -> Option<core::task::Waker> {
        self.0.take_waker()
    }
}

/// `UnsafeCell` with loom's closure-based access API, so that loom can check every access.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `UnsafeCell` with loom's closure-based access API, so that loom can check every access.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A mutual-exclusion lock for critical sections of a few instructions (an `Arc` clone, a
/// pointer comparison). Used only by [`Single`](crate::Single)'s one slot; it never guards user
/// code. With `std` it is `std::sync::Mutex` (poisoning ignored: nothing that can panic runs
/// under it); under loom, loom's; without `std`, a test-and-test-and-set spin lock.
pub(crate) struct Mutex<T> {
    #[cfg(all(feature = "std", not(loom)))]
    inner: std::sync::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(all(not(feature = "std"), not(loom)))]
    inner: spin::SpinLock<T>,
}

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(all(feature = "std", not(loom)))]
            inner: std::sync::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(all(not(feature = "std"), not(loom)))]
            inner: spin::SpinLock::new(value),
        }
    }

    /// Runs `f` with the lock held.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(all(feature = "std", not(loom)))]
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(loom)]
        let mut guard = self.inner.lock().unwrap();
        #[cfg(all(not(feature = "std"), not(loom)))]
        let mut guard = self.inner.lock();
        f(&mut guard)
    }
}

impl<T> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Mutex { .. }")
    }
}

#[cfg(all(not(feature = "std"), not(loom)))]
mod spin {
    use core::cell::UnsafeCell;
    use core::ops::{Deref, DerefMut};
    use core::sync::atomic::{AtomicBool, Ordering};

    pub(crate) struct SpinLock<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }

    // SAFETY: the lock hands out `&mut T` to one holder at a time, like `std::sync::Mutex`.
    unsafe impl<T: Send> Sync for SpinLock<T> {}

    pub(crate) struct Guard<'a, T>(&'a SpinLock<T>);

    impl<T> SpinLock<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
        }

        pub(crate) fn lock(&self) -> Guard<'_, T> {
            loop {
                if !self.locked.swap(true, Ordering::Acquire) {
                    return Guard(self);
                }
                while self.locked.load(Ordering::Relaxed) {
                    core::hint::spin_loop();
                }
            }
        }
    }

    impl<T> Deref for Guard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: this guard is the one holder of the lock (`lock` swapped `locked` to true).
            unsafe { &*self.0.value.get() }
        }
    }

    impl<T> DerefMut for Guard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: this guard is the one holder of the lock (`lock` swapped `locked` to true).
            unsafe { &mut *self.0.value.get() }
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            self.0.locked.store(false, Ordering::Release);
        }
    }
}
