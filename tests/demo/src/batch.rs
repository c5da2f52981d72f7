//! Requests for overlapping sets of products, each answered with one `IN (...)` query: naively
//! (every request queries its own set), with `Group::try_work_batch` (a product already in the
//! air is joined, never queried twice; the rest go in one query), and with a `Batcher` (each
//! request loads its products one by one; concurrent loads are collected into batches).
//!
//! SQLite counts the queries and the product ids they asked for (its trace hook); the fetch
//! counts the ids that were asked for while another query for them was still running.

use crate::burst::percentile;
use crate::db::{Db, ProductTotal, QueryError};
use crate::table::duration;
use coalescer::{Batcher, TryGroup};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How the requests spread over the products.
#[derive(Clone, Copy, Debug)]
pub struct Sets {
    /// Concurrent requests.
    pub requests: usize,
    /// Products per request.
    pub per_request: usize,
    /// The popular products the sets are drawn from (ids `0..popular`).
    pub popular: usize,
}

impl Default for Sets {
    fn default() -> Self {
        Self { requests: 200, per_request: 8, popular: 64 }
    }
}

impl Sets {
    /// Request `i`'s products: a run of `per_request` consecutive ids starting at `3 i` (modulo
    /// `popular`), so that neighbouring requests overlap in most of their products.
    pub fn of(&self, i: usize) -> Vec<i64> {
        (0..self.per_request).map(|k| ((3 * i + k) % self.popular) as i64).collect()
    }
}

/// One way of answering, measured.
#[derive(Clone, Debug)]
pub struct BatchRow {
    /// What answered the requests.
    pub label: &'static str,
    /// Products queries SQLite started.
    pub queries: u64,
    /// Product ids those queries asked for, in all.
    pub ids: u64,
    /// Ids asked for while another query for them was still running.
    pub ids_twice: u64,
    /// Products a request got no row for (they have no orders), over all requests.
    pub missing: usize,
    /// From the first request's start to the last one's answer.
    pub wall: Duration,
    /// Each request timed from the release.
    pub p50: Duration,
    /// Each request timed from the release.
    pub p99: Duration,
}

/// The ways, in the order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Every request queries its own set.
    Naive,
    /// `try_work_batch`: products in the air are joined, the rest queried in one list.
    WorkBatch,
    /// A `Batcher`: each product loaded alone; concurrent loads collected into one list.
    Batcher,
}

impl Way {
    /// Every way, in the table's order.
    pub const ALL: [Self; 3] = [Self::Naive, Self::WorkBatch, Self::Batcher];

    fn label(self) -> &'static str {
        match self {
            Self::Naive => "naive: one IN query per request",
            Self::WorkBatch => "coalescer: try_work_batch",
            Self::Batcher => "coalescer: Batcher (10 yields)",
        }
    }
}

type Totals = Result<Vec<(i64, ProductTotal)>, QueryError>;

/// The ids being queried right now, to count those asked for twice at once.
#[derive(Default)]
struct InFlight {
    ids: Mutex<HashMap<i64, usize>>,
    twice: std::sync::atomic::AtomicU64,
}

