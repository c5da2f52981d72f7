//! What a call allocates: one block per leader (its flight), a detached leader one more (its
//! task), and a waiting follower its listener (the first one also the flight's listener list).
//! Counted by a global allocator of this test binary, per thread, around polls made by hand
//! with a no-op waker, so that no executor's allocations count.

mod common;

use coalescer::Group;
use common::Hold;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Counts the allocations (and reallocations) of the calling thread.
struct PerThread;

thread_local!(static ALLOCATIONS: Cell<u64> = const { Cell::new(0) });

fn count() {
    // `try_with`: a thread's last allocations may come after its thread-locals are gone.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter
// is a const-initialised thread-local `Cell` without a destructor, which never allocates.
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: PerThread = PerThread;

/// Runs `f`; returns its result and the allocations this thread made meanwhile.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}

fn poll<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Key 100 warms each test's paths up first: a thread's first call sets up what the map keeps
/// per thread (scc's epoch state), and with the `tracing` feature (on when the workspace is
/// tested together) each event's first use registers its callsite.
const WARM: u64 = 100;

#[test]
fn a_lone_call_allocates_only_its_flight() {
    let group = Group::<u64, u64>::with_capacity(64);
    for key in [WARM, 0, 1, 2] {
        let (polled, n) = counted(|| poll(pin!(group.work(&key, || async { 7 }))));
        assert!(matches!(polled, Poll::Ready(Ok(ref got)) if *got.value() == 7));
        if key != WARM {
            assert_eq!(n, 1, "call {key}: the flight and nothing else");
        }
    }
}

#[test]
fn the_first_waiting_follower_allocates_the_listener_list_and_its_listener_the_others_their_listener() {
    let group = Group::<u64, u64>::with_capacity(64);
    for key in [WARM, 1] {
        let mut leader = Box::pin(group.work(&key, std::future::pending));
        let mut followers: Vec<_> =
            (0..3).map(|_| Box::pin(group.work(&key, std::future::pending))).collect();
        assert!(poll(leader.as_mut()).is_pending());
        let counts: Vec<u64> =
            followers.iter_mut().map(|f| counted(|| poll(f.as_mut()).is_pending()).1).collect();
        if key != WARM {
            assert_eq!(counts, [2, 1, 1]);
        }
    }
}

#[test]
fn a_detached_leader_allocates_its_flight_and_its_task_and_nothing_to_wait_with() {
    let spawner = Hold::with_capacity(1);
    let group = Arc::new(Group::<u64, u64>::with_capacity(64).detached(spawner.clone()));
    for key in [WARM, 0, 1, 2] {
        let ((), n) = counted(|| {
            let mut leader = pin!(group.work(&key, || async { 7 }));
            assert!(poll(leader.as_mut()).is_pending(), "the task has not run");
            spawner.run_task();
            assert!(matches!(poll(leader.as_mut()), Poll::Ready(Ok(ref got)) if *got.value() == 7));
        });
        if key != WARM {
            assert_eq!(n, 2, "call {key}: the flight and the task's box, no listener and no listener list");
        }
    }
}
