//! Runs the demo with small settings and checks what SQLite itself counted.

use stampede::burst::{Row, Scenario};
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
        timeout: None,
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

#[test]
fn sqlite_counts_one_query_per_request_naively_and_one_per_key_per_burst_coalesced() {
    let dir = tempfile::tempdir().unwrap();
    let summary = stampede::run(&settings(&dir)).unwrap();
    let report = stampede::table::render(&summary);
    println!("{report}");
    assert_eq!(summary.seeded, Seeded::Created);
    let requests = REQUESTS * BURSTS;

    for row in &summary.rows {
        assert_eq!(row.requests, requests, "{:?}", row.scenario);
        assert_eq!(row.failed, 0, "{:?}", row.scenario);
        assert_eq!(row.wrong, 0, "{:?}", row.scenario);
        assert_eq!(row.values + row.timed_out, requests, "{:?}", row.scenario);
    }

    let naive = row(&summary, Scenario::Naive);
    assert_eq!(naive.queries, requests as u64);
    assert_per_key(naive, (requests / KEYS) as u64);

    let coalesced = row(&summary, Scenario::Coalesced);
    assert_eq!(coalesced.queries, (KEYS * BURSTS) as u64);
    assert_per_key(coalesced, BURSTS as u64);
    let counters = coalesced.counters.unwrap();
    assert_eq!(counters.leaders, (KEYS * BURSTS) as u64);
    assert_eq!(counters.followers, (requests - KEYS * BURSTS) as u64);

    // The cache answers the second burst: one query per key in all.
    let cached = row(&summary, Scenario::Cached);
    assert_eq!(cached.queries, KEYS as u64);
    assert_per_key(cached, 1);
    assert_eq!(cached.cache_hits, REQUESTS * (BURSTS - 1));

    // With deadlines: every flight ran at most one query (work mode: its leader's, then one per
    // promoted follower), and every request without a deadline got the report.
    let impatient = (REQUESTS * 10).div_ceil(100).max(KEYS) * BURSTS;
    for scenario in Scenario::TIMEOUTS {
        let row = row(&summary, scenario);
        let c = row.counters.unwrap();
        assert!(row.queries >= (KEYS * BURSTS) as u64, "{scenario:?}");
        assert!(row.queries <= c.leaders + c.promotions, "{scenario:?}");
        assert!(row.timed_out <= impatient, "{scenario:?}");
        assert!(row.values >= requests - impatient, "{scenario:?}");
    }
    assert_eq!(row(&summary, Scenario::TimeoutShared).counters.unwrap().promotions, 0);

    // The next run finds the database in place.
    let mut again = settings(&dir);
    again.impatient_percent = 0;
    again.bursts = 1;
    let summary = stampede::run(&again).unwrap();
    assert_eq!(summary.seeded, Seeded::Reused);
    assert_eq!(summary.rows.len(), Scenario::BASIC.len());
    assert_eq!(row(&summary, Scenario::Coalesced).queries, KEYS as u64);
}

#[test]
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut too_many_keys = settings(&dir);
    too_many_keys.keys = 9;
    assert!(stampede::run(&too_many_keys).is_err());
    assert!(!dir.path().join("stampede.db").exists());
}
