//! Turns a criterion run of the `coalesce` bench into markdown tables: per scenario, each
//! competitor's median and its ratio to coalescer from the same run, the extras (executions per
//! round or call), and the product's targets.
//!
//! ```text
//! bench-report <criterion dir> [<extras.tsv>]
//! ```

use coalescer_benches::{Coalesce, CoalesceBlocking, Visit, VisitBlocking, each_async, each_blocking};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Scenario groups in the order of the tables, with the unit of their figure.
/// The product's targets apply to the async S1, S2 and S3 (`true`); the others are shown for
/// reference.
const GROUPS: &[(&str, Unit, bool)] = &[
    ("S1 1 task", Unit::PerCall, true),
    ("S1 2 tasks", Unit::PerCall, true),
    ("S2 1000 tasks", Unit::FanOut, true),
    ("S3 10000 waiters", Unit::FanOut, true),
    ("S4 hot key 2 tasks", Unit::PerCall, false),
    ("S1 blocking 1 thread", Unit::PerCall, false),
    ("S1 blocking 2 threads", Unit::PerCall, false),
    ("S3 blocking 2 threads", Unit::FanOut, false),
];

const REFERENCE: &str = "coalescer work";
const REFERENCE_BLOCKING: &str = "coalescer work_blocking";
const MUTEXES: [&str; 2] = ["std Mutex+HashMap", "parking_lot Mutex+HashMap"];
const WAKE_FLOOR: &str = "floor bare Event wake";

#[derive(Clone, Copy)]
enum Unit {
    PerCall,
    FanOut,
}

struct Names(Vec<&'static str>);

impl Visit for Names {
    fn visit<C: Coalesce>(&mut self) {
        self.0.push(C::NAME);
    }
}

impl VisitBlocking for Names {
    fn visit<C: CoalesceBlocking>(&mut self) {
        self.0.push(C::NAME);
    }
}

/// Every `new/` directory under `dir` (criterion's latest estimates of one benchmark).
fn estimate_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "new") {
                out.push(path);
            } else {
                estimate_dirs(&path, out);
            }
        }
    }
}

/// The string value of `"field":"..."` in a JSON text (criterion's ids hold no quotes).
fn json_str(text: &str, field: &str) -> Option<String> {
    let start = text.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let len = text[start..].find('"')?;
    Some(text[start..start + len].to_string())
}

/// The median's point estimate, in ns.
fn median_ns(text: &str) -> Option<f64> {
    let median = &text[text.find("\"median\":")?..];
    let start = median.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let len = median[start..].find([',', '}'])?;
    median[start..start + len].parse().ok()
}

fn show(ns: f64, unit: Unit) -> String {
    let figure = if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    };
    match unit {
        Unit::PerCall => format!("{figure} ({:.2} M calls/s)", 1e3 / ns),
        Unit::FanOut => figure,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: bench-report <criterion dir> [extras.tsv]"));
    let extras_text = args.next().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();

    // group -> competitor -> median ns
    let mut medians: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut dirs = Vec::new();
    estimate_dirs(&dir, &mut dirs);
    for new in dirs {
        let (Ok(bench), Ok(est)) = (
            std::fs::read_to_string(new.join("benchmark.json")),
            std::fs::read_to_string(new.join("estimates.json")),
        ) else {
            continue;
        };
        if let (Some(group), Some(function), Some(ns)) =
            (json_str(&bench, "group_id"), json_str(&bench, "function_id"), median_ns(&est))
        {
            medians.entry(group).or_default().insert(function, ns);
        }
    }
    // (group, competitor) -> "metric value"
    let mut extras: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in extras_text.lines() {
        let fields: Vec<_> = line.split('\t').collect();
        if let [group, competitor, metric, value] = fields[..] {
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            extras
                .entry((group.to_string(), competitor.to_string()))
                .or_default()
                .push(format!("{metric}: {value:.3}"));
        }
    }

    // coalescer's rows first, then the other competitors, then the floors.
    let mut order = Names(Vec::new());
    each_async(&mut order);
    each_blocking(&mut order);
    order.0.sort_by_key(|name| !name.starts_with("coalescer"));
    order.0.push("floor scc insert+remove");
    order.0.push(WAKE_FLOOR);

    let mut out = String::new();
    let mut targets = String::new();
    for &(group, unit, has_target) in GROUPS {
        let Some(rows) = medians.get(group) else {
            continue;
        };
        let reference =
            [REFERENCE, REFERENCE_BLOCKING].into_iter().find_map(|r| rows.get(r).map(|&ns| (r, ns)));
        let _ = writeln!(out, "\n#### {group}\n");
        let what = match unit {
            Unit::PerCall => "median per call",
            Unit::FanOut => "median fan-out",
        };
        let _ = writeln!(out, "| competitor | {what} | × coalescer | notes |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        let mut names: Vec<&str> = Vec::new();
        for &name in &order.0 {
            if rows.contains_key(name) && !names.contains(&name) {
                names.push(name);
            }
        }
        names.extend(rows.keys().map(String::as_str).filter(|n| !order.0.contains(n)));
        for name in names {
            let ns = rows[name];
            let ratio = reference.map_or(String::from("—"), |(_, r)| format!("{:.2}", ns / r));
            let notes =
                extras.get(&(group.to_string(), name.to_string())).map(|v| v.join("; ")).unwrap_or_default();
            let _ = writeln!(out, "| {name} | {} | {ratio} | {notes} |", show(ns, unit));
        }
        if let (true, Some((reference, ns))) = (has_target, reference) {
            let best_mutex = MUTEXES.iter().filter_map(|m| rows.get(*m)).copied().reduce(f64::min);
            if let Some(mutex) = best_mutex {
                let goal = match unit {
                    Unit::PerCall => 0.7,
                    Unit::FanOut => 0.8,
                };
                let ratio = ns / mutex;
                let verdict = if ratio <= goal { "met" } else { "missed" };
                let _ = writeln!(
                    targets,
                    "- {group}: {reference} / best mutex design = {ratio:.2} (target ≤ {goal}): {verdict}"
                );
            }
            if let (Unit::FanOut, Some(floor)) = (unit, rows.get(WAKE_FLOOR)) {
                let ratio = ns / floor;
                let verdict = if ratio <= 1.2 { "met" } else { "missed" };
                let _ = writeln!(
                    targets,
                    "- {group}: {reference} / bare-wake floor = {ratio:.2} (target ≤ 1.2): {verdict}"
                );
            }
        }
    }
    println!("{out}");
    if !targets.is_empty() {
        println!("#### Targets (medians of this run)\n\n{targets}");
    }
}
