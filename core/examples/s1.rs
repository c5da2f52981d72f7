//! S1 for instruction counts (run under `valgrind --tool=callgrind`, which counts instructions
//! whatever else the machine is doing): `N` calls on one task, each with a fresh `u64` key and
//! work that returns at once, so every call leads its own flight. Prints the allocations per
//! call, counted by a global allocator.
//!
//! ```text
//! cargo build --release -p coalescer --example s1 [--features tracing,metrics]
//! valgrind --tool=callgrind target/release/examples/s1 work 200000 [named]
//! ```
//!
//! With `named`, the group is named (`Group::named`): with the `metrics` feature, a named
//! group also times each flight for its histograms, which an unnamed one does not.
//!
//! The instructions of one call are (Ir at N) - (Ir at 0), over N; `ci/observe-overhead.sh`
//! does that for the features off and on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counts allocations.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System` requires too.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is, from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "work".into());
    let calls: u64 = args.next().map_or(100_000, |n| n.parse().expect("a number of calls"));
    let named = match args.next().as_deref() {
        None => false,
        Some("named") => true,
        Some(other) => panic!("unknown option {other}: named or nothing"),
    };
    let mut group = coalescer::Group::<u64, u64>::new();
    let mut shared = coalescer::Group::<u64, u64>::new().shared();
    if named {
        (group, shared) = (group.named("s1"), shared.named("s1"));
    }
    let before = ALLOCATIONS.load(Relaxed);
    futures_lite::future::block_on(async {
        for key in 0..calls {
            let outcome = match mode.as_str() {
                "work" => group.work(&key, || async move { key }).await,
                "shared" => shared.work(&key, || async move { key }).await,
                other => panic!("unknown mode {other}: work or shared"),
            };
            assert_eq!(outcome.map(coalescer::Outcome::into_value).ok(), Some(key));
        }
    });
    let allocations = ALLOCATIONS.load(Relaxed) - before;
    #[allow(clippy::cast_precision_loss)]
    let per_call = if calls == 0 { 0.0 } else { allocations as f64 / calls as f64 };
    println!("{mode}: {calls} calls, {per_call:.2} allocations per call");
}
