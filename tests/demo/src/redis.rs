//! `--processes N [--redis URL]` (parsed in [`crate::args`]): the stampede across processes. N copies of the demo, on one
//! SQLite file, each fire `--requests` concurrent requests for one report at the same moment,
//! twice: coalesced locally only (one query per process), then through `coalescer-redis` (one
//! query in all). Without `--redis`, a local `redis-server` is started on a Unix socket in a
//! temp dir (and stopped at the end); a clear error says so when there is none.
//!
//! Each process counts the report queries SQLite itself started (its trace hook) and checks
//! every answer against the report it computes itself beforehand; the parent adds them up.

use crate::burst::query;
use crate::db::{Db, ProductSales, QueryError, Report, Ticket};
use crate::{BoxError, Settings};
use coalescer_redis::{Codec, RedisGroup, redis};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD: &str = "STAMPEDE_REDIS_CHILD";
const SCENARIOS: [(&str, &str); 2] =
    [("local", "coalesced in each process only"), ("redis", "coalescer-redis across the processes")];

/// Whether this process is one that [`run`] started (it then runs [`child_main`], whatever its
/// command line).
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// The body of a process that [`run`] started: fires its burst when told, prints its tally.
pub fn child_main() -> ExitCode {
    match child() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stampede: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs both scenarios across `processes` processes; returns the table.
///
/// # Errors
///
/// No `redis-server` (without a URL), Redis unreachable, the database, or a child failing.
pub fn run(settings: &Settings, processes: usize, url: Option<String>) -> Result<String, BoxError> {
    let progress = indicatif::ProgressBar::hidden();
    Db::open_or_seed(&settings.db_path, settings.shape, &progress)?;
    let server = match url {
        Some(_) => None,
        None => Some(LocalServer::start()?),
    };
    let url = url.unwrap_or_else(|| server.as_ref().map(LocalServer::url).unwrap_or_default());
    let client = redis::Client::open(url.as_str())?;
    let mut control = client.get_connection_with_timeout(Duration::from_secs(2))?;
    // A fresh prefix per run: nothing left from an earlier run (a lingering result) serves it.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let prefix = format!("stampede:{}:{}", std::process::id(), now.as_nanos());
    let mut out = format!(
        "{processes} processes x {} concurrent requests for one report, on {}; redis {url}\n\n",
        settings.requests,
        settings.db_path.display()
    );
    out.push_str(
        "| scenario | report queries, all processes | per process | wrong answers | errors | burst time |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    for (scenario, label) in SCENARIOS {
        let prefix = format!("{prefix}:{scenario}");
        let children = Children(
            (0..processes)
                .map(|index| spawn(settings, scenario, &url, &prefix, index))
                .collect::<Result<_, _>>()?,
        );
        // Start every process's burst at once: each says it is ready (database open,
        // reference report computed), then all are let go.
        for _ in 0..processes {
            let ready: Option<(String, String)> =
                redis::cmd("BLPOP").arg(format!("{prefix}:ready")).arg(60).query(&mut control)?;
            ready.ok_or("a demo process did not get ready within 60 s")?;
        }
        for index in 0..processes {
            let _: () = redis::cmd("RPUSH").arg(format!("{prefix}:go:{index}")).arg(1).query(&mut control)?;
        }
        let mut total = Tally::default();
        for child in children.finish()? {
            total.add(&child);
        }
        out.push_str(&format!(
            "| {label} | {} | {:.2} | {} | {} | {:.0?} |\n",
            total.queries,
            total.queries as f64 / processes as f64,
            total.wrong,
            total.errors,
            total.time
        ));
    }
    Ok(out)
}

fn spawn(
    settings: &Settings,
    scenario: &str,
    url: &str,
    prefix: &str,
    index: usize,
) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .env(CHILD, scenario)
        .env("STAMPEDE_REDIS_URL", url)
        .env("STAMPEDE_REDIS_PREFIX", prefix)
        .env("STAMPEDE_REDIS_INDEX", index.to_string())
        .env("STAMPEDE_DB", &settings.db_path)
        .env("STAMPEDE_ORDERS", settings.shape.orders.to_string())
        .env("STAMPEDE_CATEGORIES", settings.shape.categories.to_string())
        .env("STAMPEDE_REQUESTS", settings.requests.to_string())
        .stdout(Stdio::piped())
        .spawn()
}

/// What one process counted.
#[derive(Debug, Default)]
struct Tally {
    queries: u64,
    wrong: u64,
    errors: u64,
    time: Duration,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.queries += other.queries;
        self.wrong += other.wrong;
        self.errors += other.errors;
        self.time = self.time.max(other.time);
    }

    fn parse(out: &str) -> Option<Self> {
        let line = out.lines().find_map(|l| l.strip_prefix("TALLY "))?;
        let n: Vec<u64> = line.split(' ').filter_map(|n| n.parse().ok()).collect();
        Some(Self { queries: n[0], wrong: n[1], errors: n[2], time: Duration::from_micros(n[3]) })
    }
}

/// The child processes, killed if the parent leaves early.
struct Children(Vec<Child>);

