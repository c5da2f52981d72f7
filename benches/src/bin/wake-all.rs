//! The cost of shared work's wake-all (issue 18): W waiters wait on one key while the work wakes
//! itself K times, by yielding (the waker fires while the work is being polled), by a ping-pong
//! with another task (it fires while nobody polls the work, faster than the woken waiters are
//! polled) or by sleeping 1 ms (it fires from the timer once every waiter waits again, as I/O
//! readiness would). Prints, per design and
//! kind of wake, the polls of all the callers' futures (per waiter), the process CPU time and
//! the wall time of a round, as a markdown table (the median of ROUNDS rounds).
//!
//! ```text
//! wake-all [WAITERS [K [ROUNDS]]]      default 10000 100 3
//! ```
//!
//! `coalescer work` (the leader's future drives the work), `work_shared` (any waiter drives it),
//! detached (a spawned task drives it), the std mutex design (the leader drives it) and the floor
//! (the first task runs the work, then opens a bare `event_listener::Event`). A design that wakes
//! every waiter on each wake of the work polls about K × W times; one that wakes them once, 2 × W.

use coalescer_benches::scenario::{self, Gate, SelfWake, WakeAllCall, WakeCost, WakeVia, leak};
use coalescer_benches::{
    CAPACITY, Coalesce, CoalescerDetached, CoalescerShared, CoalescerWork, StdMutexGroup,
};
use std::time::Duration;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Table {
    rt: tokio::runtime::Runtime,
    waiters: usize,
    k: u32,
    rounds: usize,
}

impl Table {
    fn row<T: WakeAllCall>(&self, target: &'static T, how: SelfWake) {
        let costs: Vec<WakeCost> = (0..self.rounds)
            .map(|_| self.rt.block_on(scenario::wake_all(target, self.waiters, self.k, how)))
            .collect();
        assert!(costs.iter().all(|c| c.executions == 1), "{}: the work ran more than once", target.name());
        let polls = median(costs.iter().map(|c| c.polls as f64).collect());
        let cpu = median(costs.iter().map(|c| c.cpu.as_secs_f64()).collect());
        let wall = median(costs.iter().map(|c| c.wall.as_secs_f64()).collect());
        println!(
            "| {} | {how:?} | {polls:.0} | {:.1} | {:.1} ms | {:.1} ms |",
            target.name(),
            polls / (self.waiters + 1) as f64,
            cpu * 1e3,
            wall * 1e3,
        );
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let table = Table {
        rt: scenario::runtime(),
        waiters: arg(&args, 0, 10_000),
        k: arg(&args, 1, 100),
        rounds: arg(&args, 2, 3).max(1),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Wake-all: {} waiters, the work wakes itself {} times; median of {} rounds; tokio, 2 workers; \
         load average at the start: {}\n",
        table.waiters,
        table.k,
        table.rounds,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| design | self-wake | polls of the callers | per caller | process CPU | wall |");
    println!("|---|---|---:|---:|---:|---:|");
    let work = leak(WakeVia(<CoalescerWork as Coalesce>::with_capacity(CAPACITY)));
    let shared = leak(WakeVia(<CoalescerShared as Coalesce>::with_capacity(CAPACITY)));
    let detached = leak(WakeVia(<CoalescerDetached as Coalesce>::with_capacity(CAPACITY)));
    let mutex = leak(WakeVia(<StdMutexGroup as Coalesce>::with_capacity(CAPACITY)));
    let floor = leak(Gate::default());
    for how in [SelfWake::Yield, SelfWake::PingPong, SelfWake::Sleep] {
        table.row(work, how);
        table.row(shared, how);
        table.row(detached, how);
        table.row(mutex, how);
        table.row(floor, how);
    }
    // Let detached tasks and the runtime wind down before the process exits.
    table.rt.shutdown_timeout(Duration::from_secs(1));
}
