//! `stampede`: the demo's command line. Everything else is in the library (`src/lib.rs`).

use stampede::args::{Command, USAGE, parse};
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match parse(std::env::args().skip(1)) {
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
