//! `--http`: the report served over HTTP on loopback (axum), loaded with a real load generator,
//! once without and once with [`coalescer_tower::CoalesceLayer`].
//!
//! The load generator is Debian's `wrk` (`apt-get install wrk`): a small C program that keeps
//! `--requests` connections busy for a few seconds and prints latency percentiles. It was
//! chosen over the `oha` crate because it is one small system package, where `oha` would add a
//! few hundred crates (a terminal UI among them) to the demo's build; the demo only reads its
//! summary. Each mode gets a fresh server; the handler runs the report query on SQLite, and
//! SQLite's own trace hook counts the queries, as in the other scenarios.

use crate::db::{Db, Report, Shape};
use crate::{BoxError, Settings, burst};
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use indicatif::ProgressBar;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How long `wrk` loads each mode.
pub const LOAD_TIME: Duration = Duration::from_secs(3);

/// What one mode measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// The mode's name.
    pub mode: &'static str,
    /// Requests `wrk` completed.
    pub requests: u64,
    /// `wrk`'s requests per second.
    pub per_second: f64,
    /// Handler executions.
    pub executions: u64,
    /// Report queries SQLite ran.
    pub queries: u64,
    /// Responses that were not 2xx/3xx, and socket errors (timeouts included).
    pub errors: u64,
    /// `wrk`'s latency percentiles: 50, 75, 90, 99.
    pub percentiles: Vec<(String, String)>,
}

/// Serves the report, loads it with `wrk` without and with the layer, and renders a table.
///
/// # Errors
///
/// When `wrk` is not installed, the database fails, or a server cannot start.
pub fn run(settings: &Settings) -> Result<String, BoxError> {
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        return Err("--http needs the `wrk` load generator on the PATH (Debian: apt-get install wrk)".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(settings.requests.max(512))
        .build()?;
    runtime.block_on(async {
        let (path, shape) = (settings.db_path.clone(), settings.shape);
        let db = tokio::task::spawn_blocking(move || open(&path, shape)).await??;
        let mut rows = Vec::new();
        for coalesced in [false, true] {
            rows.push(load(&db, coalesced, settings.requests).await?);
        }
        Ok(render(settings, &rows))
    })
}

fn open(path: &std::path::Path, shape: Shape) -> Result<Arc<Db>, BoxError> {
    Ok(Arc::new(Db::open_or_seed(path, shape, &ProgressBar::hidden())?.0))
}

#[derive(Clone)]
struct App {
    db: Arc<Db>,
    executions: Arc<AtomicU64>,
}

/// `GET /report/{category}`: the report query, as text.
async fn report(
    State(app): State<App>,
    Path(category): Path<i64>,
) -> Result<String, (axum::http::StatusCode, String)> {
    app.executions.fetch_add(1, Relaxed);
    match burst::query(app.db, category).await {
        Ok(report) => Ok(text(&report)),
        Err(e) => Err((axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}"))),
    }
}

fn text(report: &Report) -> String {
    report.iter().fold(String::new(), |mut out, p| {
        let _ = writeln!(out, "{} {} {:.2}", p.product_id, p.name, p.revenue);
        out
    })
}

/// One mode: a fresh server on loopback, `wrk` against it, the counts.
async fn load(db: &Arc<Db>, coalesced: bool, connections: usize) -> Result<Measured, BoxError> {
    let executions = Arc::new(AtomicU64::new(0));
    let app = App { db: db.clone(), executions: executions.clone() };
    let mut router = Router::new().route("/report/{category}", get(report)).with_state(app);
    if coalesced {
        router = router.layer(coalescer_tower::CoalesceLayer::new());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/report/0", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(async move { stopped.await.unwrap_or(()) }).await
    });
    let queries = db.log().total();
    let args = [
        "-t2".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", LOAD_TIME.as_secs()),
        "--timeout".to_owned(),
        "30s".to_owned(),
        "--latency".to_owned(),
        url,
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(args).output()).await??;
    let _ = stop.send(());
    server.await??;
    if !output.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let mut measured = parse(&String::from_utf8_lossy(&output.stdout));
    measured.mode = if coalesced { "coalescer-tower" } else { "no layer" };
    measured.executions = executions.load(Relaxed);
    measured.queries = db.log().total() - queries;
    Ok(measured)
}

/// Reads `wrk --latency`'s summary.
pub fn parse(out: &str) -> Measured {
    let mut measured = Measured::default();
    let number =
        |s: &str| s.trim().split(|c: char| !c.is_ascii_digit() && c != '.').next().unwrap_or("").parse().ok();
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some(p @ ("50%" | "75%" | "90%" | "99%")), Some(value)) => {
                measured.percentiles.push((p.to_owned(), value.to_owned()));
            }
            (Some(n), Some("requests")) => measured.requests = number(n).unwrap_or(0.0) as u64,
            (Some("Requests/sec:"), Some(n)) => measured.per_second = number(n).unwrap_or(0.0),
            (Some("Non-2xx"), _) => {
                measured.errors += line.rsplit(' ').next().and_then(number).unwrap_or(0.0) as u64;
            }
            (Some("Socket"), Some("errors:")) => {
                let counts = line.split(',').filter_map(|part| part.rsplit(' ').next().and_then(number));
                measured.errors += counts.sum::<f64>() as u64;
            }
            _ => {}
        }
    }
    measured
}

fn render(settings: &Settings, rows: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nGET /report/0 over HTTP/1.1 on loopback: wrk, {} connections, {} s per mode ({} orders)\n",
        settings.requests,
        LOAD_TIME.as_secs(),
        settings.shape.orders
    );
    let _ = writeln!(
        out,
        "| layer | requests | req/s | handler runs | SQLite queries | errors | p50 | p75 | p90 | p99 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let p = |name: &str| row.percentiles.iter().find(|(k, _)| k == name).map_or("-", |(_, v)| v.as_str());
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            row.mode,
            row.requests,
            row.per_second,
            row.executions,
            row.queries,
            row.errors,
            p("50%"),
            p("75%"),
            p("90%"),
            p("99%")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:1/report/0
  2 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.52ms   30.12ms 300.00ms   70.00%
  Latency Distribution
     50%  118.00ms
     75%  130.00ms
     90%  150.00ms
     99%    1.20s
  4800 requests in 3.01s, 1.20MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   1594.12
Transfer/sec:    400.00KB
";

    #[test]
    fn wrk_summaries_are_read() {
        let m = parse(WRK);
        assert_eq!((m.requests, m.errors), (4800, 8));
        assert!((m.per_second - 1594.12).abs() < 1e-9);
        assert_eq!(m.percentiles[0], ("50%".to_owned(), "118.00ms".to_owned()));
        assert_eq!(m.percentiles[3].1, "1.20s");
    }
}
