//! The committed seed corpus: a few readable scenarios per target, encoded into the bytes that
//! `arbitrary` decodes back into them.
//!
//! `cargo test --test seeds` checks that each `fuzz/corpus/<target>/seed-*` file is exactly the
//! encoding of the scenario listed here, decodes back to it, and keeps the contract. After a
//! change of the input format (or of `arbitrary`'s decoding), rewrite the files with
//! `REGENERATE_SEEDS=1 cargo test --test seeds`.

mod common;

use arbitrary::{Arbitrary, Unstructured};
use coalescer_fuzz::{
    CancelOp, CancellationRace, Ending, ForgetOp, ForgetRace, KeyRace, Modes, Scenario, Start, UnwindRace,
    run,
};
use std::path::PathBuf;

/// Writes values the way `arbitrary` 1.x reads them.
#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    /// A derived enum's variant: a little-endian `u32` scaled into `0..count`.
    fn variant(&mut self, index: u32, count: u32) {
        let scaled = (u64::from(index) << 32).div_ceil(u64::from(count));
        let scaled = u32::try_from(scaled).expect("index < count");
        self.0.extend(scaled.to_le_bytes());
    }

    /// A variant with one `u8` field.
    fn tagged(&mut self, index: u32, count: u32, field: u8) {
        self.variant(index, count);
        self.u8(field);
    }

    fn modes(&mut self, modes: Modes) {
        self.variant(modes as u32, 3);
    }

    fn ending(&mut self, ending: Ending) {
        self.variant(ending as u32, 3);
    }

    /// `Start`'s weighted decoding: one byte, modulo 8.
    fn start(&mut self, start: Start) {
        self.u8(match start {
            Start::Ready => 0,
            Start::PanicOnPoll => 1,
            Start::PanicInClosure => 2,
            Start::Pending => 3,
        });
    }

    fn forget_race(mut self, input: &ForgetRace) -> Vec<u8> {
        self.u8(input.keys);
        self.modes(input.modes);
        self.ending(input.ending);
        for op in &input.ops {
            match *op {
                ForgetOp::Join { key, shared, poll } => {
                    self.variant(0, 7);
                    self.u8(key);
                    self.bool(shared);
                    self.bool(poll);
                }
                ForgetOp::Poll { caller } => self.tagged(1, 7, caller),
                ForgetOp::Settle => self.variant(2, 7),
                ForgetOp::Complete { exec } => self.tagged(3, 7, exec),
                ForgetOp::Forget { key } => self.tagged(4, 7, key),
                ForgetOp::Drop { caller } => self.tagged(5, 7, caller),
                ForgetOp::Arm { exec, ops } => {
                    self.tagged(6, 7, exec);
                    self.u8(ops);
                }
            }
        }
        self.0
    }

    fn cancellation_race(mut self, input: &CancellationRace) -> Vec<u8> {
        self.bool(input.two_keys);
        self.modes(input.modes);
        self.ending(input.ending);
        for op in &input.ops {
            match *op {
                CancelOp::Join { key, shared, timed, poll, start } => {
                    self.variant(0, 12);
                    self.u8(key);
                    self.bool(shared);
                    self.bool(timed);
                    self.bool(poll);
                    self.start(start);
                }
                CancelOp::Poll { caller } => self.tagged(1, 12, caller),
                CancelOp::Settle => self.variant(2, 12),
                CancelOp::Stall { caller } => self.tagged(3, 12, caller),
                CancelOp::Drop { caller } => self.tagged(4, 12, caller),
                CancelOp::DropLeader { key } => self.tagged(5, 12, key),
                CancelOp::Complete { exec } => self.tagged(6, 12, exec),
                CancelOp::Panic { exec } => self.tagged(7, 12, exec),
                CancelOp::Wake { exec } => self.tagged(8, 12, exec),
                CancelOp::Timeout { caller } => self.tagged(9, 12, caller),
                CancelOp::Yield { exec, times } => {
                    self.tagged(10, 12, exec);
                    self.u8(times);
                }
                CancelOp::Arm { exec, ops } => {
                    self.tagged(11, 12, exec);
                    self.u8(ops);
                }
            }
        }
        self.0
    }
}

fn join(key: u8, poll: bool) -> ForgetOp {
    ForgetOp::Join { key, shared: false, poll }
}

fn join_shared(key: u8) -> ForgetOp {
    ForgetOp::Join { key, shared: true, poll: true }
}

