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
