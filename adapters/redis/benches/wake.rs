//! Wake latency and Redis commands per flight, across real processes: `PROCESSES` child
//! processes (this binary, re-run) × `CALLERS` callers each call one key per round; the work
//! (in whichever process leads) takes `WORK` (a stand-in for a query).
//!
//! Competitors, each in the same harness:
//! - `coalescer-redis`: local coalescing, then the cross-process flight (woken by the publish).
//! - `polling lock`: redsync-style: every caller checks the value, else tries `SET lock NX PX`,
//!   else sleeps a random 50–250 ms (redsync's default retry delay) and tries again; the lock
//!   holder runs the work, `SET`s the value (with the same linger) and deletes the lock.
//! - `polling lock + local`: the same lock, behind a local `coalescer::Group` per process (one
//!   poller per process), to separate the effect of local coalescing from that of pub/sub.
//!
//! Wake latency: from the moment the work returned (a wall-clock stamp carried in the value) to
//! the moment a caller in *another* process has the value, over every such caller of every
//! round. Commands per flight: the commands the clients sent (from `INFO commandstats`; a
//! script's inner commands are not counted, the `EVALSHA` is).
//!
//!   cargo bench -p coalescer-redis --bench wake            (needs `redis-server`: ci/redis.sh)
//!   WAKE_ROUNDS=5 cargo bench -p coalescer-redis --bench wake   (a quick run)
//!   WAKE_UNIX=1 ...   the server on a Unix socket instead of loopback TCP
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use coalescer_redis::RedisGroup;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PROCESSES: usize = 4;
const CALLERS: usize = 50;
const WORK: Duration = Duration::from_millis(20);
const LINGER: Duration = Duration::from_secs(5);
const IMPLS: [&str; 3] = ["coalescer-redis", "polling lock", "polling lock + local"];