impl Children {
    fn finish(mut self) -> Result<Vec<Tally>, BoxError> {
        let mut tallies = Vec::new();
        for child in std::mem::take(&mut self.0) {
            let output = child.wait_with_output()?;
            let out = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                return Err(format!("a demo process failed ({}): {out}", output.status).into());
            }
            tallies.push(Tally::parse(&out).ok_or("a demo process printed no tally")?);
        }
        Ok(tallies)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn child() -> Result<(), BoxError> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let scenario = var(CHILD)?;
    let (url, prefix, index) =
        (var("STAMPEDE_REDIS_URL")?, var("STAMPEDE_REDIS_PREFIX")?, var("STAMPEDE_REDIS_INDEX")?);
    let requests: usize = var("STAMPEDE_REQUESTS")?.parse()?;
    let shape = crate::db::Shape {
        orders: var("STAMPEDE_ORDERS")?.parse()?,
        categories: var("STAMPEDE_CATEGORIES")?.parse()?,
    };
    let (db, _) =
        Db::open_or_seed(&PathBuf::from(var("STAMPEDE_DB")?), shape, &indicatif::ProgressBar::hidden())?;
    let db = Arc::new(db);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let tally = runtime.block_on(async move {
        const KEY: i64 = 0;
        let truth = db.report(KEY, &Ticket::default())?;
        let client = redis::Client::open(url)?;
        let mut control = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await?;
        let local = Arc::new(coalescer::TryGroup::<i64, Arc<Report>, QueryError>::new().shared());
        let fleet: RedisGroup<Arc<Report>, QueryError, ReportCodec> =
            RedisGroup::builder(client).prefix(prefix.clone()).codec(ReportCodec).build();
        let before = db.log().total();
        let _: () =
            redis::cmd("RPUSH").arg(format!("{prefix}:ready")).arg(&index).query_async(&mut control).await?;
        let _: (String, String) =
            redis::cmd("BLPOP").arg(format!("{prefix}:go:{index}")).arg(0).query_async(&mut control).await?;
        let started = Instant::now();
        let calls: Vec<_> = (0..requests)
            .map(|_| {
                let (db, local, fleet, scenario) =
                    (db.clone(), local.clone(), fleet.clone(), scenario.clone());
                tokio::spawn(async move {
                    if scenario == "redis" {
                        let work = move |_| query(db, KEY);
                        fleet
                            .work(KEY.to_string(), work)
                            .await
                            .map(|s| s.into_value())
                            .map_err(|e| e.to_string())
                    } else {
                        let work = move || query(db, KEY);
                        local.try_work(&KEY, work).await.map(|o| o.into_value()).map_err(|e| e.to_string())
                    }
                })
            })
            .collect();
        let mut tally = Tally::default();
        for call in calls {
            match call.await? {
                Ok(report) if *report == truth => {}
                Ok(_) => tally.wrong += 1,
                Err(_) => tally.errors += 1,
            }
        }
        tally.time = started.elapsed();
        tally.queries = db.log().total() - before;
        Ok::<_, BoxError>(tally)
    })?;
    println!("TALLY {} {} {} {}", tally.queries, tally.wrong, tally.errors, tally.time.as_micros());
    Ok(())
}

/// A report as lines of tab-separated fields (floats in Rust's shortest round-trip form).
#[derive(Clone, Copy, Debug)]
struct ReportCodec;

impl Codec<Arc<Report>> for ReportCodec {
    type Error = std::io::Error;

    fn encode(&self, report: &Arc<Report>) -> Result<Vec<u8>, Self::Error> {
        let mut out = String::new();
        for r in report.iter() {
            if r.name.contains(['\t', '\n']) {
                return Err(std::io::Error::other("a product name with a tab or a newline"));
            }
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                r.product_id, r.name, r.orders, r.units, r.revenue, r.avg_price
            ));
        }
        Ok(out.into_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Arc<Report>, Self::Error> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a report");
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let row = |line: &str| -> Option<ProductSales> {
            let f: Vec<&str> = line.split('\t').collect();
            (f.len() == 6).then_some(())?;
            Some(ProductSales {
                product_id: f[0].parse().ok()?,
                name: f[1].to_string(),
                orders: f[2].parse().ok()?,
                units: f[3].parse().ok()?,
                revenue: f[4].parse().ok()?,
                avg_price: f[5].parse().ok()?,
            })
        };
        text.lines().map(|line| row(line).ok_or_else(bad)).collect::<Result<Vec<_>, _>>().map(Arc::new)
    }
}

/// A `redis-server` on a Unix socket in a temp dir, without persistence, stopped on drop.
struct LocalServer {
    dir: PathBuf,
    child: Child,
}

impl LocalServer {
    fn start() -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("stampede-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(dir.join("redis.sock"))
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "--processes without --redis URL starts a local redis-server, and none could be \
                     started ({e}); install one (ci/redis.sh does) or pass --redis redis://host:port/"
                )
            })?;
        let server = Self { dir, child };
        let client = redis::Client::open(server.url().as_str())?;
        let started = Instant::now();
        while client.get_connection().is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the local redis-server did not start within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_codec_round_trips_floats_exactly() {
        let report: Arc<Report> = Arc::new(vec![ProductSales {
            product_id: 3,
            name: "Widget 3".into(),
            orders: 10,
            units: 31,
            revenue: 0.1 + 0.2,
            avg_price: 1.0 / 3.0,
        }]);
        let decoded = ReportCodec.decode(&ReportCodec.encode(&report).unwrap()).unwrap();
        assert_eq!(decoded, report);
        assert!(ReportCodec.decode(b"1\t2").is_err());
    }
}