fn forget_race_seeds() -> Vec<ForgetRace> {
    use ForgetOp::*;
    vec![
        // Three callers meet on key 0; forget; two more start a second flight while the first
        // is in the air; the old flight completes (it must not remove the new entry), then the
        // new one; a last caller finds the key free.
        ForgetRace {
            keys: 0,
            modes: Modes::Work,
            ending: Ending::Drain,
            ops: vec![
                join(0, true),
                join(0, true),
                join(0, true),
                Forget { key: 0 },
                join(0, true),
                join(0, true),
                Complete { exec: 0 },
                Settle,
                Complete { exec: 0 },
                Settle,
                join(0, true),
                Settle,
            ],
        },
        // Shared work: forget while followers wait, drop the old flight's leader (its work goes
        // on for the followers), forget the new flight too, then complete everything.
        ForgetRace {
            keys: 1,
            modes: Modes::Shared,
            ending: Ending::Drain,
            ops: vec![
                join_shared(1),
                join_shared(1),
                Forget { key: 1 },
                join_shared(1),
                Drop { caller: 0 },
                Forget { key: 1 },
                Forget { key: 1 },
                join_shared(1),
                Complete { exec: 1 },
                Settle,
                Complete { exec: 0 },
                Settle,
            ],
        },
        // Mixed modes over four keys: a forgotten work-mode flight loses its leader, so a
        // follower is promoted and runs its own work next to the new flight's; lazy joins
        // are polled by the settles; the rest is abandoned.
        ForgetRace {
            keys: 2,
            modes: Modes::Mixed,
            ending: Ending::AbandonNewestFirst,
            ops: vec![
                join(2, true),
                join(2, true),
                join(2, false),
                Join { key: 3, shared: true, poll: true },
                Forget { key: 2 },
                join(2, true),
                Drop { caller: 0 },
                Settle,
                Join { key: 3, shared: false, poll: false },
                Forget { key: 3 },
                join(3, true),
                Complete { exec: 2 },
                Poll { caller: 0 },
                Settle,
                join(2, true),
                join(1, true),
            ],
        },
        // While the leader is inside its work's poll (the execution paused there, as on
        // another thread): a follower joins, the key is forgotten, a new flight starts and a
        // follower of the old flight leaves; then the old work completes.
        ForgetRace {
            keys: 0,
            modes: Modes::Mixed,
            ending: Ending::Drain,
            ops: vec![
                join(0, true),
                join_shared(1),
                join(0, true),
                Arm { exec: 0, ops: 3 },
                Complete { exec: 0 },
                Settle,
                join(0, true),
                Forget { key: 0 },
                Drop { caller: 1 },
                join(0, true),
                Settle,
            ],
        },
    ]
}

fn cjoin(key: u8, shared: bool, start: Start) -> CancelOp {
    CancelOp::Join { key, shared, timed: false, poll: true, start }
}

fn cancellation_race_seeds() -> Vec<CancellationRace> {
    use CancelOp::*;
    vec![
        // Work mode: the leader is dropped with two followers waiting; one is promoted and
        // runs its own work; a follower is dropped; the promoted one completes.
        CancellationRace {
            two_keys: false,
            modes: Modes::Work,
            ending: Ending::Drain,
            ops: vec![
                cjoin(0, false, Start::Pending),
                cjoin(0, false, Start::Pending),
                cjoin(0, false, Start::Pending),
                DropLeader { key: 0 },
                Settle,
                Yield { exec: 0, times: 1 },
                Drop { caller: 1 },
                Complete { exec: 0 },
                Settle,
            ],
        },
        // Shared work: the leader stalls, a follower drives the work to completion; then a
        // second flight whose work panics while its leader is stalled: the panic comes out of
        // the follower that was polled, the stalled leader gets Aborted when resumed.
        CancellationRace {
            two_keys: false,
            modes: Modes::Shared,
            ending: Ending::Drain,
            ops: vec![
                cjoin(0, true, Start::Pending),
                cjoin(0, true, Start::Pending),
                Stall { caller: 0 },
                Yield { exec: 0, times: 2 },
                Settle,
                Complete { exec: 0 },
                Settle,
                Poll { caller: 0 },
                cjoin(0, true, Start::Pending),
                cjoin(0, true, Start::Pending),
                Stall { caller: 0 },
                Wake { exec: 0 },
                Settle,
                Panic { exec: 0 },
                Settle,
                Poll { caller: 0 },
            ],
        },
        // Both modes on two keys with timeouts: timed followers give up, a timed leader gives
        // up (work mode: a follower is promoted; shared: the work goes on), and the rest is
        // abandoned oldest first.
        CancellationRace {
            two_keys: true,
            modes: Modes::Mixed,
            ending: Ending::AbandonOldestFirst,
            ops: vec![
                Join { key: 0, shared: false, timed: true, poll: true, start: Start::Pending },
                Join { key: 0, shared: true, timed: true, poll: true, start: Start::Pending },
                cjoin(0, false, Start::Pending),
                Join { key: 1, shared: true, timed: true, poll: true, start: Start::Pending },
                cjoin(1, true, Start::Pending),
                Timeout { caller: 0 },
                Settle,
                Timeout { caller: 1 },
                Settle,
                Complete { exec: 1 },
                Join { key: 1, shared: false, timed: true, poll: false, start: Start::Pending },
                Timeout { caller: 2 },
                Settle,
            ],
        },
        // Work that is ready at once, work that panics on its first poll or in its closure,
        // with followers waiting on a panicking flight.
        CancellationRace {
            two_keys: true,
            modes: Modes::Mixed,
            ending: Ending::Drain,
            ops: vec![
                cjoin(0, false, Start::Ready),
                cjoin(1, true, Start::Ready),
                cjoin(0, true, Start::PanicInClosure),
                cjoin(0, false, Start::PanicOnPoll),
                cjoin(1, false, Start::Pending),
                cjoin(1, true, Start::Pending),
                cjoin(1, false, Start::Pending),
                Panic { exec: 0 },
                Settle,
                cjoin(0, false, Start::Pending),
                cjoin(0, true, Start::Pending),
                DropLeader { key: 0 },
                Settle,
                Panic { exec: 0 },
                Poll { caller: 0 },
                Settle,
            ],
        },
        // Shared work woken while its leader is inside its poll, with a caller that joined
        // meanwhile (it found the work being driven and slept); the leader then stalls: the
        // wake must reach the sleeper. Then the same with a work-mode leader whose follower
        // leaves and a new caller joins while the leader's work is being polled.
        CancellationRace {
            two_keys: true,
            modes: Modes::Mixed,
            ending: Ending::Drain,
            ops: vec![
                cjoin(0, true, Start::Pending),
                Arm { exec: 0, ops: 2 },
                Wake { exec: 0 },
                Poll { caller: 0 },
                cjoin(0, true, Start::Pending),
                Wake { exec: 0 },
                Stall { caller: 0 },
                Settle,
                cjoin(1, false, Start::Pending),
                cjoin(1, false, Start::Pending),
                Arm { exec: 1, ops: 3 },
                Yield { exec: 1, times: 0 },
                Settle,
                Drop { caller: 3 },
                cjoin(1, true, Start::Pending),
                Complete { exec: 1 },
                Settle,
            ],
        },
    ]
}

