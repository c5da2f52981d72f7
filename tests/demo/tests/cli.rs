//! The binary's command line as a user meets it: clap's `--help`, errors and exit codes (no
//! scenario runs).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `stampede` with `args`; panics if it has not exited within a minute.
fn stampede(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("watchdog: stampede {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn help_prints_every_flag_on_stdout_and_exits_with_0() {
    let output = stampede(&["--help"]);
    let help = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{help}");
    assert!(help.starts_with("A cache stampede on a real SQLite database"), "{help}");
    for flag in [
        "--requests <N>",
        "--keys <N>",
        "--bursts <N>",
        "--orders <N>",
        "--db <PATH>",
        "--ttl-ms <N>",
        "--impatient <PCT>",
        "--timeout-ms <N>",
        "--no-progress",
        "--trace",
        "--metrics",
        "--http",
        "--processes <N>",
        "--redis <URL>",
        "--completions <SHELL>",
        "-h, --help",
    ] {
        assert!(help.contains(flag), "{flag} is missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_flag_or_value_is_a_usage_error_on_stderr_with_exit_code_2() {
    for (args, says) in [
        (&["--nope"][..], "unexpected argument '--nope'"),
        (&["--requests", "many"][..], "invalid value 'many' for '--requests <N>'"),
        (&["--impatient", "150"][..], "150 is not in 0..=100"),
        (&["--processes", "0"][..], "invalid value '0' for '--processes <N>': must be at least 1"),
        (&["--http", "--processes", "2"][..], "cannot be used with"),
    ] {
        let output = stampede(args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.contains("For more information, try '--help'."), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn completions_print_a_shell_script_that_knows_every_flag() {
    let output = stampede(&["--completions", "bash"]);
    let script = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{script}");
    assert!(script.contains("_stampede()") && script.contains("complete -F _stampede"), "{script}");
    for flag in ["--requests", "--impatient", "--processes", "--redis", "--completions"] {
        assert!(script.contains(flag), "{flag} is missing from the bash completions");
    }
}
