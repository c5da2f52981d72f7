//! A cache stampede on a real embedded database, and what `coalescer` does about it.
//!
//! The demo seeds an SQLite file with products and orders, then fires bursts of concurrent
//! requests for the same revenue report, answered five ways: naively (every request queries),
//! coalesced with a [`coalescer::Group`], behind a TTL cache whose misses are coalesced (the
//! stable loader), and twice more with some requests, every key's leader among them, giving up
//! at a deadline: once in work mode and once in shared-work mode, to show how the two
//! cancellation modes differ. It counts the report queries SQLite itself started (through its
//! trace hook) and prints a table. Then requests for overlapping sets of products, each one SQL
//! `IN (...)` query, naive against batched ([`batch`]), and the expiry edge of a hot key
//! ([`edge`]).
//!
//! Run it with `cargo run --release -p stampede`; `-- --help` lists the flags.
//!
//! The binary is a thin wrapper around [`run`], which the integration tests call with small
//! settings.

pub mod args;
pub mod batch;
pub mod burst;
pub mod cache;
pub mod db;
pub mod edge;
pub mod http;
pub mod latch;
pub mod observe;
pub mod redis;
pub mod table;

use burst::{Plan, Row, Scenario};
use db::{Db, Report, Seeded, Shape, Ticket};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any error the demo reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The database file: reused when it holds a database of `shape`, re-seeded otherwise.
    pub db_path: PathBuf,
    /// How big a database to generate.
    pub shape: Shape,
    /// Concurrent requests in each burst.
    pub requests: usize,
    /// Distinct keys (product categories) the requests are spread over.
    pub keys: usize,
    /// Bursts per scenario, fired one after the other.
    pub bursts: usize,
    /// How long a cached report stays fresh.
    pub ttl: Duration,
    /// Percent of each burst's requests that give up at the deadline in the timeout scenarios
    /// (0 skips those scenarios). The first request for every key, which leads its key's
    /// flight, is always among them (see [`burst::Plan::impatient`]).
    pub impatient_percent: usize,
    /// The deadline of the impatient requests, from the burst's release (never before every
    /// request has joined its flight); `None` takes a third of a report query's time.
    pub timeout: Option<Duration>,
    /// Whether to draw a progress bar while seeding.
    pub progress: bool,
    /// `--trace`: print the flight spans of one burst of the coalesced scenario.
    pub trace: bool,
    /// `--metrics`: print the run's metrics in Prometheus's text format.
    pub metrics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            db_path: default_db_path(),
            shape: Shape::default(),
            requests: 200,
            keys: 1,
            bursts: 2,
            ttl: Duration::from_secs(10),
            impatient_percent: 10,
            timeout: None,
            progress: true,
            trace: false,
            metrics: false,
        }
    }
}

/// `stampede.db` beside the binary (in the cargo target directory, for `cargo run`), or in the
/// system's temporary directory when the binary's directory is unknown.
pub fn default_db_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("stampede.db")))
        .unwrap_or_else(|| std::env::temp_dir().join("stampede.db"))
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The settings it ran with.
    pub settings: Settings,
    /// Whether the database was generated or reused.
    pub seeded: Seeded,
    /// How long opening (and seeding, if it was needed) took.
    pub open_time: Duration,
    /// One report query on its own, on a warm database (the fastest of a few: the others were
    /// slowed down by whatever else the machine was doing).
    pub query_time: Duration,
    /// The deadline the timeout scenarios used.
    pub timeout: Duration,
    /// One row per scenario.
    pub rows: Vec<Row>,
}

/// Opens (or seeds) the database and runs every scenario. Builds a multi-threaded tokio
/// runtime of its own.
///
/// # Errors
///
/// When the settings are inconsistent, the runtime cannot start, or the database fails.
pub fn run(settings: &Settings) -> Result<Summary, BoxError> {
    check(settings)?;
    observe::install(settings.trace, settings.metrics)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Room for every naive request of a burst to hold a connection and query at once.
        .max_blocking_threads(settings.requests.max(512))
        .build()?;
    runtime.block_on(run_async(settings))
}

fn check(settings: &Settings) -> Result<(), BoxError> {
    let categories = usize::try_from(settings.shape.categories)?;
    if settings.keys == 0 || settings.keys > categories {
        return Err(format!("--keys must be between 1 and {categories} (the categories)").into());
    }
    if settings.requests == 0 || settings.bursts == 0 {
        return Err("--requests and --bursts must be at least 1".into());
    }
    if settings.shape.orders < 1 {
        return Err("--orders must be at least 1".into());
    }
    Ok(())
}

async fn run_async(settings: &Settings) -> Result<Summary, BoxError> {
    let started = Instant::now();
    let (db, seeded) = open(settings).await?;
    let open_time = started.elapsed();
    let keys: Vec<i64> = (0..settings.keys as i64).collect();
    let (reference, query_time) = calibrate(&db, &keys).await?;
    let timeout = settings.timeout.unwrap_or(query_time / 3).max(Duration::from_millis(2));
    let plan = Plan {
        requests: settings.requests,
        keys,
        bursts: settings.bursts,
        ttl: settings.ttl,
        impatient: (settings.requests * settings.impatient_percent)
            .div_ceil(100)
            .max(settings.keys)
            .min(settings.requests),
        timeout,
    };
    let mut scenarios = Scenario::BASIC.to_vec();
    if settings.impatient_percent > 0 {
        scenarios.extend(Scenario::TIMEOUTS);
    }
    let mut rows = Vec::with_capacity(scenarios.len());
    for scenario in scenarios {
        rows.push(burst::run(&db, scenario, &plan, &reference).await);
    }
    Ok(Summary { settings: settings.clone(), seeded, open_time, query_time, timeout, rows })
}

async fn open(settings: &Settings) -> Result<(Arc<Db>, Seeded), BoxError> {
    let progress = if settings.progress {
        let bar = ProgressBar::new(0).with_message(format!(
            "seeding {} ({} orders)",
            settings.db_path.display(),
            settings.shape.orders
        ));
        bar.set_style(ProgressStyle::with_template("{msg}\n{wide_bar} {percent:>3}% {elapsed}")?);
        bar
    } else {
        ProgressBar::hidden()
    };
    let (path, shape) = (settings.db_path.clone(), settings.shape);
    let (db, seeded) =
        tokio::task::spawn_blocking(move || Db::open_or_seed(&path, shape, &progress)).await??;
    Ok((Arc::new(db), seeded))
}

/// Runs the report once per key (the reference every answer is checked against, and a warm
/// page cache), then times key 0 a few times; returns the reports and the fastest time.
async fn calibrate(db: &Arc<Db>, keys: &[i64]) -> Result<(HashMap<i64, Arc<Report>>, Duration), BoxError> {
    let db = db.clone();
    let keys = keys.to_vec();
    let calibrated = tokio::task::spawn_blocking(move || {
        let mut reference = HashMap::new();
        for &key in &keys {
            reference.insert(key, Arc::new(db.report(key, &Ticket::default())?));
        }
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            db.report(keys[0], &Ticket::default())?;
            times.push(start.elapsed());
        }
        Ok::<_, db::QueryError>((reference, times.into_iter().min().unwrap_or_default()))
    })
    .await??;
    Ok(calibrated)
}
