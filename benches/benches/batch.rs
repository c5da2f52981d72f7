//! Batch coalescing (issue 14): a burst of concurrent requests over overlapping ID sets, each
//! answered by a backend that fetches ID lists (`WHERE id IN (...)`, 2 ms per query), through
//! each design. Printed per design: queries, IDs fetched, **IDs fetched twice** (an ID fetched
//! while another query for it was in the air: wasted work, which coalescing exists to avoid),
//! and the request latency's p50 and p99. Every answer is checked.
//!
//! Designs:
//! * `naive`: each request queries its own IDs;
//! * `coalescer work_batch`: each request is one `Group::work_batch`; single lookups are
//!   one-key batches on the same group;
//! * `coalescer Batcher`: each request loads its IDs one by one through a `Batcher` (default
//!   window: 10 yields), which collects them across requests into batches;
//! * `sturdyc-style`: what the issue describes of sturdyc (Go): per-ID in-flight tracking, but
//!   batch and single lookups in two separate maps (so a single lookup and a batch can fetch the
//!   same ID at once), and a batch runs in its first caller's task;
//! * `async-graphql DataLoader` (1 ms delay, its default; and 0), with
//!   `--features async-graphql-bench`: `load_many` per request, `load_one` per single lookup.
//!
//! Run: `cargo bench -p coalescer-benches --bench batch` (prints a Markdown table and the load
//! average; the machine is noisy: compare ratios within one run).

use coalescer::{Batcher, Group};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Concurrent requests per burst, and bursts per design.
const REQUESTS: usize = 400;
const BURSTS: usize = 3;
/// IDs per batch request; every fourth request is a single lookup instead.
const IDS_PER_REQUEST: u64 = 8;
const ID_SPACE: u64 = 256;
/// The backend's time per query.
const LATENCY: Duration = Duration::from_millis(2);

/// The IDs request `i` asks for: a window of the ID space, overlapping its neighbours'.
fn request_ids(i: usize) -> Vec<u64> {
    let start = (i as u64 * 5) % ID_SPACE;
    if i % 4 == 3 { vec![start] } else { (0..IDS_PER_REQUEST).map(|d| (start + d) % ID_SPACE).collect() }
}

/// What the backend has for `id` (every 13th ID does not exist).
fn row(id: u64) -> Option<String> {
    (id % 13 != 0).then(|| format!("user {id}"))
}

/// The database: counts queries, IDs fetched, and IDs fetched while already in the air.
struct Backend {
    queries: AtomicUsize,
    fetched: AtomicUsize,
    twice: AtomicUsize,
    in_air: Vec<AtomicUsize>,
}

impl Backend {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            queries: AtomicUsize::new(0),
            fetched: AtomicUsize::new(0),
            twice: AtomicUsize::new(0),
            in_air: (0..ID_SPACE).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// `SELECT id, name FROM users WHERE id IN (ids)`: the rows that exist.
    async fn query(&self, ids: Vec<u64>) -> Vec<(u64, String)> {
        self.queries.fetch_add(1, Relaxed);
        self.fetched.fetch_add(ids.len(), Relaxed);
        for &id in &ids {
            if self.in_air[id as usize].fetch_add(1, Relaxed) > 0 {
                self.twice.fetch_add(1, Relaxed);
            }
        }
        tokio::time::sleep(LATENCY).await;
        for &id in &ids {
            self.in_air[id as usize].fetch_sub(1, Relaxed);
        }
        ids.into_iter().filter_map(|id| row(id).map(|r| (id, r))).collect()
    }
}

type Answer = Vec<Option<String>>;
type BoxFut<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// One design: answers a request for `ids` (`single`: a one-ID lookup).
trait Design: Send + Sync + 'static {
    fn name(&self) -> String;
    fn get(&self, ids: Vec<u64>, single: bool) -> BoxFut<'_>;
}

struct Naive(Arc<Backend>);

impl Design for Naive {
    fn name(&self) -> String {
        "naive (a query per request)".into()
    }

    fn get(&self, ids: Vec<u64>, _: bool) -> BoxFut<'_> {
        Box::pin(async move {
            let rows: HashMap<u64, String> = self.0.query(ids.clone()).await.into_iter().collect();
            ids.iter().map(|id| rows.get(id).cloned()).collect()
        })
    }
}

struct WorkBatch(Arc<Backend>, Group<u64, Option<String>>);

