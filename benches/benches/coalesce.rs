//! The timing benchmarks: S1–S4, the blocking forms of S1 and S3, and the floor rows, with every
//! competitor in the same criterion group of the same process. Run them with `ci/bench.sh`.
//!
//! The machine these run on is shared and noisy, so the whole set runs in several *passes*
//! (`COALESCER_BENCH_PASSES`, 3 by default): pass `k` of a scenario is the criterion group
//! `"<scenario> #k"`, and `bench-report` takes each ratio per pass, then the median over the
//! passes. A burst of load then skews one pass, not every competitor measured after it.
//!
//! `COALESCER_BENCH_QUICK=1` runs each benchmark for a moment, in one pass (a smoke check: the
//! figures mean little); `COALESCER_BENCH_EXTRAS=path` writes the figures criterion does not
//! keep (executions per round or per call) to `path`, one tab-separated line each.

use coalescer_benches::scenario::{self, FanOut, Gate, Round, SccFloor};
use coalescer_benches::{
    CAPACITY, Coalesce, CoalesceBlocking, Visit, VisitBlocking, each_async, each_blocking,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::runtime::Runtime;

/// How long each benchmark runs, and which pass this is.
#[derive(Clone, Copy)]
struct Budget {
    quick: bool,
    passes: u32,
    pass: u32,
}

impl Budget {
    fn from_env() -> Self {
        let quick = std::env::var_os("COALESCER_BENCH_QUICK").is_some_and(|v| v != "0");
        let passes = std::env::var("COALESCER_BENCH_PASSES").ok().and_then(|v| v.parse().ok());
        // `cargo test --benches` runs this binary without `--bench`: criterion then runs each
        // benchmark once, as a test, and one pass is enough.
        let measuring = std::env::args().any(|a| a == "--bench");
        let passes = if quick || !measuring { 1 } else { passes.unwrap_or(3).max(1) };
        Self { quick, passes, pass: 1 }
    }

    /// The criterion group of `scenario` in this pass.
    fn group<'a>(self, c: &'a mut Criterion, scenario: &str) -> BenchmarkGroup<'a, WallTime> {
        if self.passes == 1 {
            c.benchmark_group(scenario)
        } else {
            c.benchmark_group(format!("{scenario} #{}", self.pass))
        }
    }

    /// A group of per-call benchmarks (S1, S4): criterion's own sampling.
    fn calls<'a>(self, c: &'a mut Criterion, scenario: &str) -> BenchmarkGroup<'a, WallTime> {
        let mut group = self.group(c, scenario);
        group.throughput(Throughput::Elements(1));
        if self.quick {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(50))
                .measurement_time(Duration::from_millis(100));
        } else {
            group
                .sample_size(50)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_millis(1_500));
        }
        group
    }

    /// A group of fan-out benchmarks (S2, S3): one round per sample. A round's measured part
    /// (the fan-out) is a small share of its wall time (spawning, waiting for the work), so
    /// criterion's time targets are set from `per_round`, an estimate of the fan-out, to make it
    /// run one round per sample.
    fn rounds<'a>(
        self,
        c: &'a mut Criterion,
        scenario: &str,
        per_round: Duration,
    ) -> BenchmarkGroup<'a, WallTime> {
        let samples = if self.quick { 10 } else { 30 };
        let mut group = self.group(c, scenario);
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(samples)
            .warm_up_time(per_round * 3)
            .measurement_time(per_round * samples as u32);
        group
    }
}

