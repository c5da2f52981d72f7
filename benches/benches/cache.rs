//! The loader cache (`coalescer::cache`) against moka and the README's old recipe (a
//! `Mutex<HashMap>` TTL cache whose reloads go through a `Group`), in one process:
//!
//! - **hit**: `get_with` on a cached key, 1 and 2 tasks (criterion).
//! - **expiry edge**: 2 tasks hammer one hot key whose TTL runs out every few milliseconds
//!   while a load takes 1 ms. Printed as a table: loads per TTL period (must be 1), and the
//!   latency of the calls that started while a load was in the air (p50, p99, max), next to
//!   the calls that did not.
//!
//! `COALESCER_BENCH_QUICK=1` (or `cargo test --benches`, which runs without `--bench`) runs each
//! part for a moment, as a smoke check: the loads-per-period check still holds, the figures
//! mean little. `ci/bench.sh` runs it in full.

use coalescer::cache::Cache;
use coalescer::{Group, Spawn};
use criterion::Criterion;
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// One competitor: a cache of `u64` keys whose loader is `load`.
trait EdgeCache: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn get<L>(&self, key: u64, load: L) -> impl Future<Output = u64> + Send
    where
        L: Fn() -> Loading + Send + Sync + 'static;
}

/// A load's future (boxed, so every competitor takes the same loader).
type Loading = std::pin::Pin<Box<dyn Future<Output = u64> + Send>>;

/// The loader of a competitor, counting its loads and the time each was in the air.
#[derive(Default)]
struct Loads {
    count: AtomicU64,
    windows: Mutex<Vec<(Instant, Instant)>>,
}

impl Loads {
    fn loader(self: &Arc<Self>, work: Duration) -> impl Fn() -> Loading + Send + Sync + 'static {
        let loads = self.clone();
        move || {
            let loads = loads.clone();
            Box::pin(async move {
                let start = Instant::now();
                loads.count.fetch_add(1, Relaxed);
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
                loads.windows.lock().unwrap().push((start, Instant::now()));
                7
            })
        }
    }
}

struct Ours {
    name: &'static str,
    cache: Cache<u64, u64>,
}

impl EdgeCache for Ours {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn get<L>(&self, key: u64, load: L) -> u64
    where
        L: Fn() -> Loading + Send + Sync + 'static,
    {
        self.cache.get_with(key, load).await.unwrap().into_value()
    }
}

struct Moka(moka::future::Cache<u64, u64>);

impl EdgeCache for Moka {
    fn name(&self) -> &'static str {
        "moka get_with"
    }
    async fn get<L>(&self, key: u64, load: L) -> u64
    where
        L: Fn() -> Loading + Send + Sync + 'static,
    {
        self.0.get_with(key, load()).await
    }
}

/// The README's old recipe: a `Mutex<HashMap>` of (expiry, value), reloads through a `Group`.
struct Recipe {
    ttl: Duration,
    cache: Mutex<HashMap<u64, (Instant, u64)>>,
    flights: Group<u64, u64>,
}

impl EdgeCache for Recipe {
    fn name(&self) -> &'static str {
        "Mutex<HashMap> TTL recipe"
    }
    async fn get<L>(&self, key: u64, load: L) -> u64
    where
        L: Fn() -> Loading + Send + Sync + 'static,
    {
        if let Some((expires, value)) = self.cache.lock().unwrap().get(&key) {
            if *expires > Instant::now() {
                return *value;
            }
        }
        let outcome = self.flights.work(&key, || async {
            let value = load().await;
            self.cache.lock().unwrap().insert(key, (Instant::now() + self.ttl, value));
            value
        });
        outcome.await.unwrap().into_value()
    }
}

struct OnTokio;

impl Spawn for OnTokio {
    type Task = tokio::task::JoinHandle<()>;
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
        tokio::spawn(task)
    }
    fn aborts_when_abandoned(&self) -> bool {
        false
    }
}

fn ours(name: &'static str, ttl: Duration, refresh: Option<Duration>) -> Ours {
    let builder = Cache::builder().time_to_live(ttl);
    let cache = match refresh {
        Some(after) => builder.refresh_after(after).spawner(OnTokio).build(),
        None => builder.build(),
    };
    Ours { name, cache }
}

fn moka(ttl: Duration) -> Moka {
    Moka(moka::future::Cache::builder().max_capacity(4096).time_to_live(ttl).build())
}

fn recipe(ttl: Duration) -> Recipe {
    Recipe { ttl, cache: Mutex::default(), flights: Group::new() }
}

fn quick() -> bool {
    let quick = std::env::var_os("COALESCER_BENCH_QUICK").is_some_and(|v| v != "0");
    quick || !std::env::args().any(|a| a == "--bench")
}