fn main() {
    if let Ok(which) = std::env::var("WAKE_CHILD") {
        return child(&which);
    }
    let rounds: usize = std::env::var("WAKE_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
    // Loopback TCP (WAKE_UNIX=1: the Unix socket).
    let server = if std::env::var_os("WAKE_UNIX").is_some() {
        common::Server::start()
    } else {
        common::Server::start_tcp()
    };
    let Some(server) = server else { return };
    let uptime = std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    println!(
        "{PROCESSES} processes x {CALLERS} callers, one key per round, work {WORK:?}, {rounds} rounds each, redis at {}",
        server.url()
    );
    println!("uptime before: {}", uptime.unwrap_or_default().trim());
    println!();
    println!(
        "| implementation | executions per flight | client commands per flight | process wake p50 | p99 | caller wake p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for which in IMPLS {
        let (executions, commands, mut callers, mut processes) = measure(&server, which, rounds);
        callers.sort_unstable();
        processes.sort_unstable();
        let at = |v: &[u64], q: f64| show(v[((v.len() - 1) as f64 * q).round() as usize]);
        println!(
            "| {which} | {:.2} | {:.1} | {} | {} | {} | {} | {} |",
            executions as f64 / rounds as f64,
            commands as f64 / rounds as f64,
            at(&processes, 0.50),
            at(&processes, 0.99),
            at(&callers, 0.50),
            at(&callers, 0.99),
            at(&callers, 1.0),
        );
    }
    let uptime = std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    println!();
    println!("uptime after: {}", uptime.unwrap_or_default().trim());
}

fn show(micros: u64) -> String {
    if micros >= 10_000 {
        format!("{:.0} ms", micros as f64 / 1000.0)
    } else {
        format!("{:.2} ms", micros as f64 / 1000.0)
    }
}

/// Runs `rounds` flights of `which`; returns executions, client commands, the wake latencies
/// (µs) of every caller in a process other than the executing one, and per such process and
/// round the first of its callers' (the cross-process wake, before the local fan-out to 50 tasks).
fn measure(server: &common::Server, which: &str, rounds: usize) -> (u64, u64, Vec<u64>, Vec<u64>) {
    let mut con = server.con();
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    let counted: &[&str] = if which == "coalescer-redis" {
        &["evalsha", "eval", "script|load", "subscribe", "unsubscribe"]
    } else {
        &["get", "set", "del"]
    };
    let count = |stats: &std::collections::HashMap<String, u64>| -> u64 {
        counted.iter().map(|c| stats.get(*c).copied().unwrap_or(0)).sum()
    };
    // One warm-up round (connections, script loading), not measured.
    let mut children = common::Children::spawn_args(
        PROCESSES,
        &[],
        &[("WAKE_CHILD", which.to_string()), ("URL", server.url()), ("ROUNDS", (rounds + 1).to_string())],
    );
    let go = |con: &mut redis::Connection, round: usize| {
        for i in 0..PROCESSES {
            let _: () = redis::cmd("RPUSH").arg(format!("bench:go:{i}")).arg(round).query(con).unwrap();
        }
        for _ in 0..PROCESSES {
            common::blpop(con, "bench:done", Duration::from_secs(60));
        }
    };
    go(&mut con, 0);
    let before = server.commandstats();
    let executions_before: u64 =
        redis::cmd("GET").arg("bench:executions").query::<Option<u64>>(&mut con).unwrap().unwrap_or(0);
    for round in 1..=rounds {
        go(&mut con, round);
    }
    let after = server.commandstats();
    let executions: u64 =
        redis::cmd("GET").arg("bench:executions").query::<Option<u64>>(&mut con).unwrap().unwrap_or(0);
    let (mut latencies, mut first) = (Vec::new(), std::collections::BTreeMap::new());
    for i in 0..PROCESSES {
        for line in children.wait(i, Duration::from_secs(120)) {
            let (round, micros) = line.split_once(' ').unwrap();
            let micros: u64 = micros.parse().unwrap();
            if round != "0" {
                latencies.push(micros);
                let earliest = first.entry((i, round.to_string())).or_insert(micros);
                *earliest = (*earliest).min(micros);
            }
        }
    }
    (executions - executions_before, count(&after) - count(&before), latencies, first.into_values().collect())
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// The value: the executing process and the moment its work returned.
fn value() -> String {
    format!("{} {}", std::process::id(), now_micros())
}

async fn execute(mut con: Con) -> String {
    let _: u64 = redis::cmd("INCR").arg("bench:executions").query_async(&mut con).await.unwrap();
    tokio::time::sleep(WORK).await;
    value()
}

type Con = redis::aio::MultiplexedConnection;

/// A caller's line: the round and, if the value came from another process, the wake latency.
fn report(round: usize, value: &str) -> Option<String> {
    let (pid, stamp) = value.split_once(' ').unwrap();
    (pid.parse::<u32>().unwrap() != std::process::id())
        .then(|| format!("RESULT {round} {}", now_micros().saturating_sub(stamp.parse().unwrap())))
}

fn child(which: &str) {
    let url = std::env::var("URL").unwrap();
    let rounds: usize = std::env::var("ROUNDS").unwrap().parse().unwrap();
    let me = std::env::var("CHILD_INDEX").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let client = redis::Client::open(url).unwrap();
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut control = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
        // One connection for every caller's commands in this process (as an application would).
        let con = client.get_multiplexed_async_connection().await.unwrap();
        let group: RedisGroup<String> = RedisGroup::builder(client).prefix("bench").linger(LINGER).build();
        let local = Arc::new(coalescer::Group::<String, String>::new().shared());
        let mut lines = Vec::new();
        for round in 0..rounds {
            let _: (String, String) = redis::cmd("BLPOP")
                .arg(format!("bench:go:{me}"))
                .arg(0)
                .query_async(&mut control)
                .await
                .unwrap();
            let key = format!("round-{round}");
            let calls: Vec<_> = (0..CALLERS)
                .map(|caller| {
                    let (which, key, con, group, local) =
                        (which.to_string(), key.clone(), con.clone(), group.clone(), local.clone());
                    tokio::spawn(async move {
                        let value = match which.as_str() {
                            "coalescer-redis" => {
                                let work = move |_| async move { Ok(execute(con).await) };
                                group.work(key, work).await.unwrap().into_value()
                            }
                            "polling lock" => polling_lock(con, &key, caller).await,
                            _ => {
                                let k = key.clone();
                                let work = move || async move { polling_lock(con, &k, caller).await };
                                local.work(&key, work).await.unwrap().into_value()
                            }
                        };
                        report(round, &value)
                    })
                })
                .collect();
            for call in calls {
                lines.extend(call.await.unwrap());
            }
            let _: () =
                redis::cmd("RPUSH").arg("bench:done").arg(&me).query_async(&mut control).await.unwrap();
        }
        for line in lines {
            println!("{line}");
        }
    });
}

/// redsync-style: check, try the lock, else sleep 50–250 ms and retry.
async fn polling_lock(mut con: Con, key: &str, caller: usize) -> String {
    let (value_key, lock_key) = (format!("bench:{key}:value"), format!("bench:{key}:lock"));
    let mut seed = (now_micros() ^ (u64::from(std::process::id()) << 20) ^ caller as u64) | 1;
    loop {
        let value: Option<String> = redis::cmd("GET").arg(&value_key).query_async(&mut con).await.unwrap();
        if let Some(value) = value {
            return value;
        }
        let locked: Option<String> = redis::cmd("SET")
            .arg(&lock_key)
            .arg("me")
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut con)
            .await
            .unwrap();
        if locked.is_some() {
            let value = execute(con.clone()).await;
            let _: () = redis::cmd("SET")
                .arg(&value_key)
                .arg(&value)
                .arg("PX")
                .arg(LINGER.as_millis() as u64)
                .query_async(&mut con)
                .await
                .unwrap();
            let _: () = redis::cmd("DEL").arg(&lock_key).query_async(&mut con).await.unwrap();
            return value;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(50 + seed % 200)).await;
    }
}
