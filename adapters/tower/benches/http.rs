//! `coalescer-tower` against the published tower coalescing layer (`tower-resilience-coalesce`)
//! and no layer at all, each around the same inner service, called through tower on a
//! 2-worker tokio runtime (no sockets: the layers are what is measured).
//!
//! 1. **Waiters' CPU** (a table printed first, measured with `getrusage`): a burst of 64
//!    identical requests at a handler that takes 100 ms (a timer, no CPU). What the process
//!    burns during the burst is what the waiters burn while they wait: a layer whose waiters
//!    sleep shows about nothing, one that busy-polls shows up to every core for 100 ms.
//! 2. **Hot endpoint throughput** (criterion, elements per second): 64 tasks each sending
//!    requests back to back at one key, 3,200 requests per iteration, with an instant handler
//!    (the layer's own cost), a handler that waits 1 ms on a timer (latency-bound: without a
//!    layer all 64 wait at once too) and one that computes for 100 µs (CPU-bound: coalescing
//!    at work).
//!
//! `cargo bench -p coalescer-tower --bench http`; `COALESCER_BENCH_QUICK=1` runs every
//! scenario for a moment (a smoke check whose figures mean nothing).

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, ServiceExt};

/// A layered service, its response reduced to the body's length.
type Svc = BoxCloneSyncService<Request<()>, usize, BoxError>;

/// What the handler spends before it answers.
#[derive(Clone, Copy)]
enum Cost {
    /// Nothing: the layer's own cost shows.
    Instant,
    /// Waiting on a timer (a backend call): no CPU.
    Wait(Duration),
    /// Computing on the CPU (a render, a serialisation): spins for this long.
    Cpu(Duration),
}

/// The inner service: counts its executions, spends `cost`, answers with a small body.
fn handler(
    cost: Cost,
    executions: Arc<AtomicU64>,
) -> impl tower::Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_req: Request<()>| {
        executions.fetch_add(1, Relaxed);
        async move {
            match cost {
                Cost::Instant => {}
                Cost::Wait(delay) => tokio::time::sleep(delay).await,
                Cost::Cpu(spin) => {
                    let start = Instant::now();
                    while start.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"the hot report"))))
        }
    })
}

/// One competitor: a name and how it wraps the handler.
trait Competitor {
    const NAME: &'static str;
    fn wrap(cost: Cost, executions: Arc<AtomicU64>) -> Svc;
}

struct CoalescerTower;
impl Competitor for CoalescerTower {
    const NAME: &'static str = "coalescer-tower";
    fn wrap(cost: Cost, executions: Arc<AtomicU64>) -> Svc {
        let svc = coalescer_tower::CoalesceLayer::new().layer(handler(cost, executions));
        BoxCloneSyncService::new(svc.map_err(BoxError::from).and_then(
            |response: Response<coalescer_tower::CoalescedBody<Full<Bytes>>>| async move {
                Ok(response.into_body().collect().await?.to_bytes().len())
            },
        ))
    }
}

/// The same layer with a key of the path alone (as the competitor's key below): what the
/// HTTP default key (method, URI, host, credentials and the other key headers) costs.
struct CoalescerTowerPathKey;
impl Competitor for CoalescerTowerPathKey {
    const NAME: &'static str = "coalescer-tower, path key";
    fn wrap(cost: Cost, executions: Arc<AtomicU64>) -> Svc {
        let layer = coalescer_tower::CoalesceLayer::with_key(|head: &http::request::Parts| {
            Some(head.uri.path().to_owned())
        });
        let svc = layer.layer(handler(cost, executions));
        BoxCloneSyncService::new(svc.map_err(BoxError::from).and_then(
            |response: Response<coalescer_tower::CoalescedBody<Full<Bytes>>>| async move {
                Ok(response.into_body().collect().await?.to_bytes().len())
            },
        ))
    }
}

struct TowerResilience;
impl Competitor for TowerResilience {
    const NAME: &'static str = "tower-resilience-coalesce";
    fn wrap(cost: Cost, executions: Arc<AtomicU64>) -> Svc {
        let layer =
            tower_resilience_coalesce::CoalesceLayer::new(|req: &Request<()>| req.uri().path().to_owned());
        let svc = layer.layer(handler(cost, executions));
        BoxCloneSyncService::new(svc.map_err(|e| BoxError::from(e.to_string())).and_then(
            |response: Response<Full<Bytes>>| async move {
                Ok(response.into_body().collect().await?.to_bytes().len())
            },
        ))
    }
}

