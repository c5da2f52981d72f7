//! The timing benchmarks: S1–S4, the blocking forms of S1 and S3, and the floor rows, with every
//! competitor in the same criterion group of the same process. Run them with `ci/bench.sh`.
//!
//! The machine these run on is shared and noisy, so the whole set runs in several *passes*
//! (`COALESCER_BENCH_PASSES`, 3 by default): pass `k` of a scenario is the criterion group
//! `"<scenario> #k"`, and `bench-report` takes each ratio per pass, then the median over the
//! passes. A burst of load then skews one pass, not every competitor measured after it.
//!
//! Each pass first waits for a quiet machine: until the 1-minute load average is below
//! `COALESCER_BENCH_MAX_LOAD` per core (0.5 by default), for at most
//! `COALESCER_BENCH_QUIET_WAIT` seconds (300 by default); then it runs anyway and the pass is
//! marked as taken on a loaded machine. The load is printed (and kept) per pass and scenario.
//!
//! Every multi-task figure also keeps its process CPU time over its wall time and where its
//! two tasks ran (see `scenario::Timed`), so that a figure where they took turns on one core is
//! marked, not quoted as parallel.
//!
//! `COALESCER_BENCH_QUICK=1` runs each benchmark for a moment, in one pass, without waiting (a
//! smoke check: the figures mean little); `COALESCER_BENCH_EXTRAS=path` writes the figures
//! criterion does not keep (executions per round or per call, CPU / wall, placement, reruns,
//! load) to `path`, one tab-separated line each: scenario, pass, competitor, metric, value.

