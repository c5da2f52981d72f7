//! Turns a criterion run of the `coalesce` bench into markdown tables: the passes and their
//! load; per scenario, each competitor's median over the passes, the ratio of that median to
//! coalescer's with the range of the per-pass ratios, CPU / wall and placement of the 2-task
//! figures, the extras (executions per round or call, rounds rerun); and the issue's timed
//! goals, with a verdict only where every pass is on the same side of the goal.
//!
//! One statistic throughout: the median over the passes of each pass's criterion median, and
//! ratios of those medians. When some passes were taken on a quiet machine (see `coalesce.rs`),
//! only those are used.
//!
//! ```text
//! bench-report <criterion dir> [<extras.tsv> [<go.tsv>]]
//! ```
//!
//! `go.tsv` (written by `ci/bench.sh` from `benches/go`): benchmark, median ns/op, lowest,
//! highest, median cpu/wall, load average; its figures are put beside coalescer's.

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
    ("S1 1 task, String keys", Unit::PerCall, false),
    ("S1 2 tasks, String keys", Unit::PerCall, false),
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

/// The smallest and the largest of `values`.
fn range(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// `lo–hi`, or just the value for one pass.
fn range_text(values: &[f64]) -> String {
    let (lo, hi) = range(values);
    match values.len() {
        0 => String::from("—"),
        1 => format!("{lo:.2}"),
        _ => format!("{lo:.2}–{hi:.2}"),
    }
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

/// The median over `passes` of what `figure` gives in each.
fn median_of(passes: &[Pass], figure: impl Fn(&Pass) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = passes.iter().filter_map(figure).collect();
    (!values.is_empty()).then(|| median(values))
}

/// A verdict on `ratio ≤ goal` from the per-pass ratios: met only if every pass meets it,
/// missed only if none does.
fn verdict(per_pass: &[f64], goal: f64) -> &'static str {
    let (lo, hi) = range(per_pass);
    if hi <= goal {
        "met"
    } else if lo > goal {
        "**missed**"
    } else {
        "not settled (the passes straddle the goal)"
    }
}

/// The extras file: (scenario, competitor, metric) -> pass -> value.
type Extras = BTreeMap<(String, String, String), BTreeMap<u32, f64>>;

fn read_extras(text: &str) -> Extras {
    let mut extras = Extras::new();
    for line in text.lines() {
        let fields: Vec<_> = line.split('\t').collect();
        if let [scenario, pass, competitor, metric, value] = fields[..] {
            let (Ok(pass), Ok(value)) = (pass.parse::<u32>(), value.parse::<f64>()) else {
                continue;
            };
            extras
                .entry((scenario.to_string(), competitor.to_string(), metric.to_string()))
                .or_default()
                .insert(pass, value);
        }
    }
    extras
}

/// One Go benchmark's figures.
struct Go {
    name: String,
    median: f64,
    low: f64,
    high: f64,
    cpu_wall: f64,
    load: f64,
}

fn read_go(text: &str) -> Vec<Go> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
            (f.len() >= 6).then(|| Go {
                name: f[0].to_string(),
                median: num(1),
                low: num(2),
                high: num(3),
                cpu_wall: num(4),
                load: num(5),
            })
        })
        .collect()
}

/// A CPU / wall ratio this low in a 2-task figure means its tasks did not run in parallel.
const PARALLEL: f64 = 1.5;

