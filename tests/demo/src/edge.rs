//! Two scenarios of `coalescer::cache` under steady load on one hot key:
//!
//! - **The expiry edge.** About 1,300 requests a second on one key whose report takes tens of
//!   milliseconds, with a TTL that runs out mid-run: the well-known incident where one expired
//!   key sent thousands of identical queries to the database. Three caches answer: a naive TTL
//!   cache (every request that misses queries), the loader cache with a TTL only (one query,
//!   but every request at the edge waits for it), and the loader cache with `refresh_after`
//!   (one query ahead of the expiry, nobody waits). SQLite's own count of report queries, and
//!   the latency of the requests that arrived at the edge, tell them apart.
//! - **Fail-safe.** The query fails for a while (the database is "down"); with `max_stale`,
//!   callers keep getting the last good report, and the table says how many were served stale.

use crate::cache::TtlCache;
use crate::db::{Db, QueryError, Report};
use coalescer::cache::{Cache, Served};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The key every request asks for.
const KEY: i64 = 0;

/// The steady load.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Requests per second.
    pub rate: u32,
    /// How long the load lasts.
    pub duration: Duration,
}

/// One cache's run across the edge.
#[derive(Clone, Debug)]
pub struct EdgeRow {
    /// Which cache answered.
    pub label: &'static str,
    /// Requests made.
    pub requests: usize,
    /// Report queries SQLite started during the run.
    pub queries: u64,
    /// Requests that arrived from the expiry until the refill landed.
    pub at_edge: usize,
    /// Their latency: median, 99th percentile, maximum.
    pub edge_latency: [Duration; 3],
    /// The median latency of every request.
    pub median: Duration,
    /// Requests that waited for a query.
    pub waited: usize,
    /// Requests served a stale report because the query failed.
    pub stale: usize,
    /// Requests that got an error.
    pub failed: usize,
    /// Each request: when it started and how long it took, in seconds (for the chart).
    pub points: Vec<(f64, f64)>,
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Answered {
    /// It waited for a query (its own, or one it joined).
    pub waited: bool,
    /// It got a stale report because the query failed.
    pub stale: bool,
    /// It got an error.
    pub failed: bool,
}

/// How a request was answered, and when.
struct Answer {
    started: Duration,
    took: Duration,
    answered: Answered,
}

/// Runs the expiry-edge scenario for each cache: `ttl` runs out in the middle of the load.
///
/// With `refresh_after` (half the TTL, so that a refresh lands well before the expiry) the key
/// is refreshed once per `refresh_after` while it is read: a few queries, none waited for.
pub async fn expiry_edge(db: &Arc<Db>, load: Load) -> Vec<EdgeRow> {
    let ttl = load.duration / 2;
    let refresh_after = ttl / 2;
    let naive = Arc::new(TtlCache::<i64, Arc<Report>>::new(ttl));
    let ttl_only: Cache<i64, Arc<Report>, QueryError> = Cache::builder().time_to_live(ttl).build();
    let ahead: Cache<i64, Arc<Report>, QueryError> =
        Cache::builder().time_to_live(ttl).refresh_after(refresh_after).build();
    let mut rows = Vec::new();
    let naive_get = {
        let db = db.clone();
        move || {
            let (db, naive) = (db.clone(), naive.clone());
            async move {
                if naive.get(&KEY).is_some() {
                    return Answered::default();
                }
                match crate::burst::query(db, KEY).await {
                    Ok(report) => {
                        naive.insert(KEY, report);
                        Answered { waited: true, ..Answered::default() }
                    }
                    Err(_) => Answered { waited: true, failed: true, ..Answered::default() },
                }
            }
        }
    };
    rows.push(steady(db, "naive TTL cache", load, naive_get).await);
    rows.push(steady(db, "coalescer::cache, TTL only", load, cached(db, ttl_only, None)).await);
    rows.push(steady(db, "coalescer::cache, refresh_after", load, cached(db, ahead, None)).await);
    rows
}

/// Runs the fail-safe scenario: the query fails for the middle half of the load.
pub async fn fail_safe(db: &Arc<Db>, load: Load) -> EdgeRow {
    let ttl = load.duration / 8;
    let cache: Cache<i64, Arc<Report>, QueryError> =
        Cache::builder().time_to_live(ttl).max_stale(load.duration).retry_after(ttl / 2).build();
    let down = Arc::new(AtomicBool::new(false));
    let request = cached(db, cache, Some(down.clone()));
    // The report is in the cache before the outage can begin (on a loaded machine the first
    // query alone may take longer than the quarter of the run before the outage).
    request().await;
    let outage = {
        let down = down.clone();
        tokio::spawn(async move {
            tokio::time::sleep(load.duration / 4).await;
            down.store(true, Relaxed);
            tokio::time::sleep(load.duration / 2).await;
            down.store(false, Relaxed);
        })
    };
    let label = "coalescer::cache, max_stale (query down for half the run)";
    let row = steady(db, label, load, request).await;
    // Over (both of its phases ran) by the time the load's last request was answered.
    outage.await.expect("the outage task does not panic");
    row
}

/// A request through `cache`; the query fails while `down` is set.
fn cached(
    db: &Arc<Db>,
    cache: Cache<i64, Arc<Report>, QueryError>,
    down: Option<Arc<AtomicBool>>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Answered> + Send>> + Send + Sync + 'static {
    let db = db.clone();
    move || {
        let (db, cache, down) = (db.clone(), cache.clone(), down.clone());
        Box::pin(async move {
            let loader = move || async move {
                if down.is_some_and(|d| d.load(Relaxed)) {
                    return Err(QueryError::Interrupted); // stand-in for "the database is down"
                }
                crate::burst::query(db, KEY).await
            };
            match cache.try_get_with(KEY, loader).await {
                Ok(read) => Answered {
                    waited: read.served().is_loaded(),
                    stale: read.served() == Served::StaleOnFailure,
                    failed: false,
                },
                Err(_) => Answered { waited: true, failed: true, ..Answered::default() },
            }
        })
    }
}

/// Fires `load.rate` requests a second at `request` for `load.duration` (each request its own
/// task), fills the cache first, and measures.
async fn steady<F, Fut>(db: &Arc<Db>, label: &'static str, load: Load, request: F) -> EdgeRow
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answered> + Send + 'static,
{
    request().await; // the first fill
    let queries_before = db.log().total();
    let begin = Instant::now();
    let request = Arc::new(request);
    let total = (f64::from(load.rate) * load.duration.as_secs_f64()) as usize;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / f64::from(load.rate));
        if let Some(wait) = due.checked_sub(begin.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let started = begin.elapsed();
            let answered = request().await;
            Answer { started, took: begin.elapsed() - started, answered }
        }));
    }
    let mut answers = Vec::with_capacity(total);
    for task in tasks {
        answers.push(task.await.expect("a request does not panic"));
    }
    let queries = db.log().total() - queries_before;
    summarize(label, answers, queries, load.duration / 2)
}

