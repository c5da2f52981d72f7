//! The command line: a handful of `--name value` flags over [`Settings`](crate::Settings).

use crate::Settings;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The `--help` text.
pub const USAGE: &str = "\
A cache stampede on a real SQLite database, and what coalescer does about it.

Usage: cargo run --release -p stampede -- [FLAGS]

Flags:
  --requests N      concurrent requests in each burst               [default: 200]
  --keys N          distinct report keys the requests spread over   [default: 1]
  --bursts N        bursts per scenario, one after the other        [default: 2]
  --orders N        rows in the orders table (re-seeds on change)   [default: 250000]
  --db PATH         the database file, reused across runs  [default: stampede.db beside the binary]
  --ttl-ms N        how long a cached report stays fresh            [default: 10000]
  --impatient PCT   percent of requests that give up at the deadline in the
                    leader-timeout scenarios; 0 skips them          [default: 10]
  --timeout-ms N    their deadline                 [default: a third of one report query]
  --no-progress     no progress bar while seeding
  --trace           print the flight spans (tracing) of one burst of the coalesced scenario
  --metrics         print the run's metrics (the `metrics` crate) in Prometheus's text format
  --http            serve the report over HTTP on loopback (axum) and load it with wrk
                    (--requests connections, 3 s, key 0), without and with coalescer-tower
  --processes N     across processes: N demo processes on one report key, coalesced
                    locally only, then with coalescer-redis (src/redis.rs)
  --redis URL       the Redis for --processes [default: a local redis-server it starts]
  -h, --help        this text
";

/// What the command line asks for.
#[derive(Clone, Debug)]
pub enum Command {
    /// Run the demo.
    Run(Settings),
    /// Serve the report over HTTP and load it with `wrk` ([`crate::http`]).
    Http(Settings),
    /// Print [`USAGE`].
    Help,
}

/// Parses the arguments that follow the program name.
///
/// # Errors
///
/// An unknown flag, a flag without its value, or a value that does not parse.
///
/// # Examples
///
/// ```
/// use stampede::args::{parse, Command};
/// let Command::Run(settings) = parse(["--requests", "50", "--keys", "2"].map(String::from)).unwrap()
/// else { panic!() };
/// assert_eq!((settings.requests, settings.keys), (50, 2));
/// assert!(parse(["--nope".to_string()]).is_err());
/// assert!(matches!(parse(["--http".to_string()]), Ok(Command::Http(_))));
/// ```
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut settings = Settings::default();
    let mut args = args.into_iter();
    let mut http = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--no-progress" => settings.progress = false,
            "--trace" => settings.trace = true,
            "--metrics" => settings.metrics = true,
            "--http" => http = true,
            "--requests" => settings.requests = number(&flag, &value()?)?,
            "--keys" => settings.keys = number(&flag, &value()?)?,
            "--bursts" => settings.bursts = number(&flag, &value()?)?,
            "--orders" => settings.shape.orders = number(&flag, &value()?)?,
            "--db" => settings.db_path = PathBuf::from(value()?),
            "--ttl-ms" => settings.ttl = Duration::from_millis(number(&flag, &value()?)?),
            "--impatient" => settings.impatient_percent = number(&flag, &value()?)?,
            "--timeout-ms" => {
                settings.timeout = Some(Duration::from_millis(number(&flag, &value()?)?));
            }
            _ => return Err(format!("unknown flag {flag} (try --help)")),
        }
    }
    if settings.impatient_percent > 100 {
        return Err("--impatient is a percentage: at most 100".to_owned());
    }
    Ok(if http { Command::Http(settings) } else { Command::Run(settings) })
}

fn number<T: FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{flag} wants a number, not {value:?}"))
}