impl InFlight {
    /// Queries `ids` on the blocking pool, counting those another query has in the air.
    async fn query(self: &Arc<Self>, db: &Arc<Db>, ids: Vec<i64>) -> Totals {
        {
            let mut air = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            for id in &ids {
                let n = air.entry(*id).or_default();
                if *n > 0 {
                    self.twice.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                *n += 1;
            }
        }
        let (db, asked) = (db.clone(), ids.clone());
        let totals = tokio::task::spawn_blocking(move || db.product_totals(&asked)).await;
        {
            let mut air = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            for id in &ids {
                *air.get_mut(id).expect("counted above") -= 1;
            }
        }
        match totals {
            Ok(totals) => totals,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Runs `way` once: every request released at once, each timed from the release.
pub async fn measure(db: &Arc<Db>, sets: Sets, way: Way) -> Result<BatchRow, crate::BoxError> {
    let air = Arc::new(InFlight::default());
    let (queries_before, ids_before) = db.log().products();
    let group: Arc<TryGroup<i64, Option<ProductTotal>, QueryError>> = Arc::new(TryGroup::new());
    let batcher = {
        let (db, air) = (db.clone(), air.clone());
        Arc::new(Batcher::fallible(move |ids: Vec<i64>| {
            let (db, air) = (db.clone(), air.clone());
            async move { air.query(&db, ids).await }
        }))
    };
    let release = Arc::new(tokio::sync::Barrier::new(sets.requests + 1));
    let mut requests = Vec::with_capacity(sets.requests);
    for i in 0..sets.requests {
        let ids = sets.of(i);
        let (db, air, group, batcher, release) =
            (db.clone(), air.clone(), group.clone(), batcher.clone(), release.clone());
        requests.push(tokio::spawn(async move {
            release.wait().await;
            let started = Instant::now();
            let found = match way {
                Way::Naive => {
                    air.query(&db, ids.clone()).await.map_err(|e| format!("products query: {e}"))?.len()
                }
                Way::WorkBatch => {
                    let fetch = |ids: Vec<i64>| {
                        let (db, air) = (db.clone(), air.clone());
                        async move { air.query(&db, ids).await }
                    };
                    let mut found = 0;
                    for result in group.try_work_batch(ids.clone(), fetch).await {
                        match result {
                            Ok(outcome) => found += usize::from(outcome.value().is_some()),
                            Err(e) => return Err(failed(&e)),
                        }
                    }
                    found
                }
                Way::Batcher => {
                    let loads = ids.iter().map(|&id| batcher.try_load(id));
                    let mut found = 0;
                    for result in join_all(loads).await {
                        match result {
                            Ok(outcome) => found += usize::from(outcome.value().is_some()),
                            Err(e) => return Err(failed(&e)),
                        }
                    }
                    found
                }
            };
            Ok::<_, crate::BoxError>((started, Instant::now(), ids.len() - found))
        }));
    }
    release.wait().await;
    let mut latencies = Vec::with_capacity(requests.len());
    let (mut first, mut last, mut missing) = (None::<Instant>, None::<Instant>, 0);
    for request in requests {
        let (started, finished, missed) = request.await.expect("a request does not panic")?;
        latencies.push(finished - started);
        first = Some(first.map_or(started, |t| t.min(started)));
        last = Some(last.map_or(finished, |t| t.max(finished)));
        missing += missed;
    }
    let wall = match (first, last) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    db.idle().await;
    latencies.sort();
    let (queries, ids) = db.log().products();
    Ok(BatchRow {
        label: way.label(),
        queries: queries - queries_before,
        ids: ids - ids_before,
        ids_twice: air.twice.load(std::sync::atomic::Ordering::SeqCst),
        missing,
        wall,
        p50: percentile(&latencies, 50).unwrap_or_default(),
        p99: percentile(&latencies, 99).unwrap_or_default(),
    })
}

/// A batch's error (the query's, shared behind an `Arc`, or the flight's), as the demo's.
fn failed(e: &coalescer::Error<QueryError>) -> crate::BoxError {
    match e.failure() {
        Some(query) => format!("products query: {query}").into(),
        None => e.to_string().into(),
    }
}

/// Awaits every future of `futures` in the same task, concurrently; their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(&mut outputs) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// Every way, one after the other.
pub async fn run_all(db: &Arc<Db>, sets: Sets) -> Result<Vec<BatchRow>, crate::BoxError> {
    let mut rows = Vec::new();
    for way in Way::ALL {
        rows.push(measure(db, sets, way).await?);
    }
    Ok(rows)
}

/// The table.
pub fn render(sets: Sets, rows: &[BatchRow]) -> String {
    let mut out = String::new();
    let distinct = sets.popular.min(sets.requests * 3 + sets.per_request);
    if let [naive, batched, ..] = rows {
        let _ = writeln!(
            out,
            "\nbatching: {} requests for overlapping product sets ran {} IN (...) queries instead of {}, \
             asking for {} product ids instead of {}.",
            sets.requests, batched.queries, naive.queries, batched.ids, naive.ids
        );
    }
    let _ = writeln!(
        out,
        "{} concurrent requests, {} products each out of {} popular ones ({} distinct in all)\n",
        sets.requests, sets.per_request, sets.popular, distinct
    );
    let _ = writeln!(
        out,
        "{:<33} {:>11} {:>11} {:>17} {:>8} {:>8} {:>8}",
        "scenario", "SQL queries", "ids queried", "ids queried twice", "wall", "p50", "p99"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<33} {:>11} {:>11} {:>17} {:>8} {:>8} {:>8}",
            r.label,
            r.queries,
            r.ids,
            r.ids_twice,
            duration(r.wall),
            duration(r.p50),
            duration(r.p99)
        );
    }
    let _ = writeln!(
        out,
        "\nSQL queries, ids queried: products queries SQLite started and the ids bound into their IN \
         lists (its trace hook).\nids queried twice: asked for while another query for them was \
         still running. Each query scans the orders table, so it costs about the same for 1 id or \
         50.\ntry_work_batch: a request joins the products already in the air (from any request) \
         and queries the rest in one IN list.\nBatcher: each request loads its products one by one; \
         the loads of concurrent requests are collected over 10 yields into one IN list."
    );
    out
}

/// The batch table of a run (after the burst table): opens the database of `settings` and
/// runs every way once.
pub fn run(settings: &crate::Settings) -> Result<String, crate::BoxError> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(1024).build()?;
    runtime.block_on(async {
        let (path, shape) = (settings.db_path.clone(), settings.shape);
        let hidden = indicatif::ProgressBar::hidden();
        let (db, _) = tokio::task::spawn_blocking(move || Db::open_or_seed(&path, shape, &hidden)).await??;
        let db = Arc::new(db);
        let sets = Sets { requests: settings.requests, ..Sets::default() };
        let rows = run_all(&db, sets).await?;
        Ok(render(sets, &rows))
    })
}
