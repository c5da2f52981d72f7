//! Runs the demo with small settings and checks what SQLite itself counted.

use stampede::burst::{How, Row, Scenario};
use stampede::db::{Seeded, Shape};
use stampede::{Settings, Summary};
use std::time::Duration;

const REQUESTS: usize = 30;
const KEYS: usize = 3;
const BURSTS: usize = 2;

fn settings(dir: &tempfile::TempDir) -> Settings {
    Settings {
        db_path: dir.path().join("stampede.db"),
        // Big enough that one report query takes tens of milliseconds even in a debug build,
        // so every request of a burst has joined long before the first query lands.
        shape: Shape { orders: 100_000, categories: 8 },
        requests: REQUESTS,
        keys: KEYS,
        bursts: BURSTS,
        ttl: Duration::from_secs(600),
        impatient_percent: 10,
        // The impatient give up as soon as every request has joined: a debug-build query of
        // 100,000 orders takes tens of milliseconds, far longer than the requests take to join.
        timeout: Some(Duration::from_millis(1)),
        progress: false,
        trace: false,
        metrics: false,
    }
}

fn row(summary: &Summary, scenario: Scenario) -> &Row {
    summary.rows.iter().find(|row| row.scenario == scenario).expect("every scenario ran")
}

/// Every key's count is `n`, and only the burst's keys were queried.
fn assert_per_key(row: &Row, n: u64) {
    let expected = (0..KEYS as i64).map(|key| (key, n)).collect();
    assert_eq!(row.queries_per_key, expected, "{:?}", row.scenario);
}

/// Runs the demo on a thread of its own; panics if it has not finished within two minutes.
fn run(settings: Settings) -> Summary {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(stampede::run(&settings).map_err(|e| e.to_string()));
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(result) => result.unwrap(),
        Err(e) => panic!("watchdog: the demo did not finish within 120 s ({e})"),
    }
}

#[test]
fn sqlite_counts_one_query_per_request_naively_one_per_key_coalesced_and_one_more_per_leader_that_gives_up_in_work_mode()
 {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(settings(&dir));
    let report = stampede::table::render(&summary);
    println!("{report}");
    assert_eq!(summary.seeded, Seeded::Created);
    let requests = REQUESTS * BURSTS;

    for row in &summary.rows {
        let scenario = row.scenario;
        assert_eq!(row.requests, requests, "{scenario:?}");
        assert_eq!(row.failed, 0, "{scenario:?}");
        assert_eq!(row.wrong, 0, "{scenario:?}");
        // Each request is counted once in the table.
        assert_eq!(row.ran + row.joined + row.cache_hits, row.values, "{scenario:?}");
        assert_eq!(row.values + row.timed_out, requests, "{scenario:?}");
    }

    let naive = row(&summary, Scenario::Naive);
    assert_eq!(naive.queries, requests as u64);
    assert_eq!(naive.ran, requests);
    assert_per_key(naive, (requests / KEYS) as u64);

    let flights = KEYS * BURSTS;
    let coalesced = row(&summary, Scenario::Coalesced);
    assert_eq!(coalesced.queries, flights as u64);
    assert_per_key(coalesced, BURSTS as u64);
    assert_eq!((coalesced.ran, coalesced.joined), (flights, requests - flights));
    let counters = coalesced.counters.unwrap();
    assert_eq!(counters.leaders, flights as u64);
    assert_eq!(counters.followers, (requests - flights) as u64);

    // The cache answers the second burst: one query per key in all; the first burst's requests
    // reached the group behind it.
    let cached = row(&summary, Scenario::Cached);
    assert_eq!(cached.queries, KEYS as u64);
    assert_per_key(cached, 1);
    assert_eq!(cached.cache_hits, REQUESTS * (BURSTS - 1));
    assert_eq!((cached.ran, cached.joined), (KEYS, REQUESTS - KEYS));
    // The median request is a cache hit, and the table says so beside its time.
    assert_eq!(cached.p50.unwrap().how, How::Cache);
    assert!(report.lines().any(|l| l.starts_with("coalescer::cache (TTL)") && l.contains("(cache hit)")));

    // With deadlines (10 % of 30 requests: the 3 leaders, one per key, are the impatient ones):
    // every leader gave up while its query ran, with followers waiting.
    for scenario in Scenario::TIMEOUTS {
        let row = row(&summary, scenario);
        assert_eq!(row.timed_out, flights, "{scenario:?}: {row:?}");
        assert_eq!(row.leaders_gave_up, flights as u64, "{scenario:?}: {row:?}");
        assert_eq!(row.values, requests - flights, "{scenario:?}: {row:?}");
    }
    // Work mode: each leader's query was interrupted and a follower promoted to run its own.
    let work = row(&summary, Scenario::TimeoutWork);
    assert_eq!(work.counters.unwrap().promotions, flights as u64, "{work:?}");
    assert_eq!(work.queries, 2 * flights as u64, "{work:?}");
    assert_per_key(work, 2 * BURSTS as u64);
    assert_eq!((work.ran, work.joined), (flights, requests - 2 * flights), "{work:?}");
    // Shared-work mode: the query went on for the followers; nobody was promoted.
    let shared = row(&summary, Scenario::TimeoutShared);
    assert_eq!(shared.counters.unwrap().promotions, 0, "{shared:?}");
    assert_eq!(shared.queries, flights as u64, "{shared:?}");
    assert_per_key(shared, BURSTS as u64);
    assert_eq!((shared.ran, shared.joined), (0, requests - flights), "{shared:?}");

    // The headline comes first, naive against coalesced.
    let headline = report.lines().next().unwrap();
    let expected =
        format!("coalescing: {requests} requests ran {flights} SQL queries instead of {requests}, in ");
    assert!(headline.starts_with(&expected), "{headline}");

    // The next run finds the database in place.
    let mut again = settings(&dir);
    again.impatient_percent = 0;
    again.bursts = 1;
    let summary = run(again);
    assert_eq!(summary.seeded, Seeded::Reused);
    assert_eq!(summary.rows.len(), Scenario::BASIC.len());
    assert_eq!(row(&summary, Scenario::Coalesced).queries, KEYS as u64);
}

#[test]
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut too_many_keys = settings(&dir);
    too_many_keys.keys = 9;
    assert!(stampede::run(&too_many_keys).is_err()); // refused before anything runs
    assert!(!dir.path().join("stampede.db").exists());
}
