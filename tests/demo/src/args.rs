//! The command line, parsed by [clap](https://docs.rs/clap) (derive): `--help`, `--version`, and
//! the errors and exit codes of every clap program (a usage error prints what was wrong and the
//! usage on stderr and exits with 2; `--help` prints to stdout and exits with 0).

use crate::Settings;
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use clap_complete::Shell;
use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A cache stampede on a real SQLite database, and what coalescer does about it.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "stampede",
    version,
    after_help = "It fires bursts of concurrent requests for the same revenue report and answers them \
                  naively, coalesced, behind coalescer::cache, and with leaders giving up at a \
                  deadline; SQLite's own trace hook counts the queries.\n\
                  From the repository: cargo run --release -p stampede -- [OPTIONS]"
)]
pub struct Cli {
    /// Concurrent requests in each burst
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = at_least_one::<usize>)]
    pub requests: usize,
    /// Distinct report keys (product categories) the requests spread over
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=50))]
    pub keys: usize,
    /// Bursts per scenario, one after the other
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one::<usize>)]
    pub bursts: usize,
    /// Rows in the orders table (the database is re-seeded when this changes)
    #[arg(long, value_name = "N", default_value_t = 250_000, value_parser = at_least_one::<i64>)]
    pub orders: i64,
    /// The database file, reused across runs [default: stampede.db beside the binary]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// How long a cached report stays fresh, in milliseconds
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub ttl_ms: u64,
    /// Percent of the requests that give up at the deadline in the leader-timeout scenarios
    /// (every key's first request among them); 0 skips those scenarios
    #[arg(long, value_name = "PCT", default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(0..=100))]
    pub impatient: usize,
    /// Their deadline in milliseconds, from the burst's release (never before every request
    /// of the burst has joined its flight) [default: a third of one report query]
    #[arg(long, value_name = "N")]
    pub timeout_ms: Option<u64>,
    /// No progress bar while seeding
    #[arg(long)]
    pub no_progress: bool,
    /// Print the flight spans (tracing) of one burst of the coalesced scenario
    #[arg(long)]
    pub trace: bool,
    /// Print the run's metrics (the `metrics` crate) in Prometheus's text format
    #[arg(long)]
    pub metrics: bool,
    /// Serve the report over HTTP on loopback (axum) and load it with wrk (--requests
    /// connections, 3 s, key 0), without and with coalescer-tower
    #[arg(long)]
    pub http: bool,
    /// Across processes: N demo processes on one report key, coalesced locally only, then with
    /// coalescer-redis [default with --redis: 4]
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>, conflicts_with = "http")]
    pub processes: Option<usize>,
    /// The Redis for --processes [default: a local redis-server the demo starts]
    #[arg(long, value_name = "URL", conflicts_with = "http")]
    pub redis: Option<String>,
    /// Print a completion script for SHELL and exit (e.g. `stampede --completions bash >
    /// ~/.local/share/bash-completion/completions/stampede`)
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<Shell>,
}

/// What the command line asks for.
#[derive(Clone, Debug)]
pub enum Command {
    /// Run the demo.
    Run(Settings),
    /// Serve the report over HTTP and load it with `wrk` ([`crate::http`]).
    Http(Settings),
    /// `--processes N [--redis URL]`: the stampede across processes ([`crate::redis`]).
    Processes {
        /// The settings (`--requests`, `--orders`, `--db` are the ones it uses).
        settings: Settings,
        /// Demo processes to start.
        processes: usize,
        /// The Redis to use; `None` starts a local `redis-server`.
        redis: Option<String>,
    },
    /// `--completions SHELL`: print the completion script (see [`completions`]).
    Completions(Shell),
}

/// A run without `--processes` but with `--redis URL` starts this many processes.
pub const DEFAULT_PROCESSES: usize = 4;

impl Cli {
    /// What these arguments ask for.
    pub fn into_command(self) -> Command {
        if let Some(shell) = self.completions {
            return Command::Completions(shell);
        }
        let settings = Settings {
            db_path: self.db.unwrap_or_else(crate::default_db_path),
            shape: crate::db::Shape { orders: self.orders, ..Default::default() },
            requests: self.requests,
            keys: self.keys,
            bursts: self.bursts,
            ttl: Duration::from_millis(self.ttl_ms),
            impatient_percent: self.impatient,
            timeout: self.timeout_ms.map(Duration::from_millis),
            progress: !self.no_progress,
            trace: self.trace,
            metrics: self.metrics,
        };
        if self.processes.is_some() || self.redis.is_some() {
            let processes = self.processes.unwrap_or(DEFAULT_PROCESSES);
            Command::Processes { settings, processes, redis: self.redis }
        } else if self.http {
            Command::Http(settings)
        } else {
            Command::Run(settings)
        }
    }
}

/// Parses a whole command line, the program's name first (as [`std::env::args_os`] gives it).
///
/// # Errors
///
/// clap's [`Error`](clap::Error): an unknown flag, a flag without its value, a value that does
/// not parse or is out of range, flags that conflict; also `--help` and `--version`, whose
/// "error" is the text to print ([`clap::Error::exit`] prints it and exits with its code).
///
/// # Examples
///
/// ```
/// use stampede::args::{Command, parse_from};
/// let Command::Run(settings) = parse_from(["stampede", "--requests", "50", "--keys", "2"]).unwrap()
/// else { panic!() };
/// assert_eq!((settings.requests, settings.keys), (50, 2));
/// let error = parse_from(["stampede", "--nope"]).unwrap_err();
/// assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
/// assert_eq!(error.exit_code(), 2);
/// assert!(matches!(parse_from(["stampede", "--http"]), Ok(Command::Http(_))));
/// ```
pub fn parse_from<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args).map(Cli::into_command)
}

