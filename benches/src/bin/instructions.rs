//! Runs one scenario for one competitor, for instruction counts: `ci/instructions.sh` runs it
//! under `valgrind --tool=callgrind` (which counts instructions, so the figure holds on a busy
//! machine) with 0 calls and with N calls, and divides the difference by N.
//!
//! ```text
//! instructions COMPETITOR SCENARIO CALLS     (SCENARIO: s1 or s4)
//! instructions --list
//! ```
//!
//! * `s1`: one task, each call with a fresh key and work that returns at once.
//! * `s4`: two tasks on one thread (a current-thread runtime, so that the count is repeatable),
//!   one hot key, work that yields once: every round is one leader and one follower.
//!
//! Both run on a current-thread tokio runtime, which every competitor supports.

use coalescer_benches::{Coalesce, Visit, each_async};
use std::hint::black_box;

/// Runs the scenario for the competitor called `name`, if it is this one.
struct Run {
    name: String,
    scenario: String,
    calls: u64,
    found: bool,
}

impl Visit for Run {
    fn visit<C: Coalesce>(&mut self) {
        if C::NAME != self.name {
            return;
        }
        self.found = true;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let target: &'static C = Box::leak(Box::new(C::with_capacity(coalescer_benches::CAPACITY)));
        let calls = self.calls;
        match self.scenario.as_str() {
            "s1" => rt.block_on(async move {
                for key in 0..calls {
                    black_box(target.call(key, move || async move { key }).await);
                }
            }),
            "s4" => rt.block_on(async move {
                for round in 0..calls / 2 {
                    let one = move || async move {
                        tokio::task::yield_now().await;
                        round
                    };
                    let (a, b) = tokio::join!(target.call(7, one), target.call(7, one));
                    black_box((a, b));
                    target.reset(7).await;
                }
            }),
            other => panic!("unknown scenario {other}: s1 or s4"),
        }
    }
}

/// Lists the competitors' names.
struct List;

impl Visit for List {
    fn visit<C: Coalesce>(&mut self) {
        println!("{}", C::NAME);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        each_async(&mut List);
        return;
    }
    let [name, scenario, calls] = args.as_slice() else {
        eprintln!("usage: instructions COMPETITOR s1|s4 CALLS, or instructions --list");
        std::process::exit(2);
    };
    let mut run = Run {
        name: name.clone(),
        scenario: scenario.clone(),
        calls: calls.parse().expect("CALLS"),
        found: false,
    };
    each_async(&mut run);
    if !run.found {
        eprintln!("no competitor named {name:?} (see --list)");
        std::process::exit(2);
    }
}