fn corpus_file(target: &str, n: usize) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("corpus/{target}/seed-{}", n + 1))
}

/// Checks (or, with `REGENERATE_SEEDS=1`, writes) one seed file, and runs its scenario.
fn check_seed<T: for<'a> Arbitrary<'a>>(
    target: &str,
    n: usize,
    bytes: Vec<u8>,
    expected: &Scenario,
    scenario: impl Fn(&T) -> Scenario,
) {
    let path = corpus_file(target, n);
    if std::env::var_os("REGENERATE_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (REGENERATE_SEEDS=1 writes it)", path.display()));
    assert_eq!(committed, bytes, "{} is stale: REGENERATE_SEEDS=1 rewrites it", path.display());
    let decoded = T::arbitrary_take_rest(Unstructured::new(&committed)).unwrap();
    assert_eq!(&scenario(&decoded), expected, "{}", path.display());
    match run(expected) {
        Ok(summary) => eprintln!("{}: {summary:?}", path.display()),
        Err(violation) => panic!("{}: {violation}", path.display()),
    }
}

#[test]
fn forget_race_seeds_decode_to_their_scenarios_and_keep_the_contract() {
    for (n, input) in forget_race_seeds().iter().enumerate() {
        let bytes = Encoder::default().forget_race(input);
        check_seed("forget_race", n, bytes, &input.scenario(), ForgetRace::scenario);
    }
}

#[test]
fn cancellation_race_seeds_decode_to_their_scenarios_and_keep_the_contract() {
    for (n, input) in cancellation_race_seeds().iter().enumerate() {
        let bytes = Encoder::default().cancellation_race(input);
        check_seed("cancellation_race", n, bytes, &input.scenario(), CancellationRace::scenario);
    }
}

#[test]
fn no_other_file_is_called_a_seed() {
    for (target, count) in
        [("forget_race", forget_race_seeds().len()), ("cancellation_race", cancellation_race_seeds().len())]
    {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(n) = name.strip_prefix("seed-") {
                let n: usize = n.parse().unwrap_or(0);
                assert!(
                    (1..=count).contains(&n),
                    "{target}/{name} is not a listed seed: it would be committed unchecked"
                );
            }
        }
    }
}

/// The inputs with which libFuzzer found defects on the core before their fix (issue 11's, and
/// `key_race/seed-defect-permit-taken-before-the-leaders-key-clone`: a leader that took its
/// permit of the bound before cloning its borrowed key leaked it when the clone panicked),
/// committed as it wrote them (`corpus/<target>/seed-defect-N-*`, N the defect): each keeps the
/// contract with the fix in (they failed before it, and were ignored until it landed).
#[test]
fn defect_seeds_keep_the_contract() {
    let replayed =
        common::replay("unwind_race", UnwindRace::scenario) + common::replay("key_race", KeyRace::scenario);
    assert!(replayed > 0, "no seed-defect-* file found");
}