impl Design for WorkBatch {
    fn name(&self) -> String {
        "coalescer work_batch".into()
    }

    fn get(&self, ids: Vec<u64>, _: bool) -> BoxFut<'_> {
        let backend = self.0.clone();
        Box::pin(async move {
            let results = self
                .1
                .work_batch(ids, move |ids| {
                    let backend = backend.clone();
                    async move { backend.query(ids).await }
                })
                .await;
            results.into_iter().map(|r| r.expect("no panic").into_value()).collect()
        })
    }
}

type Fetch = Box<dyn Fn(Vec<u64>) -> Pin<Box<dyn Future<Output = Vec<(u64, String)>> + Send>> + Send + Sync>;

struct BatcherDesign(Batcher<u64, Option<String>, coalescer::futures::Many<Fetch>>);

impl Design for BatcherDesign {
    fn name(&self) -> String {
        "coalescer Batcher (10 yields)".into()
    }

    fn get(&self, ids: Vec<u64>, _: bool) -> BoxFut<'_> {
        let loads: Vec<_> = ids.into_iter().map(|id| self.0.load(id)).collect();
        // A named future, not an async block: rustc cannot prove an async block holding the
        // loads `Send` (a higher-ranked lifetime error), though each load is.
        Box::pin(JoinAll {
            outs: loads.iter().map(|_| None).collect(),
            futs: loads,
            map: |r| r.expect("no panic").into_value(),
        })
    }
}

/// In-flight IDs of one map: each with the receiver of its fetcher's answer.
type InFlight = Mutex<HashMap<u64, tokio::sync::watch::Receiver<Option<Option<String>>>>>;

/// sturdyc's shape, as the issue describes it: per-ID in-flight tracking, but batches and
/// single lookups in two maps, and each fetch run by its first caller.
struct SturdyStyle {
    backend: Arc<Backend>,
    batches: InFlight,
    singles: InFlight,
}

impl Design for SturdyStyle {
    fn name(&self) -> String {
        "sturdyc-style (two in-flight maps)".into()
    }

    fn get(&self, ids: Vec<u64>, single: bool) -> BoxFut<'_> {
        let map = if single { &self.singles } else { &self.batches };
        Box::pin(async move {
            let (mut waits, mut mine, mut senders) = (HashMap::new(), Vec::new(), Vec::new());
            {
                let mut in_flight = map.lock().unwrap();
                for &id in &ids {
                    if let Some(rx) = in_flight.get(&id) {
                        waits.insert(id, rx.clone());
                    } else if !mine.contains(&id) {
                        let (tx, rx) = tokio::sync::watch::channel(None);
                        in_flight.insert(id, rx);
                        mine.push(id);
                        senders.push(tx);
                    }
                }
            }
            let mut answers: HashMap<u64, Option<String>> = HashMap::new();
            if !mine.is_empty() {
                let rows: HashMap<u64, String> = self.backend.query(mine.clone()).await.into_iter().collect();
                let mut in_flight = map.lock().unwrap();
                for (id, tx) in mine.into_iter().zip(senders) {
                    let value = rows.get(&id).cloned();
                    tx.send_replace(Some(value.clone()));
                    in_flight.remove(&id);
                    answers.insert(id, value);
                }
            }
            for (id, mut rx) in waits {
                let value = rx.wait_for(Option::is_some).await.expect("the fetcher finished").clone();
                answers.insert(id, value.expect("checked"));
            }
            ids.iter().map(|id| answers[id].clone()).collect()
        })
    }
}

/// Polls every future of `futs` until all are done; maps each output with `map`.
struct JoinAll<F: Future, T> {
    futs: Vec<F>,
    outs: Vec<Option<F::Output>>,
    map: fn(F::Output) -> T,
}

impl<F: Future + Unpin, T> Future for JoinAll<F, T>
where
    F::Output: Unpin,
{
    type Output = Vec<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
        let this = self.get_mut();
        for (fut, out) in this.futs.iter_mut().zip(this.outs.iter_mut()) {
            if out.is_none() {
                if let Poll::Ready(v) = Pin::new(fut).poll(cx) {
                    *out = Some(v);
                }
            }
        }
        if this.outs.iter().any(Option::is_none) {
            return Poll::Pending;
        }
        Poll::Ready(this.outs.drain(..).map(|o| (this.map)(o.expect("done"))).collect())
    }
}