/// The requests at the edge: from the expiry (half way through) until the first request that
/// arrived after it finished (the refill landed).
fn summarize(label: &'static str, answers: Vec<Answer>, queries: u64, expiry: Duration) -> EdgeRow {
    let refilled = answers
        .iter()
        .filter(|a| a.started >= expiry)
        .map(|a| a.started + a.took)
        .fold(None, |first: Option<Duration>, end| Some(first.map_or(end, |f| f.min(end))))
        .unwrap_or(expiry);
    let mut edge: Vec<Duration> =
        answers.iter().filter(|a| a.started >= expiry && a.started <= refilled).map(|a| a.took).collect();
    edge.sort();
    let mut all: Vec<Duration> = answers.iter().map(|a| a.took).collect();
    all.sort();
    let pick = |v: &[Duration], p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or_default()
    };
    EdgeRow {
        label,
        requests: answers.len(),
        queries,
        at_edge: edge.len(),
        edge_latency: [pick(&edge, 0.5), pick(&edge, 0.99), pick(&edge, 1.0)],
        median: pick(&all, 0.5),
        waited: answers.iter().filter(|a| a.answered.waited).count(),
        stale: answers.iter().filter(|a| a.answered.stale).count(),
        failed: answers.iter().filter(|a| a.answered.failed).count(),
        points: answers.iter().map(|a| (a.started.as_secs_f64(), a.took.as_secs_f64())).collect(),
    }
}

/// Draws each request's latency over time across the edge, one series per cache (the naive TTL
/// cache against `refresh_after`), as an SVG file at `path`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn chart(path: &std::path::Path, load: Load, rows: &[&EdgeRow]) -> Result<(), crate::BoxError> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    // Latency in milliseconds on a log scale, from 1 µs: a hit and a wait for a query differ by
    // four orders of magnitude.
    let max_ms = rows.iter().flat_map(|r| &r.points).map(|p| p.1 * 1e3).fold(1.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Latency of each request across the expiry edge ({} requests/s, one key)", load.rate),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..load.duration.as_secs_f64(), (0.001..max_ms * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time since the load started (s); the TTL runs out half way")
        .y_desc("latency (ms, log)")
        .draw()?;
    let colors = [RED, BLUE, GREEN];
    for (row, color) in rows.iter().zip(colors) {
        chart
            .draw_series(
                row.points.iter().map(|&(t, d)| Circle::new((t, (d * 1e3).max(0.001)), 2, color.filled())),
            )?
            .label(row.label)
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Opens the database of `settings` and runs both scenarios at `load` on a runtime of their
/// own; returns the tables.
///
/// # Errors
///
/// When the runtime cannot start or the database fails.
pub fn run(settings: &crate::Settings, load: Load) -> Result<String, crate::BoxError> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(4096).build()?;
    runtime.block_on(async {
        let (path, shape) = (settings.db_path.clone(), settings.shape);
        let hidden = indicatif::ProgressBar::hidden();
        let (db, _) = tokio::task::spawn_blocking(move || Db::open_or_seed(&path, shape, &hidden)).await??;
        let db = Arc::new(db);
        let started = Instant::now();
        crate::burst::query(db.clone(), KEY).await?;
        let query_time = started.elapsed();
        let mut rows = expiry_edge(&db, load).await;
        rows.push(fail_safe(&db, load).await);
        let mut out = render(load, &rows);
        // The naive TTL cache against refresh_after, drawn beside the database.
        let svg = settings.db_path.with_file_name("expiry-edge.svg");
        match chart(&svg, load, &[&rows[0], &rows[2]]) {
            Ok(()) => {
                let _ = writeln!(out, "chart of every request's latency across the edge: {}", svg.display());
            }
            Err(e) => {
                let _ = writeln!(out, "(no chart: {e})");
            }
        }
        let _ = writeln!(
            out,
            "(one report query alone: {query_time:.1?}; the TTL runs out half way through the load)"
        );
        Ok(out)
    })
}

/// The rows as a markdown table.
pub fn render(load: Load, rows: &[EdgeRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nsteady load: {} requests/s on one key for {:?}", load.rate, load.duration);
    let _ = writeln!(
        out,
        "| cache | requests | SQLite queries | waited for a query | at the edge | edge p50 | edge p99 | edge max | all p50 | served stale | failed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let [p50, p99, max] = r.edge_latency;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {} | {} |",
            r.label, r.requests, r.queries, r.waited, r.at_edge, p50, p99, max, r.median, r.stale, r.failed
        );
    }
    out
}
