//! Benchmark harness (filled in by the benchmarks issue).