#[cfg(feature = "async-graphql-bench")]
mod graphql {
    use super::{Answer, Backend, BoxFut, Design};
    use async_graphql::dataloader::{DataLoader, Loader};
    use std::collections::HashMap;
    use std::sync::Arc;

    pub(crate) struct Users(pub(crate) Arc<Backend>);

    impl Loader<u64> for Users {
        type Value = String;
        type Error = Arc<String>;

        async fn load(&self, keys: &[u64]) -> Result<HashMap<u64, String>, Arc<String>> {
            Ok(self.0.query(keys.to_vec()).await.into_iter().collect())
        }
    }

    pub(crate) struct Graphql(pub(crate) DataLoader<Users>, pub(crate) &'static str);

    impl Design for Graphql {
        fn name(&self) -> String {
            format!("async-graphql DataLoader ({})", self.1)
        }

        fn get(&self, ids: Vec<u64>, single: bool) -> BoxFut<'_> {
            Box::pin(async move {
                if single {
                    return vec![self.0.load_one(ids[0]).await.expect("no error")];
                }
                let found = self.0.load_many(ids.iter().copied()).await.expect("no error");
                ids.iter().map(|id| found.get(id).cloned()).collect::<Answer>()
            })
        }
    }

    pub(crate) fn designs(backend: &Arc<Backend>) -> Vec<Arc<dyn Design>> {
        let loader = |delay| DataLoader::new(Users(backend.clone()), tokio::spawn).delay(delay);
        vec![
            Arc::new(Graphql(loader(std::time::Duration::from_millis(1)), "1 ms delay, its default")),
            Arc::new(Graphql(loader(std::time::Duration::ZERO), "0 delay")),
        ]
    }
}

/// Runs the bursts through `design`; returns the latencies of every request.
async fn run(design: Arc<dyn Design>) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(REQUESTS * BURSTS);
    for _ in 0..BURSTS {
        let mut tasks = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let design = design.clone();
            tasks.push(tokio::spawn(async move {
                let ids = request_ids(i);
                let started = Instant::now();
                let answer = design.get(ids.clone(), ids.len() == 1).await;
                let took = started.elapsed();
                assert_eq!(answer, ids.iter().map(|&id| row(id)).collect::<Answer>(), "{}", design.name());
                took
            }));
        }
        for task in tasks {
            latencies.push(task.await.expect("a request panicked"));
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list here
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "{REQUESTS} concurrent requests x {BURSTS} bursts; {IDS_PER_REQUEST} overlapping IDs per request (every \
         4th a single ID) of {ID_SPACE}; {} ms per query\n",
        LATENCY.as_millis()
    );
    println!("| design | queries | IDs fetched | IDs fetched twice | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    type Make = Box<dyn Fn(&Arc<Backend>) -> Vec<Arc<dyn Design>>>;
    let makers: Vec<Make> = vec![
        Box::new(|b| vec![Arc::new(Naive(b.clone())) as Arc<dyn Design>]),
        Box::new(|b| vec![Arc::new(WorkBatch(b.clone(), Group::with_capacity(1024))) as Arc<dyn Design>]),
        Box::new(|b| {
            let backend = b.clone();
            let fetch: Fetch = Box::new(move |ids| {
                let backend = backend.clone();
                Box::pin(async move { backend.query(ids).await })
            });
            vec![Arc::new(BatcherDesign(Batcher::new(fetch).with_group(Group::with_capacity(1024))))
                as Arc<dyn Design>]
        }),
        Box::new(|b| {
            let (batches, singles) = (Mutex::default(), Mutex::default());
            vec![Arc::new(SturdyStyle { backend: b.clone(), batches, singles }) as Arc<dyn Design>]
        }),
        #[cfg(feature = "async-graphql-bench")]
        Box::new(graphql::designs),
    ];
    for make in &makers {
        // Each design runs against a fresh backend (made inside the runtime: the DataLoaders
        // take the runtime's spawner).
        let count = rt.block_on(async { make(&Backend::new()).len() });
        for index in 0..count {
            let backend = Backend::new();
            let design = rt.block_on(async { make(&backend).swap_remove(index) });
            let mut latencies = rt.block_on(run(design.clone()));
            latencies.sort_unstable();
            println!(
                "| {} | {} | {} | {} | {:.1} ms | {:.1} ms |",
                design.name(),
                backend.queries.load(Relaxed),
                backend.fetched.load(Relaxed),
                backend.twice.load(Relaxed),
                percentile(&latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
