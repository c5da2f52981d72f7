//! `stampede`: the demo's command line. Everything else is in the library (`src/lib.rs`).

use clap::Parser;
use stampede::args::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    if stampede::redis::is_child() {
        return stampede::redis::child_main(); // a process started by --processes
    }
    // clap prints `--help` or a usage error itself, and exits with 0 or 2.
    match Cli::parse().into_command() {
        Command::Run(settings) => run(&settings),
        Command::Http(settings) => http(&settings),
        Command::Processes { settings, processes, redis } => {
            exit(stampede::redis::run(&settings, processes, redis).map(|table| print!("{table}")))
        }
        Command::Completions(shell) => {
            stampede::args::completions(shell, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// The burst scenarios' table, then the batches', then the expiry edge's, then `--metrics`.
fn run(settings: &stampede::Settings) -> ExitCode {
    let summary = match stampede::run(settings) {
        Ok(summary) => summary,
        Err(e) => return exit(Err(e)),
    };
    print!("{}", stampede::table::render(&summary));
    match stampede::batch::run(settings) {
        Ok(table) => print!("{table}"),
        Err(e) => return exit(Err(e)),
    }
    let load = stampede::edge::Load { rate: 1300, duration: std::time::Duration::from_secs(2) };
    match stampede::edge::run(settings, load) {
        Ok(tables) => print!("{tables}"),
        Err(e) => return exit(Err(e)),
    }
    if let Some(metrics) = stampede::observe::metrics_text() {
        println!("\n--metrics (Prometheus text format):\n{metrics}");
    }
    ExitCode::SUCCESS
}

/// `--http`: the report over HTTP, loaded with `wrk`, with and without `coalescer-tower`.
fn http(settings: &stampede::Settings) -> ExitCode {
    exit(stampede::http::run(settings).map(|table| print!("{table}")))
}

fn exit(result: Result<(), stampede::BoxError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stampede: {e}");
            ExitCode::FAILURE
        }
    }
}