struct NoLayer;
impl Competitor for NoLayer {
    const NAME: &'static str = "no layer";
    fn wrap(cost: Cost, executions: Arc<AtomicU64>) -> Svc {
        BoxCloneSyncService::new(handler(cost, executions).map_err(BoxError::from).and_then(
            |response: Response<Full<Bytes>>| async move {
                Ok(response.into_body().collect().await?.to_bytes().len())
            },
        ))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn quick() -> bool {
    std::env::var_os("COALESCER_BENCH_QUICK").is_some()
}

/// `tasks` tasks, each sending `per_task` requests back to back at one key.
async fn hammer(svc: &Svc, tasks: usize, per_task: usize) {
    let calls: Vec<_> = (0..tasks)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let len = svc.clone().oneshot(Request::get("/report").body(()).unwrap()).await.unwrap();
                    assert_eq!(len, 14);
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
}

/// The process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `getrusage` writes into the struct it is given, which lives through the call;
    // RUSAGE_SELF is always a valid target.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Scenario 1: the median CPU and wall time of a 64-request burst at a 100 ms handler.
fn waiters_cpu<C: Competitor>(rt: &tokio::runtime::Runtime, rounds: usize) -> String {
    let executions = Arc::new(AtomicU64::new(0));
    let svc = C::wrap(Cost::Wait(Duration::from_millis(100)), executions.clone());
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        rt.block_on(hammer(&svc, 64, 1));
        cpu.push((cpu_time() - cpu0).as_secs_f64() * 1e3);
        wall.push(wall0.elapsed().as_secs_f64() * 1e3);
    }
    let per_burst = executions.load(Relaxed) as f64 / rounds as f64;
    format!("| {} | {per_burst:.1} | {:.1} | {:.1} |", C::NAME, median(cpu), median(wall))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

fn print_waiters_cpu() {
    let rt = runtime();
    let rounds = if quick() { 2 } else { 15 };
    println!("\n## Waiters' CPU: 64 identical requests, 100 ms handler, {rounds} bursts each (medians)");
    println!("load average before: {}\n", load_average());
    println!("| layer | handler executions per burst | process CPU ms per burst | wall ms per burst |");
    println!("|---|---:|---:|---:|");
    println!("{}", waiters_cpu::<CoalescerTower>(&rt, rounds));
    println!("{}", waiters_cpu::<TowerResilience>(&rt, rounds));
    println!("{}", waiters_cpu::<NoLayer>(&rt, rounds));
    println!("\nload average after: {}\n", load_average());
}

fn hot_endpoint<C: Competitor>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let rt = runtime();
    let (tasks, per_task) = (64, 50);
    let costs = [
        ("instant", Cost::Instant),
        ("1ms timer", Cost::Wait(Duration::from_millis(1))),
        ("100us cpu", Cost::Cpu(Duration::from_micros(100))),
    ];
    for (label, cost) in costs {
        let svc = C::wrap(cost, Arc::default());
        c.bench_function(BenchmarkId::new(C::NAME, label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(hammer(&svc, tasks, per_task));
                }
                start.elapsed()
            })
        });
    }
}

fn main() {
    print_waiters_cpu();
    let mut criterion = Criterion::default().configure_from_args().sample_size(10);
    criterion = if quick() {
        criterion.warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_millis(500))
    } else {
        criterion.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5))
    };
    let mut group = criterion.benchmark_group("hot endpoint (64 tasks x 50 requests, one key)");
    group.throughput(Throughput::Elements(64 * 50));
    hot_endpoint::<CoalescerTower>(&mut group);
    hot_endpoint::<CoalescerTowerPathKey>(&mut group);
    hot_endpoint::<TowerResilience>(&mut group);
    hot_endpoint::<NoLayer>(&mut group);
    group.finish();
    criterion.final_summary();
    println!("load average at the end: {}", load_average());
}