/// The figures criterion does not keep, added up over the passes: (scenario, competitor,
/// metric) -> (numerator, denominator); a zero denominator makes the figure a plain sum.
#[derive(Default)]
struct Extras(BTreeMap<(String, String, &'static str), (u64, u64)>);

impl Extras {
    fn add(&mut self, scenario: &str, competitor: &str, metric: &'static str, num: u64, den: u64) {
        let entry = self.0.entry((scenario.to_string(), competitor.to_string(), metric)).or_default();
        entry.0 += num;
        entry.1 += den;
    }

    /// `counted` of the `fan.rounds` rounds were measured; the others ran the work more than
    /// once (a waiter joined late) and were run again.
    fn fan_out(&mut self, scenario: &str, competitor: &str, fan: FanOut, counted: u64) {
        if fan.rounds > 0 {
            self.add(scenario, competitor, "executions per round", fan.executions, fan.rounds);
            self.add(scenario, competitor, "rounds rerun", fan.rounds - counted, 0);
        }
    }

    fn write(&self) {
        let mut text = String::new();
        for ((scenario, competitor, metric), &(num, den)) in &self.0 {
            let value = if den == 0 { num as f64 } else { num as f64 / den as f64 };
            text.push_str(&format!("{scenario}\t{competitor}\t{metric}\t{value:.4}\n"));
        }
        print!("{}", text.lines().map(|l| format!("extra: {l}\n")).collect::<String>());
        if let Some(path) = std::env::var_os("COALESCER_BENCH_EXTRAS") {
            std::fs::write(&path, text).expect("the extras file is writable");
        }
    }
}

struct Ctx<'a> {
    c: &'a mut Criterion,
    rt: &'a Runtime,
    budget: Budget,
    extras: &'a mut Extras,
}

/// S1: distinct keys, instant work, 1 and 2 tasks.
struct S1<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    rt: &'a Runtime,
    tasks: u64,
}

impl Visit for S1<'_, '_> {
    fn visit<C: Coalesce>(&mut self) {
        let target = scenario::leak(C::with_capacity(CAPACITY));
        let (rt, tasks) = (self.rt, self.tasks);
        self.group.bench_function(C::NAME, |b| {
            b.iter_custom(|iters| rt.block_on(scenario::distinct_keys(target, tasks, iters)));
        });
    }
}

fn s1(ctx: &mut Ctx<'_>) {
    for tasks in [1, 2] {
        let name = if tasks == 1 { "S1 1 task" } else { "S1 2 tasks" };
        let mut s1 = S1 { group: ctx.budget.calls(ctx.c, name), rt: ctx.rt, tasks };
        each_async(&mut s1);
        let floor = scenario::leak(SccFloor::with_capacity(CAPACITY));
        let rt = ctx.rt;
        s1.group.bench_function("floor scc insert+remove", |b| {
            b.iter_custom(|iters| rt.block_on(scenario::distinct_keys(floor, tasks, iters)));
        });
        s1.group.finish();
    }
}

/// S2 and S3: fan-out to many tasks on one key.
struct Fan<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    rt: &'a Runtime,
    tasks: usize,
    scenario: &'static str,
    extras: &'a mut Extras,
}

impl Visit for Fan<'_, '_> {
    fn visit<C: Coalesce>(&mut self) {
        let group = scenario::leak(C::with_capacity(CAPACITY));
        let round = Round::leak(self.tasks, WORK_TIME);
        let rt = self.rt;
        let (mut total, mut counted) = (FanOut::default(), 0);
        self.group.bench_function(C::NAME, |b| {
            b.iter_custom(|iters| {
                let fan = rt.block_on(scenario::fan_out_rounds(group, round, iters));
                total.rounds += fan.rounds;
                total.executions += fan.executions;
                counted += iters;
                fan.time
            });
        });
        self.extras.fan_out(self.scenario, C::NAME, total, counted);
    }
}

/// How long the fan-out work sleeps once every task has joined.
const WORK_TIME: Duration = Duration::from_millis(1);

fn fan_out(ctx: &mut Ctx<'_>, scenario: &'static str, tasks: usize, per_round: Duration) {
    let mut fan = Fan {
        group: ctx.budget.rounds(ctx.c, scenario, per_round),
        rt: ctx.rt,
        tasks,
        scenario,
        extras: ctx.extras,
    };
    each_async(&mut fan);
    let gate = scenario::leak(Gate::default());
    let round = Round::leak(tasks, WORK_TIME);
    let rt = ctx.rt;
    fan.group.bench_function("floor bare Event wake", |b| {
        b.iter_custom(|iters| rt.block_on(scenario::fan_out_floor(gate, round, iters)).time);
    });
    fan.group.finish();
}

