//! The printed report: the headline (queries and wall time, naive against coalesced), the
//! setting, one table row per scenario, and notes on what each column counts.

use crate::Summary;
use crate::burst::{How, Latency, Row, Scenario};
use crate::db::Seeded;
use std::fmt::Write as _;
use std::time::Duration;

const COLUMNS: usize = 9;

const HEADERS: [&str; COLUMNS] = [
    "scenario",
    "SQL queries",
    "wall",
    "ran the query",
    "joined a flight",
    "from the cache",
    "gave up",
    "p50",
    "p99",
];

/// Renders the whole report as text: the headline first, then the setting, the table and
/// what its columns count.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    headline(&mut out, summary);
    out.push('\n');
    header(&mut out, summary);
    out.push('\n');
    let cells: Vec<[String; COLUMNS]> = summary.rows.iter().map(cells).collect();
    grid(&mut out, &cells);
    out.push('\n');
    notes(&mut out, summary);
    out
}

fn row(summary: &Summary, scenario: Scenario) -> Option<&Row> {
    summary.rows.iter().find(|row| row.scenario == scenario)
}

/// What a newcomer reads first: queries and wall time, naive against coalesced (and cached).
fn headline(out: &mut String, summary: &Summary) {
    if let (Some(naive), Some(coalesced)) = (row(summary, Scenario::Naive), row(summary, Scenario::Coalesced))
    {
        let _ = writeln!(
            out,
            "coalescing: {} requests ran {} instead of {}, in {} instead of {}.",
            coalesced.requests,
            queries(coalesced.queries),
            naive.queries,
            duration(coalesced.wall),
            duration(naive.wall),
        );
    }
    if let Some(cached) = row(summary, Scenario::Cached) {
        let _ = writeln!(
            out,
            "with coalescer::cache in front: {} in all, and {} of the {} requests answered from the \
             cache without waiting.",
            queries(cached.queries),
            cached.cache_hits,
            cached.requests,
        );
    }
}

fn header(out: &mut String, summary: &Summary) {
    let s = &summary.settings;
    let _ = writeln!(
        out,
        "{} concurrent requests x {} burst{} over {} key{} ({} requests per row), on {}",
        s.requests,
        s.bursts,
        plural(s.bursts),
        s.keys,
        plural(s.keys),
        s.requests * s.bursts,
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

fn cells(row: &Row) -> [String; COLUMNS] {
    [
        row.scenario.label().to_owned(),
        row.queries.to_string(),
        duration(row.wall),
        row.ran.to_string(),
        row.joined.to_string(),
        row.cache_hits.to_string(),
        row.timed_out.to_string(),
        row.p50.map_or_else(|| "-".to_owned(), latency),
        row.p99.map_or_else(|| "-".to_owned(), latency),
    ]
}

/// A percentile's time, with the reason beside it when the cache answered at once.
fn latency(l: Latency) -> String {
    match l.how {
        How::Cache => format!("{} (cache hit)", duration(l.time)),
        How::Ran | How::Joined => duration(l.time),
    }
}

/// A plain-text grid: the first column left-aligned, the others right-aligned.
fn grid(out: &mut String, rows: &[[String; COLUMNS]]) {
    let mut widths = HEADERS.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |out: &mut String, cells: [&str; COLUMNS]| {
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
    let per_row = summary.settings.requests * summary.settings.bursts;
    let _ = writeln!(
        out,
        "Each request is counted once: ran the query + joined a flight + from the cache + gave up = {per_row}.\n  \
         ran the query: it ran the report itself (every naive request; a flight's leader; a follower\n  \
         promoted to run its own when its leader gave up). joined a flight: it waited for another\n  \
         request's query and got its report. from the cache: answered at once, no query waited for.\n\
         SQL queries: report statements SQLite started, counted by its trace hook (sqlite3_trace_v2),\n  \
         interrupted ones included.\n\
         wall: from each burst's release to its last answer, added up over the bursts.\n\
         p50, p99: over the requests that got the report, each timed from its burst's release (the same\n  \
         starting point in every row); \"(cache hit)\" marks a request the cache answered at once."
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
                    "coalescer::cache: {} of {} requests found the report cached; the {} others reached the\n  \
                     group behind the cache, where {} ran the query and {} joined it. SQL queries per key {per_key}.",
                    row.cache_hits,
                    row.requests,
                    row.ran + row.joined,
                    row.ran,
                    row.joined,
                );
            }
            Scenario::TimeoutWork | Scenario::TimeoutShared => timeout_note(out, summary, row),
        }
    }
    let wrong: usize = summary.rows.iter().map(|r| r.wrong).sum();
    let failed: usize = summary.rows.iter().map(|r| r.failed).sum();
    if wrong == 0 && failed == 0 {
        out.push_str("Every request that did not give up got the report, equal to a reference run's.\n");
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
        "{}: {} request{} gave up {} after the release (and once every\n  \
         request had joined its flight), {} of them while running their flight's query in SQLite\n  \
         ({}).",
        row.scenario.label(),
        row.timed_out,
        plural(row.timed_out),
        duration(summary.timeout),
        row.leaders_gave_up,
        match row.scenario {
            Scenario::TimeoutWork => "every leader, and any impatient follower promoted in a leader's place",
            _ => "every leader",
        },
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
            "  {promotions} promotion{}: each time the request running the query left, the query was\n  \
             interrupted and a waiting request was promoted to run its own. SQL queries per key {per_key}.",
            plural(promotions as usize)
        )
    } else {
        writeln!(
            out,
            "  {promotions} promotions: the query went on for the requests still waiting.\n  \
             SQL queries per key {per_key}."
        )
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

/// `N SQL query` / `N SQL queries`.
fn queries(n: u64) -> String {
    format!("{n} SQL quer{}", if n == 1 { "y" } else { "ies" })
}

/// Microseconds (with a decimal below ten) below a millisecond, milliseconds below a second,
/// seconds above.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 0.01 {
        format!("{:.1} us", ms * 1000.0)
    } else if ms < 1.0 {
        format!("{} us", d.as_micros())
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}