use coalescer_benches::scenario::{self, FanOut, Gate, Round, SccFloor, Timed};
use coalescer_benches::{
    CAPACITY, Coalesce, CoalesceBlocking, Visit, VisitAny, VisitBlocking, each_async, each_blocking,
    each_string,
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

/// The 1-minute load average (`/proc/loadavg`), or NaN where there is none.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Waits until the load average is below `COALESCER_BENCH_MAX_LOAD` per core, for at most
/// `COALESCER_BENCH_QUIET_WAIT` seconds. Returns (the load when it starts, seconds waited,
/// whether the machine was quiet).
fn wait_for_quiet(pass: u32) -> (f64, u64, bool) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let max = env_f64("COALESCER_BENCH_MAX_LOAD", 0.5) * cores;
    let budget = env_f64("COALESCER_BENCH_QUIET_WAIT", 300.0) as u64;
    let start = std::time::Instant::now();
    loop {
        let load = load_average();
        let waited = start.elapsed().as_secs();
        if load.is_nan() || load < max {
            println!("pass {pass}: load average {load:.2} (< {max:.2}) after waiting {waited} s: quiet");
            return (load, waited, true);
        }
        if waited >= budget {
            println!(
                "pass {pass}: load average {load:.2} (>= {max:.2}) after waiting {waited} s: \
                 running anyway, figures taken on a loaded machine"
            );
            return (load, waited, false);
        }
        if waited % 30 < 5 {
            println!(
                "pass {pass}: load average {load:.2}, waiting for < {max:.2} ({waited} s of {budget} s)"
            );
        }
        std::thread::sleep(Duration::from_secs(5));
    }
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

/// The figures criterion does not keep, per pass: (scenario, pass, competitor, metric) ->
/// (numerator, denominator); a zero denominator makes the figure a plain sum.
#[derive(Default)]
struct Extras(BTreeMap<(String, u32, String, &'static str), (u64, u64)>);

impl Extras {
    fn add(&mut self, at: (&str, u32), competitor: &str, metric: &'static str, num: u64, den: u64) {
        let key = (at.0.to_string(), at.1, competitor.to_string(), metric);
        let entry = self.0.entry(key).or_default();
        entry.0 += num;
        entry.1 += den;
    }

    /// `counted` of the `fan.rounds` rounds were measured; the others ran the work more than
    /// once (a waiter joined late) and were run again; `settle` is the extra wait the work
    /// needed (zero unless bad rounds escalated it).
    fn fan_out(&mut self, at: (&str, u32), competitor: &str, fan: FanOut, counted: u64, settle: Duration) {
        if fan.rounds > 0 {
            self.add(at, competitor, "executions per round", fan.executions, fan.rounds);
            self.add(at, competitor, "rounds rerun", fan.rounds - counted, 0);
            self.add(at, competitor, "settle µs", settle.as_micros() as u64, 0);
        }
    }

    /// The process CPU time over the wall time of a multi-task figure, and its placement.
    fn timed(&mut self, at: (&str, u32), competitor: &str, timed: Timed) {
        if timed.wall > Duration::ZERO {
            self.add(at, competitor, "cpu/wall", timed.cpu.as_nanos() as u64, timed.wall.as_nanos() as u64);
        }
        if timed.samples > 0 {
            self.add(at, competitor, "same worker", timed.same, timed.samples);
        }
    }

    /// The load average (×100) when a scenario of a pass started.
    fn load(&mut self, at: (&str, u32)) {
        self.add(at, "-", "load", (load_average() * 100.0) as u64, 100);
    }

    fn write(&self) {
        let mut text = String::new();
        for ((scenario, pass, competitor, metric), &(num, den)) in &self.0 {
            let value = if den == 0 { num as f64 } else { num as f64 / den as f64 };
            text.push_str(&format!("{scenario}\t{pass}\t{competitor}\t{metric}\t{value:.4}\n"));
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
    at: (&'static str, u32),
    extras: &'a mut Extras,
}

impl S1<'_, '_> {
    fn run<T: scenario::DistinctCall>(&mut self, name: &str, target: &'static T) {
        let (rt, tasks) = (self.rt, self.tasks);
        let mut total = Timed::default();
        self.group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let timed = rt.block_on(scenario::distinct_keys(target, tasks, iters));
                total.add(timed);
                timed.wall
            });
        });
        self.extras.timed(self.at, name, total);
    }
}

impl Visit for S1<'_, '_> {
    fn visit<C: Coalesce<Key = u64>>(&mut self) {
        self.run(C::NAME, scenario::leak(C::with_capacity(CAPACITY)));
    }
}

impl VisitAny for S1<'_, '_> {
    fn visit<C: Coalesce>(&mut self) {
        self.run(C::NAME, scenario::leak(C::with_capacity(CAPACITY)));
    }
}

fn s1(ctx: &mut Ctx<'_>) {
    for tasks in [1, 2] {
        let name = if tasks == 1 { "S1 1 task" } else { "S1 2 tasks" };
        ctx.extras.load((name, ctx.budget.pass));
        let group = ctx.budget.calls(ctx.c, name);
        let mut s1 = S1 { group, rt: ctx.rt, tasks, at: (name, ctx.budget.pass), extras: ctx.extras };
        each_async(&mut s1);
        s1.run("floor scc insert+remove", scenario::leak(SccFloor::with_capacity(CAPACITY)));
        s1.group.finish();
    }
    // The same with `String` keys, each call making its `String` and lending it to the call.
    // LEAD: with `Coalesce::call` taking `&Self::Key`, these rows measure a caller that already
    // holds its key.
    for tasks in [1, 2] {
        let name = if tasks == 1 { "S1 1 task, String keys" } else { "S1 2 tasks, String keys" };
        ctx.extras.load((name, ctx.budget.pass));
        let group = ctx.budget.calls(ctx.c, name);
        let mut s1 = S1 { group, rt: ctx.rt, tasks, at: (name, ctx.budget.pass), extras: ctx.extras };
        each_string(&mut s1);
        s1.group.finish();
    }
}

/// S2 and S3: fan-out to many tasks on one key.
struct Fan<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    rt: &'a Runtime,
    tasks: usize,
    at: (&'static str, u32),
    extras: &'a mut Extras,
}

impl Visit for Fan<'_, '_> {
    fn visit<C: Coalesce<Key = u64>>(&mut self) {
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
        self.extras.fan_out(self.at, C::NAME, total, counted, round.settle());
    }
}

/// How long the fan-out work sleeps once every task has joined.
const WORK_TIME: Duration = Duration::from_millis(1);

fn fan_out(ctx: &mut Ctx<'_>, scenario: &'static str, tasks: usize, per_round: Duration) {
    ctx.extras.load((scenario, ctx.budget.pass));
    let mut fan = Fan {
        group: ctx.budget.rounds(ctx.c, scenario, per_round),
        rt: ctx.rt,
        tasks,
        at: (scenario, ctx.budget.pass),
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
    at: (&'static str, u32),
    extras: &'a mut Extras,
}

impl Visit for S4<'_, '_> {
    fn visit<C: Coalesce<Key = u64>>(&mut self) {
        let group = scenario::leak(C::with_capacity(CAPACITY));
        let executions = scenario::leak(AtomicU64::new(0));
        let rt = self.rt;
        let (mut calls, mut runs, mut total) = (0, 0, Timed::default());
        self.group.bench_function(C::NAME, |b| {
            b.iter_custom(|iters| {
                let hot = rt.block_on(scenario::hot_key(group, executions, 2, iters));
                calls += hot.calls;
                runs += hot.executions;
                total.add(hot.timed);
                hot.timed.wall
            });
        });
        if calls > 0 {
            self.extras.add(self.at, C::NAME, "executions per call", runs, calls);
        }
        self.extras.timed(self.at, C::NAME, total);
    }
}

const S4: &str = "S4 hot key 2 tasks";

fn s4(ctx: &mut Ctx<'_>) {
    ctx.extras.load((S4, ctx.budget.pass));
    let group = ctx.budget.calls(ctx.c, S4);
    let mut s4 = S4 { group, rt: ctx.rt, at: (S4, ctx.budget.pass), extras: ctx.extras };
    each_async(&mut s4);
    s4.group.finish();
}

/// S1 on plain threads.
struct S1Blocking<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    threads: u64,
    at: (&'static str, u32),
    extras: &'a mut Extras,
}

impl S1Blocking<'_, '_> {
    fn run<T: scenario::DistinctCallBlocking>(&mut self, name: &str, target: &T) {
        let threads = self.threads;
        let mut total = Timed::default();
        self.group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let timed = scenario::distinct_keys_blocking(target, threads, iters);
                total.add(timed);
                timed.wall
            });
        });
        self.extras.timed(self.at, name, total);
    }
}