/// Writes `shell`'s completion script for the `stampede` command line to `out`.
///
/// # Examples
///
/// ```
/// let mut script = Vec::new();
/// stampede::args::completions(clap_complete::Shell::Bash, &mut script);
/// assert!(String::from_utf8(script).unwrap().contains("--requests"));
/// ```
pub fn completions(shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "stampede", out);
}

/// A number of at least 1 (clap puts the message after "invalid value '0' for '--flag <N>': ").
fn at_least_one<T>(value: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    match value.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        parse_from(std::iter::once("stampede").chain(line.split_whitespace()))
    }

    fn run(line: &str) -> Settings {
        match parse(line) {
            Ok(Command::Run(settings)) => settings,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_default_settings() {
        let (parsed, default) = (run(""), Settings::default());
        assert_eq!(parsed.db_path, default.db_path);
        assert_eq!(parsed.shape, default.shape);
        assert_eq!(
            (parsed.requests, parsed.keys, parsed.bursts, parsed.ttl, parsed.impatient_percent),
            (default.requests, default.keys, default.bursts, default.ttl, default.impatient_percent)
        );
        assert_eq!(parsed.timeout, None);
        assert!(parsed.progress && !parsed.trace && !parsed.metrics);
    }

    #[test]
    fn every_flag_sets_its_setting() {
        let s = run("--requests 50 --keys 3 --bursts 4 --orders 1000 --db /tmp/x.db --ttl-ms 250 \
             --impatient 0 --timeout-ms 7 --no-progress --trace --metrics");
        assert_eq!((s.requests, s.keys, s.bursts, s.shape.orders), (50, 3, 4, 1000));
        assert_eq!(s.db_path, PathBuf::from("/tmp/x.db"));
        assert_eq!((s.ttl, s.timeout), (Duration::from_millis(250), Some(Duration::from_millis(7))));
        assert_eq!(s.impatient_percent, 0);
        assert!(!s.progress && s.trace && s.metrics);
        // clap's `--flag=value` form works too.
        assert_eq!(run("--requests=9").requests, 9);
    }

    #[test]
    fn http_processes_and_redis_choose_the_command() {
        assert!(matches!(parse("--http --requests 64"), Ok(Command::Http(s)) if s.requests == 64));
        let Ok(Command::Processes { settings, processes, redis }) = parse("--processes 3 --requests 20")
        else {
            panic!("--processes")
        };
        assert_eq!((settings.requests, processes, redis), (20, 3, None));
        // --redis alone runs the default number of processes against that Redis.
        let Ok(Command::Processes { processes, redis, .. }) = parse("--redis redis://127.0.0.1:6400/") else {
            panic!("--redis")
        };
        assert_eq!((processes, redis.as_deref()), (DEFAULT_PROCESSES, Some("redis://127.0.0.1:6400/")));
        assert!(matches!(parse("--completions zsh"), Ok(Command::Completions(Shell::Zsh))));
    }

    #[test]
    fn bad_command_lines_get_clap_errors_with_exit_code_2() {
        for (line, kind) in [
            ("--nope", ErrorKind::UnknownArgument),
            ("--requests", ErrorKind::InvalidValue),
            ("--requests many", ErrorKind::ValueValidation),
            ("--requests 0", ErrorKind::ValueValidation),
            ("--keys 51", ErrorKind::ValueValidation),
            ("--impatient 101", ErrorKind::ValueValidation),
            ("--orders 0", ErrorKind::ValueValidation),
            ("--processes 0", ErrorKind::ValueValidation),
            ("--http --processes 2", ErrorKind::ArgumentConflict),
            ("--http --redis redis://localhost/", ErrorKind::ArgumentConflict),
            ("--completions bash --requests 3", ErrorKind::ArgumentConflict),
            ("--completions tcsh", ErrorKind::InvalidValue),
        ] {
            let error = parse(line).expect_err(line);
            assert_eq!(error.kind(), kind, "{line}: {error}");
            assert_eq!(error.exit_code(), 2, "{line}");
        }
        let message = parse("--requests many").unwrap_err().to_string();
        assert!(message.contains("invalid value 'many' for '--requests <N>'"), "{message}");
        let message = parse("--orders 0").unwrap_err().to_string();
        assert!(message.contains("invalid value '0' for '--orders <N>': must be at least 1"), "{message}");
    }

    #[test]
    fn help_and_version_exit_with_0() {
        let help = parse("--help").unwrap_err();
        assert_eq!((help.kind(), help.exit_code()), (ErrorKind::DisplayHelp, 0));
        let text = help.to_string();
        for flag in
            ["--requests <N>", "--impatient <PCT>", "--processes <N>", "--redis <URL>", "--no-progress"]
        {
            assert!(text.contains(flag), "{flag} is not in --help:\n{text}");
        }
        assert_eq!(parse("-h").unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(parse("--version").unwrap_err().kind(), ErrorKind::DisplayVersion);
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
