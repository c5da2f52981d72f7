//! Helpers shared by the fuzz crate's test binaries: random inputs without libFuzzer, and the
//! replay of the `seed-defect-*` files that libFuzzer wrote when it found a defect.

#![allow(dead_code, unreachable_pub)] // each test binary uses some of them

use arbitrary::{Arbitrary, Unstructured};
use coalescer_fuzz::{Scenario, Summary, pseudo_random_bytes, run};
use std::path::PathBuf;

/// Runs `inputs` random inputs of `T` (input `seed` is `64 + seed % spread` bytes long) through
/// `scenario` and the driver; panics at the first violation; returns what the runs did, summed.
pub fn smoke<T: for<'a> Arbitrary<'a>>(
    inputs: u64,
    spread: usize,
    scenario: impl Fn(&T) -> Scenario,
) -> Summary {
    let mut total = Summary::default();
    for seed in 0..inputs {
        let data = pseudo_random_bytes(seed, 64 + (seed as usize % spread));
        let Ok(input) = T::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        let scenario = scenario(&input);
        match run(&scenario) {
            Ok(s) => total += s,
            Err(v) => panic!("seed {seed}: {scenario:?}\n{v}"),
        }
    }
    eprintln!("{total:?}");
    total
}

/// The `seed-defect-*` files of `target`'s corpus, with their bytes.
pub fn defect_seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut seeds: Vec<_> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("seed-defect-"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    seeds.sort();
    seeds
}

/// Decodes and runs every `seed-defect-*` file of `target`; panics at the first violation;
/// returns how many there were.
pub fn replay<T: for<'a> Arbitrary<'a>>(target: &str, scenario: impl Fn(&T) -> Scenario) -> usize {
    let seeds = defect_seeds(target);
    for (path, bytes) in &seeds {
        let input = T::arbitrary_take_rest(Unstructured::new(bytes)).unwrap();
        if let Err(violation) = run(&scenario(&input)) {
            panic!("{}: {violation}", path.display());
        }
    }
    seeds.len()
}
