//! A real `redis-server` per test (Unix socket in a temp dir, no persistence), stopped on drop;
//! child processes running this very test binary; `INFO commandstats` counting.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` started for one test, killed (and its directory removed) on drop.
pub struct Server {
    dir: PathBuf,
    child: Option<Child>,
    /// A loopback TCP port instead of the Unix socket.
    port: Option<u16>,
}

static SERVERS: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// A fresh server, or `None` (after a loud message) when `redis-server` is not installed
    /// and `CI` is not `true`. Under `CI=true` a missing server fails the test.
    pub fn start() -> Option<Self> {
        Self::start_on(None)
    }

    /// Like [`start`](Self::start), on a free loopback TCP port.
    pub fn start_tcp() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(Some(port))
    }

    fn start_on(port: Option<u16>) -> Option<Self> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            let message = "redis-server is not installed: the coalescer-redis tests against a real \
                           server are SKIPPED (install it with ci/redis.sh)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message}; CI=true requires it");
            }
            eprintln!("\n!!!!!!!! {message} !!!!!!!!\n");
            return None;
        }
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("coalescer-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self { dir, child: None, port };
        server.spawn();
        Some(server)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn spawn(&mut self) {
        let port = self.port.unwrap_or(0).to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(mut con) = self.client().get_connection() {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Kills the server and starts a new, empty one on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn url(&self) -> String {
        match self.port {
            Some(port) => format!("redis://127.0.0.1:{port}/"),
            None => format!("redis+unix://{}", self.socket().display()),
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    pub fn con(&self) -> redis::Connection {
        self.client().get_connection().expect("connection")
    }

    /// `cmdstat_*` calls, by command name.
    pub fn commandstats(&self) -> HashMap<String, u64> {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut self.con()).expect("INFO");
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?.parse().ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The commands a client of the crate sends itself. `INFO` counts the commands that scripts
/// run too (GET, SET, PUBLISH...): those are left out, as are the test works' own commands.
pub const CLIENT_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "script|load",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "client|setinfo",
    "hello",
    "ping",
    "select",
];

pub fn client_commands(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    CLIENT_COMMANDS.iter().map(|c| after.get(*c).unwrap_or(&0) - before.get(*c).unwrap_or(&0)).sum()
}

pub fn is_child() -> bool {
    std::env::var_os("COALESCER_REDIS_CHILD").is_some()
}

/// Child processes running this test binary's `child_process` test, killed on drop.
pub struct Children {
    pub children: Vec<Child>,
    /// Each child's stdout, read as it comes (a full pipe would block the child).
    outputs: Vec<Option<std::thread::JoinHandle<String>>>,
}

impl Children {
    /// `n` children running this test binary's `child_process` test, each with `env` set.
    pub fn spawn(n: usize, env: &[(&str, String)]) -> Self {
        let mut env = env.to_vec();
        env.push(("COALESCER_REDIS_CHILD", "1".into()));
        Self::spawn_args(n, &["--exact", "child_process", "--nocapture", "--test-threads=1"], &env)
    }

    /// `n` children running this binary with `args`, each with `env` and `CHILD_INDEX` set.
    pub fn spawn_args(n: usize, args: &[&str], env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut children = (0..n)
            .map(|i| {
                let mut cmd = Command::new(&exe);
                cmd.args(args)
                    .env("CHILD_INDEX", i.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit());
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd.spawn().expect("spawn child")
            })
            .collect::<Vec<_>>();
        let outputs = children
            .iter_mut()
            .map(|child| {
                let mut stdout = child.stdout.take().expect("stdout");
                Some(std::thread::spawn(move || {
                    let mut out = String::new();
                    let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
                    out
                }))
            })
            .collect();
        Self { children, outputs }
    }

    pub fn pid_index(&self, pid: u32) -> usize {
        self.children.iter().position(|c| c.id() == pid).expect("a child's pid")
    }

    /// Waits (watchdog: `limit`) for child `i` and returns its `RESULT` lines.
    pub fn wait(&mut self, i: usize, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        let child = &mut self.children[i];
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let out = self.outputs[i].take().expect("waited once").join().expect("stdout reader");
                assert!(status.success(), "child {i} failed: {status}\n{out}");
                // The harness prints `test child_process ... ` before the test's own output.
                return out.lines().filter_map(|l| Some(l[l.find("RESULT ")? + 7..].to_string())).collect();
            }
            assert!(started.elapsed() < limit, "watchdog: child {i} still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.children[i].id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                // A stopped child must be continued to die of anything but SIGKILL; SIGKILL it.
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// `BLPOP list` with a watchdog.
pub fn blpop(con: &mut redis::Connection, list: &str, limit: Duration) -> String {
    let popped: Option<(String, String)> =
        redis::cmd("BLPOP").arg(list).arg(limit.as_secs_f64()).query(con).expect("BLPOP");
    popped.unwrap_or_else(|| panic!("watchdog: nothing on {list} after {limit:?}")).1
}

pub fn socket_exists(path: &Path) -> bool {
    path.exists()
}
