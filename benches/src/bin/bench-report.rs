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
    fn visit<C: Coalesce<Key = u64>>(&mut self) {
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

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A ratio over the passes: the median, and the range when there was more than one pass.
fn ratio_text(ratios: &[f64]) -> String {
    let mid = median(ratios.to_vec());
    if ratios.len() < 2 {
        return format!("{mid:.2}");
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{mid:.2} ({lo:.2}–{hi:.2})")
}

/// One pass of one scenario: competitor -> median ns.
type Pass = BTreeMap<String, f64>;

/// `num / den` in every pass that has both.
fn ratios(
    passes: &[Pass],
    num: impl Fn(&Pass) -> Option<f64>,
    den: impl Fn(&Pass) -> Option<f64>,
) -> Vec<f64> {
    passes.iter().filter_map(|p| Some(num(p)? / den(p)?)).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: bench-report <criterion dir> [extras.tsv]"));
    let extras_text = args.next().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();

    // scenario -> pass number -> competitor -> median ns. Pass `k` of a scenario is the
    // criterion group "<scenario> #k" (or just "<scenario>" for a single pass).
    let mut medians: BTreeMap<String, BTreeMap<u32, Pass>> = BTreeMap::new();
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
            let (scenario, pass) = match group.rsplit_once(" #") {
                Some((scenario, pass)) if pass.parse::<u32>().is_ok() => {
                    (scenario.to_string(), pass.parse().unwrap_or(1))
                }
                _ => (group, 1),
            };
            medians.entry(scenario).or_default().entry(pass).or_default().insert(function, ns);
        }
    }
    // (scenario, competitor) -> "metric: value"
    let mut extras: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in extras_text.lines() {
        let fields: Vec<_> = line.split('\t').collect();
        if let [group, competitor, metric, value] = fields[..] {
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let value =
                if metric.starts_with("rounds") { format!("{value:.0}") } else { format!("{value:.3}") };
            extras
                .entry((group.to_string(), competitor.to_string()))
                .or_default()
                .push(format!("{metric}: {value}"));
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
    for &(scenario, unit, has_target) in GROUPS {
        let Some(passes) = medians.get(scenario) else {
            continue;
        };
        let passes: Vec<Pass> = passes.values().cloned().collect();
        let mut names: Vec<&str> = Vec::new();
        for pass in &passes {
            for &name in &order.0 {
                if pass.contains_key(name) && !names.contains(&name) {
                    names.push(name);
                }
            }
            for name in pass.keys() {
                if !names.contains(&name.as_str()) && !order.0.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        let reference = [REFERENCE, REFERENCE_BLOCKING].into_iter().find(|r| names.contains(r));
        let what = match unit {
            Unit::PerCall => "median per call",
            Unit::FanOut => "median fan-out",
        };
        let _ = writeln!(
            out,
            "\n#### {scenario} ({} pass{})\n",
            passes.len(),
            if passes.len() == 1 { "" } else { "es" }
        );
        let _ = writeln!(out, "| competitor | {what} | × coalescer (range over passes) | notes |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for name in names {
            let ns = median(passes.iter().filter_map(|p| p.get(name).copied()).collect());
            let ratio = reference.map_or(String::from("—"), |r| {
                ratio_text(&ratios(&passes, |p| p.get(name).copied(), |p| p.get(r).copied()))
            });
            let notes = extras
                .get(&(scenario.to_string(), name.to_string()))
                .map(|v| v.join("; "))
                .unwrap_or_default();
            let _ = writeln!(out, "| {name} | {} | {ratio} | {notes} |", show(ns, unit));
        }
        let (true, Some(reference)) = (has_target, reference) else {
            continue;
        };
        let best_mutex = |p: &Pass| MUTEXES.iter().filter_map(|m| p.get(*m)).copied().reduce(f64::min);
        let to_mutex = ratios(&passes, |p| p.get(reference).copied(), best_mutex);
        if !to_mutex.is_empty() {
            let goal = match unit {
                Unit::PerCall => 0.7,
                Unit::FanOut => 0.8,
            };
            let verdict = if median(to_mutex.clone()) <= goal { "met" } else { "missed" };
            let _ = writeln!(
                targets,
                "- {scenario}: {reference} / best mutex design = {} (target ≤ {goal}): {verdict}",
                ratio_text(&to_mutex)
            );
        }
        let to_floor = ratios(&passes, |p| p.get(reference).copied(), |p| p.get(WAKE_FLOOR).copied());
        if let (Unit::FanOut, false) = (unit, to_floor.is_empty()) {
            let verdict = if median(to_floor.clone()) <= 1.2 { "met" } else { "missed" };
            let _ = writeln!(
                targets,
                "- {scenario}: {reference} / bare-wake floor = {} (target ≤ 1.2): {verdict}",
                ratio_text(&to_floor)
            );
        }
    }
    println!("{out}");
    if !targets.is_empty() {
        println!("#### Targets (median over the passes of each pass's ratio)\n\n{targets}");
    }
}
