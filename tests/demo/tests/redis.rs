//! `stampede --processes N`: real demo processes on one SQLite file and a `redis-server` the
//! demo starts itself; SQLite's own counts, added up across the processes.

use std::process::Command;
use std::time::{Duration, Instant};

/// The row of `scenario`'s table line, as its cells.
fn row<'a>(table: &'a str, scenario: &str) -> Vec<&'a str> {
    let line =
        table.lines().find(|l| l.contains(scenario)).unwrap_or_else(|| panic!("no {scenario} row:\n{table}"));
    line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect()
}

#[test]
fn processes_query_once_each_locally_and_once_in_all_with_coalescer_redis() {
    if Command::new("redis-server").arg("--version").output().is_err() {
        let message = "redis-server is not installed: the demo's --processes test is SKIPPED (ci/redis.sh)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}; CI=true requires it");
        eprintln!("\n!!!!!!!! {message} !!!!!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stampede.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["--processes", "3", "--requests", "20", "--orders", "100000", "--no-progress", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Watchdog: the demo (seeding included) ends well within a minute.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("watchdog: stampede --processes still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{table}");
    // | scenario | queries | per process | wrong | errors | time |
    let local = row(&table, "coalesced in each process only");
    let fleet = row(&table, "coalescer-redis across the processes");
    assert_eq!(&local[1..5], ["3", "1.00", "0", "0"], "{table}");
    assert_eq!(&fleet[1..5], ["1", "0.33", "0", "0"], "{table}");
}
