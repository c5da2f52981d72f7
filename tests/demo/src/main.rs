//! `stampede`: the demo's command line. Everything else is in the library (`src/lib.rs`).

use stampede::args::{Command, USAGE, parse};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = stampede::redis::hook(&args) {
        return code; // --processes N [--redis URL], in src/redis.rs
    }
    let settings = match parse(args) {
        Ok(Command::Run(settings)) => settings,
        Ok(Command::Http(settings)) => return http(&settings),
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("stampede: {message}");
            return ExitCode::from(2);
        }
    };
    match stampede::run(&settings) {
        Ok(summary) => {
            print!("{}", stampede::table::render(&summary));
            let load = stampede::edge::Load { rate: 1300, duration: std::time::Duration::from_secs(2) };
            match stampede::edge::run(&settings, load) {
                Ok(tables) => print!("{tables}"),
                Err(e) => {
                    eprintln!("stampede: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if let Some(metrics) = stampede::observe::metrics_text() {
                println!("\n--metrics (Prometheus text format):\n{metrics}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stampede: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--http`: the report over HTTP, loaded with `wrk`, with and without `coalescer-tower`.
fn http(settings: &stampede::Settings) -> ExitCode {
    match stampede::http::run(settings) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stampede --http: {e}");
            ExitCode::FAILURE
        }
    }
}
