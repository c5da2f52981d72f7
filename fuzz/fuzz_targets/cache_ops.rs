//! Operation sequences of `coalescer::cache::Cache` (get, advance the clock, complete or fail a
//! load, invalidate, insert, poll, drop a caller) over 3 keys, checked against the model.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    coalescer_fuzz::cache_ops::check_cache_ops(data);
});
