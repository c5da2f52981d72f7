//! The floor under detached work on tokio: what a bare `tokio::spawn` of a trivial task and an
//! await of its `JoinHandle` cost on the current-thread runtime that `instructions` uses.
//!
//! ```text
//! spawn-floor CALLS [--dry]    for callgrind: run it with `--dry` (runtime built, nothing
//!                              spawned) and without, and divide the difference by CALLS, as
//!                              `ci/instructions.sh` does
//! spawn-floor --allocs         allocations per spawn + await, and per `block_on` of a yield
//!                              (what `benches/allocs.rs` does between polls of a detached call)
//! ```
//!
//! The detached row of `instructions` minus this floor is what coalescer adds on top of the
//! runtime (the flight, its table entry, the leader's wait and read).

use coalescer_benches::counting::{Counting, counted};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn usage() -> ! {
    eprintln!("usage: spawn-floor CALLS [--dry], or spawn-floor --allocs");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    if args.first().map(String::as_str) == Some("--allocs") {
        const N: u64 = 10_000;
        let spawn = |rt: &tokio::runtime::Runtime| {
            rt.block_on(async {
                for n in 0..N {
                    black_box(tokio::spawn(async move { black_box(n) }).await.expect("never panics"));
                }
            })
        };
        spawn(&rt); // warm up
        let ((), spawned) = counted(|| spawn(&rt));
        let ((), yielded) = counted(|| {
            for _ in 0..N {
                rt.block_on(tokio::task::yield_now());
            }
        });
        println!("allocations per tokio::spawn + await: {:.2}", spawned as f64 / N as f64);
        println!("allocations per block_on(yield_now()): {:.2}", yielded as f64 / N as f64);
        return;
    }
    let calls: u64 = args.first().and_then(|c| c.parse().ok()).unwrap_or_else(|| usage());
    if args.get(1).is_some_and(|a| a == "--dry") {
        return;
    }
    rt.block_on(async move {
        for n in 0..calls {
            let v = tokio::spawn(async move { black_box(n) }).await.expect("the task never panics");
            black_box(v);
        }
    });
}
