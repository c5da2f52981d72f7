//! The expiry-edge and fail-safe scenarios with small settings: what SQLite counted, and how
//! each request was answered (no timing is asserted).

use stampede::db::{Db, Shape};
use stampede::edge::{Load, expiry_edge, fail_safe};
use std::sync::Arc;
use std::time::Duration;

fn db(dir: &tempfile::TempDir) -> Arc<Db> {
    let shape = Shape { orders: 100_000, categories: 8 };
    let path = dir.path().join("edge.db");
    Arc::new(Db::open_or_seed(&path, shape, &indicatif::ProgressBar::hidden()).unwrap().0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(1024).build().unwrap()
}

#[test]
fn at_the_expiry_edge_the_loader_cache_queries_once_and_refresh_after_keeps_everyone_from_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let load = Load { rate: 400, duration: Duration::from_millis(800) };
    let rows = runtime().block_on(async {
        let watchdog = Duration::from_secs(120);
        tokio::time::timeout(watchdog, expiry_edge(&db, load)).await.expect("watchdog")
    });
    println!("{}", stampede::edge::render(load, &rows));
    let [naive, ttl_only, ahead] = &rows[..] else { panic!("three rows") };
    for row in &rows {
        assert_eq!(row.requests, 320, "{}", row.label);
        assert_eq!(row.failed, 0, "{}", row.label);
    }
    // The naive cache sends every request that misses to SQLite while the refill is running.
    assert!(naive.queries >= 1 && naive.queries as usize == naive.waited, "{naive:?}");
    // The loader cache: one query for the expiry; with a TTL only, the requests at the edge wait.
    assert_eq!(ttl_only.queries, 1, "{ttl_only:?}");
    assert!(ttl_only.waited >= 1, "{ttl_only:?}");
    // With refresh_after (a quarter of the run): at most one query per refresh period, each
    // ahead of the expiry, and no request waits for any of them.
    assert!((1..=4).contains(&ahead.queries), "{ahead:?}");
    assert_eq!(ahead.waited, 0, "{ahead:?}");
}

#[test]
fn while_the_query_fails_callers_keep_getting_the_last_good_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let load = Load { rate: 200, duration: Duration::from_millis(800) };
    let row = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), fail_safe(&db, load)).await.expect("watchdog")
    });
    println!("{}", stampede::edge::render(load, std::slice::from_ref(&row)));
    assert_eq!(row.failed, 0, "{row:?}");
    assert!(row.stale > 0, "{row:?}");
}

#[test]
fn the_expiry_edge_chart_is_an_svg_with_one_series_per_cache() {
    use stampede::edge::{EdgeRow, chart};
    let row = |label, points| EdgeRow {
        label,
        requests: 3,
        queries: 1,
        at_edge: 1,
        edge_latency: [Duration::ZERO; 3],
        median: Duration::ZERO,
        waited: 1,
        stale: 0,
        failed: 0,
        points,
    };
    let naive = row("naive TTL cache", vec![(0.1, 0.000_001), (1.0, 0.4), (1.5, 0.000_001)]);
    let ahead = row("coalescer::cache, refresh_after", vec![(0.1, 0.000_001), (1.0, 0.000_002)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.svg");
    let load = Load { rate: 3, duration: Duration::from_secs(2) };
    chart(&path, load, &[&naive, &ahead]).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("naive TTL cache") && svg.contains("coalescer::cache, refresh_after"));
    assert_eq!(svg.matches("<circle").count(), 5 + 2, "one dot per request, one per legend entry");
}