/// S4: one hot key, 2 tasks, instant work.
struct S4<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    rt: &'a Runtime,
    extras: &'a mut Extras,
}

impl Visit for S4<'_, '_> {
    fn visit<C: Coalesce>(&mut self) {
        let group = scenario::leak(C::with_capacity(CAPACITY));
        let executions = scenario::leak(AtomicU64::new(0));
        let rt = self.rt;
        let (mut calls, mut runs) = (0, 0);
        self.group.bench_function(C::NAME, |b| {
            b.iter_custom(|iters| {
                let hot = rt.block_on(scenario::hot_key(group, executions, 2, iters));
                calls += hot.calls;
                runs += hot.executions;
                hot.elapsed
            });
        });
        if calls > 0 {
            self.extras.add("S4 hot key 2 tasks", C::NAME, "executions per call", runs, calls);
        }
    }
}

fn s4(ctx: &mut Ctx<'_>) {
    let mut s4 = S4 { group: ctx.budget.calls(ctx.c, "S4 hot key 2 tasks"), rt: ctx.rt, extras: ctx.extras };
    each_async(&mut s4);
    s4.group.finish();
}

/// S1 on plain threads.
struct S1Blocking<'c> {
    group: BenchmarkGroup<'c, WallTime>,
    threads: u64,
}

impl VisitBlocking for S1Blocking<'_> {
    fn visit<C: CoalesceBlocking>(&mut self) {
        let target = C::with_capacity(CAPACITY);
        let threads = self.threads;
        self.group.bench_function(C::NAME, |b| {
            b.iter_custom(|iters| scenario::distinct_keys_blocking(&target, threads, iters));
        });
    }
}

/// S3 on plain threads: a leader thread and a parked follower thread.
struct S3Blocking<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    extras: &'a mut Extras,
}

const S3_BLOCKING: &str = "S3 blocking 2 threads";

impl VisitBlocking for S3Blocking<'_, '_> {
    fn visit<C: CoalesceBlocking>(&mut self) {
        let group = C::with_capacity(CAPACITY);
        let (mut total, mut counted) = (FanOut::default(), 0);
        self.group.bench_function(C::NAME, |b| {
            b.iter_custom(|iters| {
                let fan = scenario::fan_out_blocking(&group, iters);
                total.rounds += fan.rounds;
                total.executions += fan.executions;
                counted += iters;
                fan.time
            });
        });
        self.extras.fan_out(S3_BLOCKING, C::NAME, total, counted);
    }
}

fn blocking(ctx: &mut Ctx<'_>) {
    for threads in [1, 2] {
        let name = if threads == 1 { "S1 blocking 1 thread" } else { "S1 blocking 2 threads" };
        let mut s1 = S1Blocking { group: ctx.budget.calls(ctx.c, name), threads };
        each_blocking(&mut s1);
        let floor = SccFloor::with_capacity(CAPACITY);
        s1.group.bench_function("floor scc insert+remove", |b| {
            b.iter_custom(|iters| scenario::distinct_keys_blocking(&floor, threads, iters));
        });
        s1.group.finish();
    }
    let mut s3 = S3Blocking {
        group: ctx.budget.rounds(ctx.c, S3_BLOCKING, Duration::from_micros(50)),
        extras: ctx.extras,
    };
    each_blocking(&mut s3);
    s3.group.bench_function("floor bare Event wake", |b| {
        b.iter_custom(|iters| scenario::fan_out_blocking_floor(iters).time);
    });
    s3.group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = scenario::runtime();
    let mut extras = Extras::default();
    let budget = Budget::from_env();
    for pass in 1..=budget.passes {
        let budget = Budget { pass, ..budget };
        let mut ctx = Ctx { c: &mut c, rt: &rt, budget, extras: &mut extras };
        s1(&mut ctx);
        fan_out(&mut ctx, "S2 1000 tasks", 1_000, Duration::from_micros(300));
        fan_out(&mut ctx, "S3 10000 waiters", 10_000, Duration::from_millis(3));
        s4(&mut ctx);
        blocking(&mut ctx);
    }
    c.final_summary();
    extras.write();
}
