//! coalescer-redis against a real `redis-server` (started per test on a Unix socket in a temp
//! dir, stopped on drop), with real processes: this test binary re-runs itself as children
//! (`child_process`, which does nothing unless `COALESCER_REDIS_CHILD` is set).
//!
//! Each test has a watchdog: a `timeout` around its body, and a time limit on every wait for a
//! child or a list.

mod common;

use coalescer_redis::{Bytes, Codec, Error, Fallback, Origin, RedisGroup};
use common::{Children, Server};
use std::future::Future;
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(60);

type Group = RedisGroup<String, String>;

fn group(server: &Server, lease: Duration) -> Group {
    RedisGroup::builder(server.client())
        .prefix("t")
        .lease(lease)
        .linger(Duration::from_secs(30))
        .timeouts(Duration::from_millis(500), Duration::from_secs(2))
        .build()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Runs `body` on a fresh multi-threaded runtime under the watchdog.
fn run<F: Future<Output = ()>>(body: F) {
    runtime().block_on(async {
        tokio::time::timeout(WATCHDOG, body).await.expect("watchdog: the test hung");
    });
}

fn evalsha_calls(server: &Server) -> u64 {
    server.commandstats().get("evalsha").copied().unwrap_or(0)
}

/// Loads the scripts (a flight on another key), then counts the `EVALSHA`s: from here on each
/// check is one `EVALSHA` (a fresh server first answers `NOSCRIPT`, which would count too).
async fn warm_base(server: &Server) -> u64 {
    let warm = group(server, Duration::from_secs(10));
    let _ = warm.work("warm-up", |_| async { Ok("w".into()) }).await.unwrap();
    evalsha_calls(server)
}

/// Waits (watchdog) until the server has run `n` more `EVALSHA`s than `base`: how a test knows
/// that a follower has run its check and is waiting.
async fn until_evalsha(server: &Server, base: u64, n: u64) {
    let started = Instant::now();
    while evalsha_calls(server) < base + n {
        assert!(started.elapsed() < Duration::from_secs(20), "watchdog: no check reached the server");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// The entry point of the child processes (a no-op in the ordinary test run). Environment:
/// `URL`, `KEY`, `CALLERS`, `PROCESSES`, `LEASE_MS`, `MODE` (`count`, `hang-first`,
/// `stop-first`). Prints `RESULT ok <value> <origin>` or `RESULT err <error>` per caller.
#[test]
fn child_process() {
    if !common::is_child() {
        return;
    }
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let (url, key, mode) = (env("URL"), env("KEY"), env("MODE"));
    let callers: usize = env("CALLERS").parse().unwrap();
    let processes: usize = env("PROCESSES").parse().unwrap();
    let lease = Duration::from_millis(env("LEASE_MS").parse().unwrap());
    runtime().block_on(async move {
        let client = redis::Client::open(url).unwrap();
        let group: Group = RedisGroup::builder(client.clone())
            .prefix("t")
            .lease(lease)
            .linger(Duration::from_secs(30))
            .build();
        let channel = format!("t:{key}:wake");
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (group, key, mode, client, channel) =
                    (group.clone(), key.clone(), mode.clone(), client.clone(), channel.clone());
                tokio::spawn(async move {
                    group.work(key, move |lease| child_work(mode, lease, client, processes, channel)).await
                })
            })
            .collect();
        for task in tasks {
            match task.await.unwrap() {
                Ok(served) => println!("RESULT ok {} {:?}", served.value(), served.origin()),
                Err(error) => println!("RESULT err {error}"),
            }
        }
    });
}

async fn child_work(
    mode: String,
    lease: coalescer_redis::Lease,
    client: redis::Client,
    processes: usize,
    channel: String,
) -> Result<String, String> {
    let token = lease.token().expect("a token").get();
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut con =
        client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
    let n: u64 = redis::cmd("INCR").arg("test:executions").query_async(&mut con).await.unwrap();
    let me = format!("{} {token}", std::process::id());
    let _: () = redis::cmd("RPUSH").arg("test:leaders").arg(me).query_async(&mut con).await.unwrap();
    match mode.as_str() {
        // Finish once every process has subscribed (so all of them are in the flight).
        "count" => loop {
            let (_, subscribers): (String, usize) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut con).await.unwrap();
            if subscribers >= processes {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        },
        "hang-first" if n == 1 => std::future::pending().await,
        "stop-first" if n == 1 => {
            let _: (String, String) =
                redis::cmd("BLPOP").arg("test:resume").arg(0).query_async(&mut con).await.unwrap();
        }
        _ => {}
    }
    Ok(format!("v{token}"))
}

fn spawn_children(server: &Server, n: usize, callers: usize, lease_ms: u64, mode: &str) -> Children {
    Children::spawn(
        n,
        &[
            ("URL", server.url()),
            ("KEY", "shared-key".into()),
            ("CALLERS", callers.to_string()),
            ("PROCESSES", n.to_string()),
            ("LEASE_MS", lease_ms.to_string()),
            ("MODE", mode.into()),
        ],
    )
}

fn executions(con: &mut redis::Connection) -> u64 {
    redis::cmd("GET").arg("test:executions").query::<Option<u64>>(con).unwrap().unwrap_or(0)
}

fn leader(entry: &str) -> (u32, u64) {
    let (pid, token) = entry.split_once(' ').unwrap();
    (pid.parse().unwrap(), token.parse().unwrap())
}

#[test]
fn processes_run_the_work_once_and_followers_send_at_most_3_commands() {
    if common::is_child() {
        return;
    }
    let Some(server) = Server::start() else { return };
    const N: usize = 4;
    const M: usize = 8;
    // Warm-up on another key: the scripts are loaded once (a fresh server answers NOSCRIPT).
    run(async {
        let warm = group(&server, Duration::from_secs(10));
        let _ = warm.work("warm-up", |_| async { Ok("w".into()) }).await.unwrap();
    });
    let before = server.commandstats();
    let mut children = spawn_children(&server, N, M, 10_000, "count");
    let results: Vec<Vec<String>> = (0..N).map(|i| children.wait(i, WATCHDOG)).collect();
    let after = server.commandstats();

    let mut con = server.con();
    assert_eq!(executions(&mut con), 1, "one execution for {N} processes x {M} callers");
    let (_, token) = leader(&common::blpop(&mut con, "test:leaders", Duration::from_secs(1)));
    for (i, lines) in results.iter().enumerate() {
        assert_eq!(lines.len(), M, "child {i}: {lines:?}");
        for line in lines {
            assert!(line.starts_with(&format!("ok v{token} ")), "child {i}: {line}");
        }
    }
    let commands = common::client_commands(&before, &after);
    println!("{N} processes x {M} callers: {commands} commands for the flight");
    // The leader: SUBSCRIBE, EVALSHA (check), EVALSHA (store + publish), UNSUBSCRIBE. Each
    // follower process: SUBSCRIBE, EVALSHA (check), UNSUBSCRIBE. The bound asked: 3 per follower
    // process.
    assert!(commands <= 4 + 3 * (N as u64 - 1), "{commands} commands for {N} processes: {after:?}");
}

#[test]
fn killed_leader_process_is_replaced_within_the_lease() {
    if common::is_child() {
        return;
    }
    let Some(server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_millis(1000);
    let mut children = spawn_children(&server, 3, 4, LEASE.as_millis() as u64, "hang-first");
    let mut con = server.con();
    let (first, first_token) = leader(&common::blpop(&mut con, "test:leaders", WATCHDOG));
    let first = children.pid_index(first);
    children.signal(first, "-KILL");
    let killed = Instant::now();
    let (second, second_token) = leader(&common::blpop(&mut con, "test:leaders", WATCHDOG));
    let takeover = killed.elapsed();
    assert!(second_token > first_token);
    assert!(takeover < LEASE * 2, "took over after {takeover:?} (lease {LEASE:?})");
    let second = children.pid_index(second);
    assert_ne!(first, second);
    for i in (0..3).filter(|&i| i != first) {
        let lines = children.wait(i, WATCHDOG);
        assert_eq!(lines.len(), 4);
        for line in lines {
            assert!(line.starts_with(&format!("ok v{second_token} ")), "child {i}: {line}");
        }
    }
    assert_eq!(executions(&mut con), 2);
    println!("kill -9 of the leader: taken over after {takeover:?} (lease {LEASE:?})");
}

#[test]
fn stopped_leader_past_its_lease_loses_to_a_newer_leader_and_gets_its_result() {
    if common::is_child() {
        return;
    }
    let Some(server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_millis(600);
    let mut children = spawn_children(&server, 3, 3, LEASE.as_millis() as u64, "stop-first");
    let mut con = server.con();
    let (first, old_token) = leader(&common::blpop(&mut con, "test:leaders", WATCHDOG));
    let first = children.pid_index(first);
    children.signal(first, "-STOP");
    let (_, new_token) = leader(&common::blpop(&mut con, "test:leaders", WATCHDOG));
    assert!(new_token > old_token, "the new leader's token {new_token} > the old one's {old_token}");
    for i in (0..3).filter(|&i| i != first) {
        for line in children.wait(i, WATCHDOG) {
            assert!(line.starts_with(&format!("ok v{new_token} ")), "child {i}: {line}");
        }
    }
    // The old leader resumes, finishes its work with its old token: its store is rejected,
    // and its callers get the newer leader's result, found stored.
    let _: () = redis::cmd("RPUSH").arg("test:resume").arg(1).query(&mut con).unwrap();
    children.signal(first, "-CONT");
    for line in children.wait(first, WATCHDOG) {
        assert_eq!(line, format!("ok v{new_token} Stored"), "the old leader's caller");
    }
    let stored: Vec<u8> = redis::cmd("GET").arg("t:shared-key:value").query(&mut con).unwrap();
    assert_eq!(stored, format!("v{new_token}").as_bytes(), "the newer result was not overwritten");
    assert_eq!(executions(&mut con), 2);
}

// ---------------------------------------------------------------------------------------------
// Two groups in one process stand for two processes (each has its own connections).

#[test]
fn cancelled_leader_hands_over_at_once_not_at_lease_expiry() {
    let Some(server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_secs(20);
    run(async {
        let (a, b) = (group(&server, LEASE), group(&server, LEASE));
        let base = warm_base(&server).await;
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = tokio::spawn(async move {
            a.work("k", |_| async move {
                let _ = started.send(());
                std::future::pending().await
            })
            .await
        });
        leading.await.unwrap();
        let follower = tokio::spawn(async move {
            b.work("k", |l| async move { Ok(format!("b{}", l.token().unwrap())) }).await
        });
        until_evalsha(&server, base, 2).await; // the follower checked and waits
        let cancelled = Instant::now();
        leader.abort();
        let served = follower.await.unwrap().unwrap();
        assert!(matches!(served.origin(), Origin::Ran { token: Some(_) }), "{served:?}");
        assert!(cancelled.elapsed() < LEASE / 4, "handover took {:?}", cancelled.elapsed());
    });
}

#[test]
fn panicking_work_releases_every_caller_and_another_process_takes_over() {
    let Some(server) = Server::start() else { return };
    run(async {
        let (a, b) = (group(&server, Duration::from_secs(20)), group(&server, Duration::from_secs(20)));
        let base = warm_base(&server).await;
        let (go, panic_now) = tokio::sync::oneshot::channel::<()>();
        let (started, leading) = tokio::sync::oneshot::channel();
        let (a2, a2_view) = (a.clone(), a.clone());
        let first = tokio::spawn(async move {
            a.work("k", |_| async move {
                let _ = started.send(());
                let _ = panic_now.await;
                panic!("the work broke");
            })
            .await
        });
        leading.await.unwrap();
        let second = tokio::spawn(async move { a2.work("k", |_| async { Ok("never".to_string()) }).await });
        let follower = tokio::spawn(async move { b.work("k", |_| async { Ok("from b".to_string()) }).await });
        until_evalsha(&server, base, 2).await;
        while a2_view.counters().followers < 1 {
            tokio::task::yield_now().await; // until the second local caller has joined
        }
        go.send(()).unwrap();
        let (first, second) = (first.await, second.await);
        // One local caller drove the work and got its panic; the other got `Panicked`.
        let panicked = [&first, &second].iter().filter(|r| r.as_ref().is_err_and(|e| e.is_panic())).count();
        let released = [first, second]
            .into_iter()
            .filter_map(Result::ok)
            .filter(|r| r.as_ref().is_err_and(Error::is_panicked))
            .count();
        assert_eq!((panicked, released), (1, 1));
        let served = follower.await.unwrap().unwrap();
        assert_eq!(served.value(), "from b");
    });
}

#[test]
fn killed_subscription_follower_resubscribes_and_gets_the_value() {
    let Some(server) = Server::start() else { return };
    run(async {
        let (a, b) = (group(&server, Duration::from_secs(20)), group(&server, Duration::from_secs(20)));
        let base = warm_base(&server).await;
        let (go, finish) = tokio::sync::oneshot::channel::<()>();
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = tokio::spawn(async move {
            a.work("k", |l| async move {
                let _ = started.send(());
                let _ = finish.await;
                Ok(format!("a{}", l.token().unwrap()))
            })
            .await
        });
        leading.await.unwrap();
        let follower = tokio::spawn(async move { b.work("k", |_| async { Ok("b ran".to_string()) }).await });
        until_evalsha(&server, base, 2).await;
        let subscribes = server.commandstats()["subscribe"];
        let killed: u64 =
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut server.con()).unwrap();
        assert!(killed >= 1, "a subscriber was killed");
        // The follower re-subscribes and re-checks (the leader still holds the lease).
        until_evalsha(&server, base, 3).await;
        assert!(server.commandstats()["subscribe"] > subscribes, "the follower re-subscribed");
        go.send(()).unwrap();
        let led = leader.await.unwrap().unwrap();
        let followed = follower.await.unwrap().unwrap();
        assert_eq!(followed.value(), led.value());
        assert_eq!(followed.origin(), Origin::Woken);
    });
}

#[test]
fn server_restart_mid_flight_every_caller_gets_a_value() {
    let Some(mut server) = Server::start() else { return };
    let rt = runtime();
    let _guard = rt.enter();
    let (a, b) = (group(&server, Duration::from_secs(20)), group(&server, Duration::from_secs(20)));
    let base = rt.block_on(warm_base(&server));
    let (go, finish) = tokio::sync::oneshot::channel::<()>();
    let (started, leading) = tokio::sync::oneshot::channel();
    let leader = rt.spawn(async move {
        a.work("k", |l| async move {
            let _ = started.send(l.token().unwrap());
            let _ = finish.await;
            Ok(format!("a{}", l.token().unwrap()))
        })
        .await
    });
    let old_token = rt.block_on(async { tokio::time::timeout(WATCHDOG, leading).await.unwrap().unwrap() });
    let follower =
        rt.spawn(async move { b.work("k", |l| async move { Ok(format!("b{}", l.token().unwrap())) }).await });
    rt.block_on(until_evalsha(&server, base, 2));
    server.restart(); // empty: no lease, no value
    rt.block_on(async {
        // The follower re-subscribes, finds the lease free on the new server and leads.
        let followed = tokio::time::timeout(WATCHDOG, follower).await.unwrap().unwrap().unwrap();
        assert!(followed.value().starts_with('b'), "{followed:?}");
        // The restarted server lost the counter; tokens start again from its clock, above.
        let new_token: u64 = followed.value()[1..].parse().unwrap();
        assert!(new_token > old_token.get(), "token {new_token} after the restart > {old_token} before");
        // The old leader finishes: its store is rejected (no lease on the new server) and its
        // callers get the new leader's result.
        go.send(()).unwrap();
        let led = tokio::time::timeout(WATCHDOG, leader).await.unwrap().unwrap().unwrap();
        assert_eq!(led.value(), followed.value());
        assert_eq!(led.origin(), Origin::Stored);
    });
}

#[test]
fn server_gone_mid_flight_follower_gets_disconnected() {
    let Some(mut server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_millis(300);
    run(async {
        let (a, b) = (group(&server, LEASE), group(&server, LEASE));
        let base = warm_base(&server).await;
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = tokio::spawn(async move {
            a.work("k", |_| async move {
                let _ = started.send(());
                std::future::pending().await
            })
            .await
        });
        leading.await.unwrap();
        let follower = tokio::spawn(async move { b.work("k", |_| async { Ok("b".to_string()) }).await });
        until_evalsha(&server, base, 2).await;
        server.kill();
        let error = follower.await.unwrap().unwrap_err();
        assert!(error.is_disconnected(), "{error}");
        leader.abort();
    });
}

#[test]
fn unreachable_redis_fails_typed_or_falls_back_to_local_coalescing() {
    run(async {
        let client = redis::Client::open("redis+unix:///nonexistent/coalescer-redis.sock").unwrap();
        let failing: Group = RedisGroup::builder(client.clone()).build();
        let error = failing.work("k", |_| async { Ok("x".to_string()) }).await.unwrap_err();
        assert!(error.is_unreachable(), "{error}");

        let local: Group = RedisGroup::builder(client).fallback(Fallback::Local).build();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let (local, runs, mut gate) = (local.clone(), runs.clone(), gate.clone());
                tokio::spawn(async move {
                    local
                        .work("k", move |lease| async move {
                            assert_eq!(lease.token(), None);
                            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = gate.wait_for(|open| *open).await;
                            Ok("local".to_string())
                        })
                        .await
                })
            })
            .collect();
        while local.counters().followers < 4 {
            tokio::task::yield_now().await; // until all five callers are in the local flight
        }
        release.send(true).unwrap();
        for call in calls {
            let served = call.await.unwrap().unwrap();
            assert_eq!((served.value().as_str(), served.origin()), ("local", Origin::Ran { token: None }));
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "still coalesced locally");
    });
}

#[test]
fn undecodable_stored_result_is_a_decode_error() {
    let Some(server) = Server::start() else { return };
    let _: () = redis::cmd("SET").arg("t:k:value").arg(&[0xffu8, 0xfe][..]).query(&mut server.con()).unwrap();
    run(async {
        let error =
            group(&server, Duration::from_secs(5)).work("k", |_| async { Ok("x".into()) }).await.unwrap_err();
        assert!(error.is_decode(), "{error}");
        assert!(<Bytes as Codec<String>>::decode(&Bytes, b"ok").is_ok());
    });
}

#[test]
fn lease_is_renewed_while_a_long_work_runs() {
    let Some(server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_millis(100);
    run(async {
        let (a, b) = (group(&server, LEASE), group(&server, LEASE));
        let base = warm_base(&server).await;
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = tokio::spawn(async move {
            a.work("k", |_| async move {
                let _ = started.send(());
                tokio::time::sleep(LEASE * 6).await; // six leases long
                Ok("a".to_string())
            })
            .await
        });
        leading.await.unwrap();
        let follower = tokio::spawn(async move { b.work("k", |_| async { Ok("b".to_string()) }).await });
        until_evalsha(&server, base, 2).await;
        let followed = follower.await.unwrap().unwrap();
        assert_eq!(followed.value(), "a", "the follower never led: the lease was renewed");
        assert_eq!(leader.await.unwrap().unwrap().value(), "a");
    });
}

#[test]
fn failing_work_is_shared_locally_and_another_process_tries_next() {
    let Some(server) = Server::start() else { return };
    run(async {
        let (a, b) = (group(&server, Duration::from_secs(20)), group(&server, Duration::from_secs(20)));
        let base = warm_base(&server).await;
        let (go, fail_now) = tokio::sync::oneshot::channel::<()>();
        let (started, leading) = tokio::sync::oneshot::channel();
        let (a1, a2) = (a.clone(), a.clone());
        let first = tokio::spawn(async move {
            a1.work("k", |_| async move {
                let _ = started.send(());
                let _ = fail_now.await;
                Err("the database said no".to_string())
            })
            .await
        });
        leading.await.unwrap();
        let second = tokio::spawn(async move { a2.work("k", |_| async { Ok("never".to_string()) }).await });
        let follower = tokio::spawn(async move { b.work("k", |_| async { Ok("from b".to_string()) }).await });
        until_evalsha(&server, base, 2).await;
        while a.counters().followers < 1 {
            tokio::task::yield_now().await;
        }
        go.send(()).unwrap();
        for call in [first, second] {
            let error = call.await.unwrap().unwrap_err();
            assert_eq!(error.failure().map(String::as_str), Some("the database said no"));
        }
        let served = follower.await.unwrap().unwrap();
        assert_eq!((served.value().as_str(), served.origin().is_ran()), ("from b", true));
    });
}

#[test]
fn late_caller_within_the_linger_gets_the_stored_result_without_running() {
    let Some(server) = Server::start() else { return };
    run(async {
        let (a, b) = (group(&server, Duration::from_secs(20)), group(&server, Duration::from_secs(20)));
        let led = a.work("k", |l| async move { Ok(format!("a{}", l.token().unwrap())) }).await.unwrap();
        let late =
            b.work("k", |_| async { Err("a late caller must not run the work".to_string()) }).await.unwrap();
        assert_eq!(late.value(), led.value());
        assert_eq!(late.origin(), Origin::Stored);
    });
}

/// Encodes every string but `"unencodable"`.
struct Picky;

impl Codec<String> for Picky {
    type Error = std::io::Error;

    fn encode(&self, value: &String) -> Result<Vec<u8>, Self::Error> {
        match value.as_str() {
            "unencodable" => Err(std::io::Error::other("cannot encode that")),
            _ => Ok(value.clone().into_bytes()),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, Self::Error> {
        String::from_utf8(bytes.to_vec()).map_err(std::io::Error::other)
    }
}

#[test]
fn unencodable_value_stays_with_the_leader_and_another_process_runs_the_work() {
    let Some(server) = Server::start() else { return };
    run(async {
        let picky = |server: &Server| -> RedisGroup<String, String, Picky> {
            RedisGroup::builder(server.client())
                .prefix("t")
                .lease(Duration::from_secs(20))
                .codec(Picky)
                .build()
        };
        let (a, b) = (picky(&server), picky(&server));
        let base = warm_base(&server).await;
        let (go, finish) = tokio::sync::oneshot::channel::<()>();
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = tokio::spawn(async move {
            a.work("k", |_| async move {
                let _ = started.send(());
                let _ = finish.await;
                Ok("unencodable".to_string())
            })
            .await
        });
        leading.await.unwrap();
        let follower = tokio::spawn(async move { b.work("k", |_| async { Ok("from b".to_string()) }).await });
        until_evalsha(&server, base, 2).await;
        go.send(()).unwrap();
        let led = leader.await.unwrap().unwrap();
        assert_eq!((led.value().as_str(), led.origin().is_ran()), ("unencodable", true));
        let followed = follower.await.unwrap().unwrap();
        assert_eq!((followed.value().as_str(), followed.origin().is_ran()), ("from b", true));
    });
}

#[test]
fn redis_lost_mid_flight_with_local_fallback_runs_the_work_here() {
    let Some(mut server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_millis(300);
    run(async {
        let local = |server: &Server| -> Group {
            RedisGroup::builder(server.client())
                .prefix("t")
                .lease(LEASE)
                .fallback(Fallback::Local)
                .timeouts(Duration::from_millis(200), Duration::from_millis(500))
                .build()
        };
        let (a, b) = (local(&server), local(&server));
        let base = warm_base(&server).await;
        let (started, leading) = tokio::sync::oneshot::channel();
        let leader = tokio::spawn(async move {
            a.work("k", |_| async move {
                let _ = started.send(());
                std::future::pending().await
            })
            .await
        });
        leading.await.unwrap();
        let follower =
            tokio::spawn(
                async move { b.work("k", |l| async move { Ok(format!("b {:?}", l.token())) }).await },
            );
        until_evalsha(&server, base, 2).await;
        server.kill();
        let served = follower.await.unwrap().unwrap();
        assert_eq!((served.value().as_str(), served.origin()), ("b None", Origin::Ran { token: None }));
        leader.abort();
    });
}

#[test]
fn work_sees_its_lease_lost_and_its_result_is_stored_under_a_new_lease() {
    let Some(server) = Server::start() else { return };
    const LEASE: Duration = Duration::from_millis(150);
    run(async {
        let a = group(&server, LEASE);
        let (started, leading) = tokio::sync::oneshot::channel();
        let call = tokio::spawn(async move {
            a.work("k", |lease| async move {
                let _ = started.send(lease.token().unwrap());
                // Until a renewal finds the lease gone (the test deletes it): then finish.
                while !lease.is_lost() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(format!("a{}", lease.token().unwrap()))
            })
            .await
        });
        let first = leading.await.unwrap();
        let deleted: u64 = redis::cmd("DEL").arg("t:k:lease").query(&mut server.con()).unwrap();
        assert_eq!(deleted, 1);
        let served = call.await.unwrap().unwrap();
        // The store under the lost lease is rejected; the re-check finds the lease free, so this
        // process leads again and stores the value it has under the new, larger token.
        let Origin::Ran { token: Some(second) } = served.origin() else { panic!("{served:?}") };
        assert!(second > first, "{second} > {first}");
        assert_eq!(served.value(), &format!("a{first}"));
        let stored: String = redis::cmd("GET").arg("t:k:value").query(&mut server.con()).unwrap();
        assert_eq!(&stored, served.value());
    });
}

#[test]
fn public_types_and_the_call_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Group>();
    send_sync::<coalescer_redis::Served<String>>();
    send_sync::<Error<String>>();
    send_sync::<coalescer_redis::Lease>();
    send_sync::<coalescer_redis::Builder>();
    let group: Group = RedisGroup::builder(redis::Client::open("redis://127.0.0.1:1/").unwrap()).build();
    let call = group.work("k", |_| async { Ok(String::new()) });
    send(&call); // spawnable on a multi-threaded runtime
}

#[test]
fn many_keys_in_flight_share_one_subscriber_connection_per_group() {
    let Some(server) = Server::start() else { return };
    const KEYS: usize = 10;
    run(async {
        let (a, b) = (group(&server, Duration::from_secs(20)), group(&server, Duration::from_secs(20)));
        let base = warm_base(&server).await;
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut calls = Vec::new();
        for key in 0..KEYS {
            let (a, mut gate) = (a.clone(), gate.clone());
            calls.push(tokio::spawn(async move {
                a.work(format!("k{key}"), move |_| async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(format!("v{key}"))
                })
                .await
            }));
        }
        until_evalsha(&server, base, KEYS as u64).await; // a leads every key
        for key in 0..KEYS {
            let b = b.clone();
            calls.push(tokio::spawn(
                async move { b.work(format!("k{key}"), |_| async { Ok("b".into()) }).await },
            ));
        }
        until_evalsha(&server, base, 2 * KEYS as u64).await; // b follows every key
        let list: String =
            redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query(&mut server.con()).unwrap();
        assert_eq!(list.lines().count(), 2, "one subscriber connection per group:\n{list}");
        release.send(true).unwrap();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap().value(), &format!("v{}", i % KEYS));
        }
        // Each flight unsubscribes as it ends (the warm-up's flight once more); the manager
        // sends them after the calls returned.
        let started = Instant::now();
        while server.commandstats().get("unsubscribe").copied().unwrap_or(0) < 2 * KEYS as u64 + 1 {
            assert!(started.elapsed() < Duration::from_secs(20), "watchdog: the flights did not unsubscribe");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let list: String =
            redis::cmd("PUBSUB").arg("CHANNELS").query::<Vec<String>>(&mut server.con()).unwrap().join(",");
        assert_eq!(list, "", "no channel left subscribed");
    });
}

#[test]
fn flight_after_flight_of_one_key_each_follower_is_woken() {
    let Some(server) = Server::start() else { return };
    run(async {
        // No linger: every round is a new flight, re-subscribing right after the last one's
        // unsubscribe. A lost subscription would leave the follower waiting for the 20 s lease.
        let no_linger = |server: &Server| -> Group {
            RedisGroup::builder(server.client())
                .prefix("t")
                .lease(Duration::from_secs(20))
                .linger(Duration::ZERO)
                .build()
        };
        let (a, b) = (no_linger(&server), no_linger(&server));
        let mut base = warm_base(&server).await;
        for round in 0..10 {
            let (go, finish) = tokio::sync::oneshot::channel::<()>();
            let a2 = a.clone();
            let leader = tokio::spawn(async move {
                a2.work("k", move |_| async move {
                    let _ = finish.await;
                    Ok(format!("round {round}"))
                })
                .await
            });
            until_evalsha(&server, base, 1).await;
            let b2 = b.clone();
            let follower = tokio::spawn(async move { b2.work("k", |_| async { Ok("b".into()) }).await });
            until_evalsha(&server, base, 2).await;
            let started = Instant::now();
            go.send(()).unwrap();
            let followed = follower.await.unwrap().unwrap();
            assert_eq!(
                (followed.value().clone(), followed.origin()),
                (format!("round {round}"), Origin::Woken)
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "woken, not re-checked at the lease's expiry"
            );
            assert_eq!(leader.await.unwrap().unwrap().value(), &format!("round {round}"));
            base = evalsha_calls(&server);
        }
    });
}