impl VisitBlocking for S1Blocking<'_, '_> {
    fn visit<C: CoalesceBlocking>(&mut self) {
        self.run(C::NAME, &C::with_capacity(CAPACITY));
    }
}

/// S3 on plain threads: a leader thread and a parked follower thread.
struct S3Blocking<'a, 'c> {
    group: BenchmarkGroup<'c, WallTime>,
    pass: u32,
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
        self.extras.fan_out((S3_BLOCKING, self.pass), C::NAME, total, counted, Duration::ZERO);
    }
}

fn blocking(ctx: &mut Ctx<'_>) {
    for threads in [1, 2] {
        let name = if threads == 1 { "S1 blocking 1 thread" } else { "S1 blocking 2 threads" };
        ctx.extras.load((name, ctx.budget.pass));
        let group = ctx.budget.calls(ctx.c, name);
        let mut s1 = S1Blocking { group, threads, at: (name, ctx.budget.pass), extras: ctx.extras };
        each_blocking(&mut s1);
        s1.run("floor scc insert+remove", &SccFloor::with_capacity(CAPACITY));
        s1.group.finish();
    }
    ctx.extras.load((S3_BLOCKING, ctx.budget.pass));
    let mut s3 = S3Blocking {
        group: ctx.budget.rounds(ctx.c, S3_BLOCKING, Duration::from_micros(50)),
        pass: ctx.budget.pass,
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
        if !budget.quick {
            let (load, waited, quiet) = wait_for_quiet(pass);
            extras.add(("pass", pass), "-", "load", (load * 100.0) as u64, 100);
            extras.add(("pass", pass), "-", "waited s", waited, 0);
            extras.add(("pass", pass), "-", "quiet", u64::from(quiet), 0);
        }
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