/// Scenarios whose figure comes from two tasks or threads.
fn two_tasks(scenario: &str) -> bool {
    scenario.contains("2 tasks") || scenario.contains("2 threads")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: bench-report <criterion dir> [extras.tsv]"));
    let extras = read_extras(&args.next().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default());
    let go = read_go(&args.next().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default());
    let extra = |scenario: &str, competitor: &str, metric: &str| {
        extras.get(&(scenario.to_string(), competitor.to_string(), metric.to_string()))
    };

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

    // The passes: which were quiet. Figures use the quiet passes when there is one.
    let mut out = String::new();
    let quiet: BTreeMap<u32, f64> = extra("pass", "-", "quiet").cloned().unwrap_or_default();
    let loads = extra("pass", "-", "load").cloned().unwrap_or_default();
    let waited = extra("pass", "-", "waited s").cloned().unwrap_or_default();
    let quiet_passes: Vec<u32> = quiet.iter().filter(|(_, q)| **q > 0.5).map(|(p, _)| *p).collect();
    let used = |pass: u32| quiet_passes.is_empty() || quiet_passes.contains(&pass);
    if !quiet.is_empty() {
        let _ = writeln!(out, "#### Passes\n\n| pass | load average at its start | waited | machine |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for (pass, q) in &quiet {
            let _ = writeln!(
                out,
                "| {pass} | {:.2} | {:.0} s | {} |",
                loads.get(pass).copied().unwrap_or(f64::NAN),
                waited.get(pass).copied().unwrap_or(f64::NAN),
                if *q > 0.5 { "quiet" } else { "**loaded**" }
            );
        }
        let _ = writeln!(
            out,
            "\n{}",
            if quiet_passes.is_empty() {
                "No pass was quiet: every figure below was taken on a loaded machine.".to_string()
            } else if quiet_passes.len() == quiet.len() {
                "Every pass was quiet.".to_string()
            } else {
                format!("Figures below are from the quiet passes only ({quiet_passes:?}).")
            }
        );
    }

    // coalescer's rows first, then the other competitors, then the floors.
    let mut order = Names(Vec::new());
    each_async(&mut order);
    each_blocking(&mut order);
    order.0.sort_by_key(|name| !name.starts_with("coalescer"));
    order.0.push("floor scc insert+remove");
    order.0.push(WAKE_FLOOR);

    let mut targets = String::new();
    for &(scenario, unit, has_target) in GROUPS {
        let Some(all_passes) = medians.get(scenario) else {
            continue;
        };
        let pass_numbers: Vec<u32> = all_passes.keys().copied().filter(|p| used(*p)).collect();
        let passes: Vec<Pass> = pass_numbers.iter().map(|p| all_passes[p].clone()).collect();
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
        let load_text = extra(scenario, "-", "load")
            .map(|l| {
                pass_numbers.iter().filter_map(|p| l.get(p)).map(|v| format!("{v:.2}")).collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .join(", ");
        let _ = writeln!(
            out,
            "\n#### {scenario} ({} pass{}{})\n",
            passes.len(),
            if passes.len() == 1 { "" } else { "es" },
            if load_text.is_empty() {
                String::new()
            } else {
                format!("; load average at the start: {load_text}")
            }
        );
        let cpu_col = names.iter().any(|n| extra(scenario, n, "cpu/wall").is_some());
        let _ = writeln!(
            out,
            "| competitor | {what} | × coalescer | range over passes |{} notes |",
            if cpu_col { " CPU / wall (range) |" } else { "" }
        );
        let _ = writeln!(out, "|---|---:|---:|---:|{}---|", if cpu_col { "---:|" } else { "" });
        // Per competitor: the median over the passes, the ratio of the medians to the
        // reference's, and the range of the per-pass ratios.
        for name in names {
            let Some(ns) = median_of(&passes, |p| p.get(name).copied()) else {
                continue;
            };
            let (ratio, spread) =
                match reference.and_then(|r| Some((r, median_of(&passes, |p| p.get(r).copied())?))) {
                    Some((r, reference_ns)) => (
                        format!("{:.2}", ns / reference_ns),
                        range_text(&ratios(&passes, |p| p.get(name).copied(), |p| p.get(r).copied())),
                    ),
                    None => (String::from("—"), String::from("—")),
                };
            let per_pass = |metric: &str| -> Vec<f64> {
                extra(scenario, name, metric)
                    .map(|v| pass_numbers.iter().filter_map(|p| v.get(p).copied()).collect())
                    .unwrap_or_default()
            };
            let mut notes = Vec::new();
            let cpu = per_pass("cpu/wall");
            let cpu_text = if cpu.is_empty() {
                String::from("—")
            } else {
                let mid = median(cpu.clone());
                let same = per_pass("same worker");
                if two_tasks(scenario) && range(&cpu).0 < PARALLEL {
                    let slow = cpu.iter().filter(|c| **c < PARALLEL).count();
                    let why = if !same.is_empty() && median(same.clone()) >= 0.5 {
                        "the tasks took turns on one worker"
                    } else {
                        "the machine gave them less than 1.5 cores, or they waited for each other"
                    };
                    notes.push(format!(
                        "⚠ not parallel in {slow} of {} passes (CPU / wall < {PARALLEL}): {why}",
                        cpu.len()
                    ));
                }
                format!("{mid:.2} ({})", range_text(&cpu))
            };
            let same = per_pass("same worker");
            if !same.is_empty() && two_tasks(scenario) {
                notes.push(format!("both tasks on one worker: {:.0} % of samples", 100.0 * median(same)));
            }
            for metric in ["executions per round", "executions per call"] {
                let v = per_pass(metric);
                if !v.is_empty() {
                    notes.push(format!("{metric}: {:.3}", v.iter().sum::<f64>() / v.len() as f64));
                }
            }
            let reruns = per_pass("rounds rerun");
            if !reruns.is_empty() {
                notes.push(format!("rounds rerun: {:.0}", reruns.iter().sum::<f64>()));
            }
            let settle = per_pass("settle µs");
            if settle.iter().any(|s| *s > 0.0) {
                notes.push(format!(
                    "⚠ its work had to wait {:.0} µs longer (bad rounds escalated)",
                    range(&settle).1
                ));
            }
            let cpu_cell = if cpu_col { format!(" {cpu_text} |") } else { String::new() };
            let _ = writeln!(
                out,
                "| {name} | {} | {ratio} | {spread} |{cpu_cell} {} |",
                show(ns, unit),
                notes.join("; ")
            );
        }
        let (true, Some(reference)) = (has_target, reference) else {
            continue;
        };
        let best_mutex = |p: &Pass| MUTEXES.iter().filter_map(|m| p.get(*m)).copied().reduce(f64::min);
        let target = |targets: &mut String, what: &str, den: &dyn Fn(&Pass) -> Option<f64>, goal: f64| {
            let per_pass = ratios(&passes, |p| p.get(reference).copied(), den);
            let (Some(num), Some(den)) =
                (median_of(&passes, |p| p.get(reference).copied()), median_of(&passes, den))
            else {
                return;
            };
            let _ = writeln!(
                targets,
                "| {scenario}: {reference} / {what} | {:.2} ({}) | ≤ {goal} | {} |",
                num / den,
                range_text(&per_pass),
                verdict(&per_pass, goal)
            );
        };
        match unit {
            Unit::PerCall if scenario == "S1 2 tasks" => {
                target(&mut targets, "best mutex design", &best_mutex, 0.5);
                if let Some(go) = go.iter().find(|g| g.name == "S1DistinctKeys2") {
                    let ns = go.median;
                    target(&mut targets, "Go singleflight (2 goroutines)", &|_: &Pass| Some(ns), 0.7);
                }
            }
            Unit::PerCall => {}
            Unit::FanOut => {
                target(&mut targets, "bare-wake floor", &|p: &Pass| p.get(WAKE_FLOOR).copied(), 1.1);
            }
        }
    }
    if !go.is_empty() {
        let _ = writeln!(
            out,
            "\n#### Go `golang.org/x/sync/singleflight` (`benches/go`, GOMAXPROCS=2, same machine, load average {:.2} at its start)\n",
            go[0].load
        );
        let _ = writeln!(
            out,
            "| benchmark | ns/op, median (range over runs) | CPU / wall | coalescer work, same scenario |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for g in &go {
            let beside = [
                ("S1DistinctKeys1", "S1 1 task"),
                ("S1DistinctKeys2", "S1 2 tasks"),
                ("S4HotKey2", "S4 hot key 2 tasks"),
            ]
            .iter()
            .find(|(n, _)| *n == g.name)
            .and_then(|(_, scenario)| {
                let passes: Vec<Pass> = medians
                    .get(*scenario)?
                    .iter()
                    .filter(|(p, _)| used(**p))
                    .map(|(_, p)| p.clone())
                    .collect();
                median_of(&passes, |p| p.get(REFERENCE).copied())
            })
            .map_or(String::from("—"), |ns| format!("{ns:.0} ns ({:.2}× Go)", ns / g.median));
            let _ = writeln!(
                out,
                "| {} | {:.0} ns ({:.0}–{:.0}) | {:.2} | {beside} |",
                g.name, g.median, g.low, g.high, g.cpu_wall
            );
        }
    }
    println!("{out}");
    if !targets.is_empty() {
        println!(
            "#### Timed goals of issue 18\n\nThe ratio of the medians over the passes, the range of the per-pass \
             ratios, and a verdict only where every pass is on the same side of the goal (the \
             instruction-count goals follow, from callgrind).\n\n| goal | ratio (per-pass range) | target | verdict |\n|---|---:|---|---|\n{targets}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(pairs: &[(&str, f64)]) -> Pass {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn a_verdict_needs_every_pass_on_the_same_side_of_the_goal() {
        assert_eq!(verdict(&[0.4, 0.45, 0.5], 0.5), "met");
        assert_eq!(verdict(&[0.6, 0.7], 0.5), "**missed**");
        assert!(verdict(&[0.4, 0.6], 0.5).starts_with("not settled"));
    }

    #[test]
    fn the_ratio_is_of_the_medians_and_the_range_is_of_the_per_pass_ratios() {
        // The S3 case of issue 18: per-pass ratios whose median disagrees with the medians.
        let passes = [
            pass(&[("a", 8.0), ("b", 14.0)]),
            pass(&[("a", 10.0), ("b", 10.0)]),
            pass(&[("a", 6.0), ("b", 13.0)]),
        ];
        let a = median_of(&passes, |p| p.get("a").copied()).unwrap_or(f64::NAN);
        let b = median_of(&passes, |p| p.get("b").copied()).unwrap_or(f64::NAN);
        assert_eq!((a, b), (8.0, 13.0));
        let per_pass = ratios(&passes, |p| p.get("b").copied(), |p| p.get("a").copied());
        assert_eq!(range_text(&per_pass), "1.00–2.17");
        assert_eq!(median(vec![3.0, 1.0, 2.0, 4.0]), 2.5);
    }

    #[test]
    fn extras_are_read_per_pass_and_go_lines_in_full() {
        let extras = read_extras("S4 hot key 2 tasks\t2\tcoalescer work\tcpu/wall\t1.9000\nbad line\n");
        let key = ("S4 hot key 2 tasks".to_string(), "coalescer work".to_string(), "cpu/wall".to_string());
        assert_eq!(extras[&key].get(&2), Some(&1.9));
        let go = read_go("S1DistinctKeys2\t141.8\t133.3\t176.7\t0.9385\t10.08\nshort\t1\n");
        assert_eq!(go.len(), 1);
        assert_eq!((go[0].name.as_str(), go[0].median, go[0].load), ("S1DistinctKeys2", 141.8, 10.08));
    }
}