/// The hit path: `tasks` tasks each make `iters` calls on a cached key; the time per round of
/// one call per task.
fn hit<C: EdgeCache>(c: &mut Criterion, rt: &Runtime, cache: C, tasks: u64) {
    let cache = Arc::new(cache);
    let load = Arc::new(Loads::default());
    rt.block_on(cache.get(1, load.loader(Duration::ZERO)));
    let name = cache.name();
    let mut group = c.benchmark_group(format!("cache hit, {tasks} task(s)"));
    if quick() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(50))
            .measurement_time(Duration::from_millis(100));
    }
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut handles = Vec::new();
                for _ in 0..tasks {
                    let (cache, loader) = (cache.clone(), load.loader(Duration::ZERO));
                    let loader = Arc::new(loader);
                    handles.push(tokio::spawn(async move {
                        for _ in 0..iters {
                            let loader = loader.clone();
                            black_box(cache.get(1, move || loader()).await);
                        }
                    }));
                }
                for handle in handles {
                    handle.await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    assert_eq!(load.count.load(Relaxed), 1, "{name}: a hit never loads");
}

/// What one competitor's run across the expiry edges measured.
struct Edge {
    name: &'static str,
    loads: u64,
    /// Loads that started while another load of the key was in the air (a stampede).
    overlapping: u64,
    edge: Vec<Duration>,
    calm: Vec<Duration>,
}

/// 2 tasks hammer key 1 for `run`; the TTL is `ttl`, a load takes `work`.
fn edge<C: EdgeCache>(rt: &Runtime, cache: C, work: Duration, run: Duration) -> Edge {
    let cache = Arc::new(cache);
    let loads = Arc::new(Loads::default());
    let calls: Vec<Vec<(Instant, Duration)>> = rt.block_on(async {
        let begin = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..2 {
            let (cache, loader) = (cache.clone(), Arc::new(loads.loader(work)));
            handles.push(tokio::spawn(async move {
                let mut calls = Vec::with_capacity(1 << 16);
                let mut n = 0u32;
                while begin.elapsed() < run {
                    let loader = loader.clone();
                    let start = Instant::now();
                    black_box(cache.get(1, move || loader()).await);
                    calls.push((start, start.elapsed()));
                    n += 1;
                    if n % 64 == 0 {
                        tokio::task::yield_now().await; // let timers and refreshes run
                    }
                }
                calls
            }));
        }
        let mut all = Vec::new();
        for handle in handles {
            all.push(handle.await.unwrap());
        }
        all
    });
    let mut windows = loads.windows.lock().unwrap().clone();
    windows.sort();
    let overlapping = windows.windows(2).filter(|w| w[1].0 < w[0].1).count() as u64;
    let during_load = |t: Instant| {
        let i = windows.partition_point(|(start, _)| *start <= t);
        i > 0 && t < windows[i - 1].1
    };
    let (mut edge, mut calm) = (Vec::new(), Vec::new());
    for (start, took) in calls.into_iter().flatten() {
        if during_load(start) { edge.push(took) } else { calm.push(took) }
    }
    edge.sort();
    calm.sort();
    Edge { name: cache.name(), loads: loads.count.load(Relaxed), overlapping, edge, calm }
}

fn pct(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    let d = sorted[i];
    if d >= Duration::from_micros(100) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} µs", d.as_secs_f64() * 1e6)
    }
}

fn edge_table(rt: &Runtime) {
    let (ttl, work) = (Duration::from_millis(5), Duration::from_millis(1));
    let run = if quick() { Duration::from_millis(60) } else { Duration::from_secs(2) };
    let refresh = Some(Duration::from_millis(3));
    let rows = [
        edge(rt, ours("coalescer cache, TTL only", ttl, None), work, run),
        edge(rt, ours("coalescer cache, refresh_after 3 ms", ttl, refresh), work, run),
        edge(rt, moka(ttl), work, run),
        edge(rt, recipe(ttl), work, run),
    ];
    println!();
    println!("expiry edge: 2 tasks on one key, TTL {ttl:?}, load {work:?}, {run:?} per competitor");
    println!("(loads per expiry: loads / loads that started with no other in the air; latency of the");
    println!("calls that started while a load was in the air, then of the other calls)");
    println!(
        "| competitor | loads | loads per expiry | calls during a load | p50 | p99 | max | other calls p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            row.loads,
            row.loads as f64 / (row.loads - row.overlapping).max(1) as f64,
            row.edge.len(),
            pct(&row.edge, 0.5),
            pct(&row.edge, 0.99),
            pct(&row.edge, 1.0),
            pct(&row.calm, 0.5),
            pct(&row.calm, 0.99),
            pct(&row.calm, 1.0),
        );
        // One load per key at a time: no load starts while another is in the air.
        assert_eq!(row.overlapping, 0, "{}: loads overlapped", row.name);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Criterion::default().configure_from_args();
    let ttl = Duration::from_secs(3600);
    for tasks in [1, 2] {
        hit(&mut c, &rt, ours("coalescer cache get_with", ttl, None), tasks);
        hit(&mut c, &rt, moka(ttl), tasks);
        hit(&mut c, &rt, recipe(ttl), tasks);
    }
    c.final_summary();
    edge_table(&rt);
}
