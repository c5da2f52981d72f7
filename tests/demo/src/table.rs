//! The printed report: a header, one table row per scenario, and notes on what the numbers mean.

use crate::Summary;
use crate::burst::{Row, Scenario};
use crate::db::Seeded;
use std::fmt::Write as _;
use std::time::Duration;

const HEADERS: [&str; 9] =
    ["scenario", "requests", "answered", "timed out", "SQL queries", "wall", "p50", "p99", "shared"];

/// Renders the whole report as text.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    header(&mut out, summary);
    out.push('\n');
    let cells: Vec<[String; 9]> = summary.rows.iter().map(cells).collect();
    grid(&mut out, &cells);
    out.push('\n');
    notes(&mut out, summary);
    out
}

fn header(out: &mut String, summary: &Summary) {
    let s = &summary.settings;
    let _ = writeln!(
        out,
        "{} concurrent requests x {} burst{} over {} key{}, on {}",
        s.requests,
        s.bursts,
        plural(s.bursts),
        s.keys,
        plural(s.keys),
        s.db_path.display()
    );
    let opened = match summary.seeded {
        Seeded::Created => "seeded in",
        Seeded::Reused => "reused, opened in",
    };
    let _ = writeln!(
        out,
        "database: {} orders, {} categories; {opened} {}",
        s.shape.orders,
        s.shape.categories,
        duration(summary.open_time)
    );
    let _ = writeln!(out, "one report query alone: {} (it scans every order)", duration(summary.query_time));
}

fn cells(row: &Row) -> [String; 9] {
    let shared = row.counters.map_or_else(|| "-".to_owned(), |c| format!("{:.1}%", 100.0 * c.shared_ratio()));
    [
        row.scenario.label().to_owned(),
        row.requests.to_string(),
        row.values.to_string(),
        row.timed_out.to_string(),
        row.queries.to_string(),
        duration(row.wall),
        row.p50.map_or_else(|| "-".to_owned(), duration),
        row.p99.map_or_else(|| "-".to_owned(), duration),
        shared,
    ]
}

/// A plain-text grid: the first column left-aligned, the others right-aligned.
fn grid(out: &mut String, rows: &[[String; 9]]) {
    let mut widths = HEADERS.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |out: &mut String, cells: [&str; 9]| {
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let _ = match i {
                0 => write!(out, "{cell:<width$}"),
                _ => write!(out, "  {cell:>width$}"),
            };
        }
        out.push('\n');
    };
    line(out, HEADERS);
    for row in rows {
        line(out, row.each_ref().map(String::as_str));
    }
}

fn notes(out: &mut String, summary: &Summary) {
    out.push_str(
        "SQL queries: report statements SQLite started, counted by its trace hook (sqlite3_trace_v2).\n\
         shared: followers / (leaders + followers), from the group's counters().\n",
    );
    for row in &summary.rows {
        let per_key = per_key(row);
        match row.scenario {
            Scenario::Naive => {}
            Scenario::Coalesced => {
                let _ = writeln!(out, "coalesced: SQL queries per key {per_key}.");
            }
            Scenario::Cached => {
                let _ = writeln!(
                    out,
                    "coalescer::cache: {} of {} answers came from the cache; SQL queries per key {per_key}.",
                    row.cache_hits, row.values
                );
            }
            Scenario::TimeoutWork | Scenario::TimeoutShared => timeout_note(out, summary, row),
        }
    }
    let wrong: usize = summary.rows.iter().map(|r| r.wrong).sum();
    let failed: usize = summary.rows.iter().map(|r| r.failed).sum();
    if wrong == 0 && failed == 0 {
        out.push_str("Every request that did not time out got the report, equal to a reference run's.\n");
    } else {
        let _ = writeln!(
            out,
            "WARNING: {failed} requests failed and {wrong} got a report unlike the reference run's."
        );
    }
}

fn timeout_note(out: &mut String, summary: &Summary, row: &Row) {
    let promotions = row.counters.map_or(0, |c| c.promotions);
    let _ = writeln!(
        out,
        "{}: {} request{} gave up after {}, {} of them leading a flight.",
        row.scenario.label(),
        row.timed_out,
        plural(row.timed_out),
        duration(summary.timeout),
        row.leaders_gave_up,
    );
    let per_key = per_key(row);
    let _ = if row.leaders_gave_up == 0 {
        writeln!(
            out,
            "  No leader gave up this time: the query beat the deadline (see --timeout-ms).\n  \
             SQL queries per key {per_key}."
        )
    } else if row.scenario == Scenario::TimeoutWork {
        writeln!(
            out,
            "  {promotions} promotion{}: each time a leader left, its query was interrupted\n  \
             and a waiting request ran its own. SQL queries per key {per_key}.",
            plural(promotions as usize)
        )
    } else {
        writeln!(out, "  The query went on for the requests still waiting. SQL queries per key {per_key}.")
    };
}

/// `{0: 2, 1: 2}`-style counts of queries per key.
fn per_key(row: &Row) -> String {
    let parts: Vec<String> = row.queries_per_key.iter().map(|(key, n)| format!("{key}: {n}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Microseconds below a millisecond, milliseconds below a second, seconds above.
fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{} us", d.as_micros())
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}
