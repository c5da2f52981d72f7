//! Runs one scenario for one competitor, for instruction counts: `ci/instructions.sh` runs it
//! under `valgrind --tool=callgrind` (which counts instructions, so the figure holds on a busy
//! machine) once with `--dry` (everything built, no call made) and once without, and divides the
//! difference by CALLS.
//!
//! ```text
//! instructions KEYS COMPETITOR HASHER SCENARIO CALLS [--dry]   (KEYS: u64 or String; SCENARIO: s1 or s4)
//! instructions --list      one line per competitor: NAME <tab> HASHER <tab> 1 if its default hasher
//! ```
//!
//! * `s1`: one task, each call with a fresh key and work that returns at once.
//! * `s4`: two tasks on one thread (a current-thread runtime, so that the count is repeatable),
//!   one hot key, work that yields once: every round is one leader and one follower.
//!
//! Both run on a current-thread tokio runtime, which every competitor supports. The keys are
//! built before the calls, in the dry run too; each call then clones its key (a copy for `u64`,
//! an allocation for `String`) and hands it to `Coalesce::call`, which lends it to coalescer's
//! `work(&key, ..)`. LEAD: once `Coalesce::call` takes `&Self::Key`, pass `&keys[i]` / `&hot`
//! below instead of the clones to measure a caller that already holds its key.

use coalescer_benches::{BenchKey, Coalesce, VisitAny, each_variant};
use std::hint::black_box;

/// Runs the scenario for the competitor called `name` with `hasher`, if it is this one.
struct Run {
    name: String,
    hasher: String,
    scenario: String,
    calls: u64,
    dry: bool,
    found: bool,
}

impl VisitAny for Run {
    fn visit<C: Coalesce>(&mut self) {
        if C::NAME != self.name || C::HASHER != self.hasher {
            return;
        }
        self.found = true;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let target: &'static C = Box::leak(Box::new(C::with_capacity(coalescer_benches::CAPACITY)));
        let (calls, dry) = (self.calls, self.dry);
        match self.scenario.as_str() {
            "s1" => {
                let keys: Vec<C::Key> = (0..calls).map(C::Key::fresh).collect();
                if dry {
                    black_box(&keys);
                    return;
                }
                rt.block_on(async move {
                    for (n, key) in keys.iter().enumerate() {
                        black_box(target.call(key.clone(), move || async move { n as u64 }).await);
                        if C::RESETS {
                            target.reset(key).await;
                        }
                    }
                });
            }
            "s4" => {
                let hot = C::Key::fresh(7);
                if dry {
                    black_box(&hot);
                    return;
                }
                rt.block_on(async move {
                    for round in 0..calls / 2 {
                        let one = move || async move {
                            tokio::task::yield_now().await;
                            round
                        };
                        let (a, b) =
                            tokio::join!(target.call(hot.clone(), one), target.call(hot.clone(), one));
                        black_box((a, b));
                        if C::RESETS {
                            target.reset(&hot).await;
                        }
                    }
                });
            }
            other => panic!("unknown scenario {other}: s1 or s4"),
        }
    }
}

/// Lists the competitors: name, hasher, whether that is its default.
struct List;

impl VisitAny for List {
    fn visit<C: Coalesce>(&mut self) {
        println!("{}\t{}\t{}", C::NAME, C::HASHER, u8::from(C::DEFAULT_HASHER));
    }
}

fn usage() -> ! {
    eprintln!("usage: instructions u64|String COMPETITOR HASHER s1|s4 CALLS [--dry], or instructions --list");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        each_variant::<u64>(&mut List);
        return;
    }
    let dry = args.last().is_some_and(|a| a == "--dry");
    let args = &args[..args.len() - usize::from(dry)];
    let [keys, name, hasher, scenario, calls] = args else { usage() };
    let mut run = Run {
        name: name.clone(),
        hasher: hasher.clone(),
        scenario: scenario.clone(),
        calls: calls.parse().unwrap_or_else(|_| usage()),
        dry,
        found: false,
    };
    match keys.as_str() {
        "u64" => each_variant::<u64>(&mut run),
        "String" => each_variant::<String>(&mut run),
        _ => usage(),
    }
    if !run.found {
        eprintln!("no competitor named {name:?} with hasher {hasher:?} (see --list)");
        std::process::exit(2);
    }
}
