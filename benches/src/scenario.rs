//! The scenarios, each written once against [`Coalesce`] or [`CoalesceBlocking`], and their
//! floor rows (what no coalescer can beat), measured with the same drivers.
//!
//! | scenario | driver | figure |
//! |---|---|---|
//! | S1 distinct keys, instant work, 1 and 2 tasks | [`distinct_keys`] | wall time per call |
//! | S2 1,000 tasks on one key, work sleeps 1 ms | [`fan_out`] | fan-out: work returns → last waiter returns; executions per round |
//! | S3 10,000 waiters on one key | [`fan_out`] | fan-out |
//! | S4 one hot key, 2 tasks, instant work | [`hot_key`] | wall time per call; executions per call |
//! | S1 blocking, 1 and 2 threads | [`distinct_keys_blocking`] | wall time per call |
//! | S3 blocking, a leader thread and a parked follower thread | [`fan_out_blocking`] | fan-out |
//!
//! Shared state is `&'static` (leaked once per benchmark), so that no `Arc` count is bumped by
//! ten thousand tasks in the measured section.

use crate::{BenchKey, Coalesce, CoalesceBlocking};
use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use event_listener::{Event, Listener};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The one key of S2, S3 and S4. S1 uses fresh keys above `1 << 32`.
pub const HOT_KEY: u64 = 0;

/// The value every bench work returns.
pub const VALUE: u64 = 7;

/// A fan-out round that ran its work more than once (a waiter joined after the work returned:
/// it was still queued on the competitor's lock, or its thread was descheduled) is not counted
/// and is run again, unchanged: the same rule for every competitor, and each one's reruns are
/// reported. Only after [`ESCALATE_AFTER`] bad rounds in a row does the work wait longer before
/// it returns (see [`Round`]), which is reported too (a longer wait lets more waiters park before
/// the fan-out, so it could favour the competitor that needed it); this many bad rounds in a
/// row means the competitor does not coalesce.
const MAX_BAD_ROUNDS: usize = 20;

/// Bad fan-out rounds in a row after which the work's extra wait (the settle) doubles.
const ESCALATE_AFTER: u64 = 3;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1 << 32);

/// `n` keys that no call has used yet; returns the first.
fn fresh_keys(n: u64) -> u64 {
    NEXT_KEY.fetch_add(n, Ordering::Relaxed)
}

/// The runtime of the async scenarios: tokio, multi-threaded, two workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Leaks `value`: the benchmarks' shared state lives as long as the process.
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// The CPU time this process has used so far, all threads together
/// (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, nanosecond resolution).
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call, and
    // `CLOCK_PROCESS_CPUTIME_ID` is a clock every Linux kernel has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A timed region of a multi-task figure: its wall time, the process's CPU time during it, and
/// where the tasks ran.
///
/// `cpu / wall` near the number of tasks means they ran in parallel; near 1 they took turns (on
/// one worker, or on one core of a loaded machine), or waited for each other. Every
/// [`PLACEMENT_EVERY`]th call a task notes which worker thread it is on and whether that is the
/// thread the other task last noted (`same` of `samples`): a high share means both tasks were
/// queued on one worker (the scenarios spawn them from outside the runtime, so tokio may put
/// both on the same worker's queue).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timed {
    /// Wall time of all the calls.
    pub wall: Duration,
    /// Process CPU time during them (every thread, the idle worker's searching included).
    pub cpu: Duration,
    /// Placement samples in which the task was on the worker the other task was last seen on.
    pub same: u64,
    /// Placement samples taken.
    pub samples: u64,
}

impl Timed {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: Timed) {
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.same += other.same;
        self.samples += other.samples;
    }
}

/// How often (in calls) a task of a 2-task scenario notes its worker thread: rarely enough that
/// the cache line the tasks share for it costs nothing measurable.
pub const PLACEMENT_EVERY: u64 = 64;

/// One task's last noted worker, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Seen(AtomicUsize);

/// Where the tasks of one timed region ran (see [`Timed`]).
#[derive(Debug, Default)]
struct Placement {
    seen: [Seen; 2],
    same: AtomicU64,
    samples: AtomicU64,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(1);

std::thread_local! {
    /// A small number naming this thread (0 is "not seen yet").
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Placement {
    /// Task `task` (0 or 1) notes where it is and compares with the other task.
    fn sample(&self, task: usize) {
        if task > 1 {
            return;
        }
        let here = THREAD.with(|t| *t);
        self.seen[task].0.store(here, Ordering::Relaxed);
        let other = self.seen[1 - task].0.load(Ordering::Relaxed);
        if other != 0 {
            self.samples.fetch_add(1, Ordering::Relaxed);
            if other == here {
                self.same.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `region` and measures it as a [`Timed`] (the placement counts are `placement`'s).
async fn timed_region<Fut: Future<Output = ()>>(placement: &Placement, region: Fut) -> Timed {
    let (cpu, start) = (process_cpu(), Instant::now());
    region.await;
    let wall = start.elapsed();
    Timed {
        wall,
        cpu: process_cpu().saturating_sub(cpu),
        same: placement.same.load(Ordering::Relaxed),
        samples: placement.samples.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------------------------
// S1: distinct keys.

/// One S1 call: a fresh key, work that returns at once. Implemented for every competitor and
/// for the floor ([`SccFloor`]).
pub trait DistinctCall: Send + Sync + 'static {
    /// Calls with the key numbered `key` ([`BenchKey::fresh`]), which nobody else uses. With
    /// `String` keys the call makes its `String` (one allocation), as a caller that builds its
    /// key from a request does.
    fn call_fresh(&self, key: u64) -> impl Future<Output = u64> + Send + '_;
}

impl<C: Coalesce> DistinctCall for C {
    async fn call_fresh(&self, key: u64) -> u64 {
        let key = C::Key::fresh(key);
        if C::RESETS {
            let value = self.call(key.clone(), || async { VALUE }).await;
            self.reset(&key).await;
            value
        } else {
            self.call(key, || async { VALUE }).await
        }
    }
}

/// The blocking form of [`DistinctCall`].
pub trait DistinctCallBlocking: Sync {
    /// Calls with `key`, which nobody else uses.
    fn call_fresh_blocking(&self, key: u64) -> u64;
}

impl<C: CoalesceBlocking> DistinctCallBlocking for C {
    fn call_fresh_blocking(&self, key: u64) -> u64 {
        self.call_blocking(key, || VALUE)
    }
}

/// The S1 floor: insert a fresh key into a pre-sized `scc::HashMap` and remove it (what every
/// scc-based coalescer does at least once per call).
#[derive(Debug)]
pub struct SccFloor(scc::HashMap<u64, u64>);

impl SccFloor {
    /// A map sized for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(scc::HashMap::with_capacity(capacity))
    }

    fn insert_remove(&self, key: u64) -> u64 {
        let inserted = self.0.insert_sync(key, VALUE).is_ok();
        debug_assert!(inserted, "S1 keys are fresh");
        self.0.remove_sync(&key).map_or(0, |(_, value)| value)
    }
}

impl DistinctCall for SccFloor {
    fn call_fresh(&self, key: u64) -> impl Future<Output = u64> + Send + '_ {
        core::future::ready(self.insert_remove(key))
    }
}

impl DistinctCallBlocking for SccFloor {
    fn call_fresh_blocking(&self, key: u64) -> u64 {
        self.insert_remove(key)
    }
}

/// S1: `tasks` tasks make `calls` calls in all, each with a key nobody else uses. Returns the
/// wall time of all of them, the CPU time and where the tasks ran.
pub async fn distinct_keys<T: DistinctCall>(target: &'static T, tasks: u64, calls: u64) -> Timed {
    let base = fresh_keys(calls);
    let end = base + calls;
    let placement = leak_placement();
    timed_region(placement, async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                tokio::spawn(async move {
                    let mut key = base + t;
                    let mut n = 0u64;
                    while key < end {
                        black_box(target.call_fresh(key).await);
                        key += tasks;
                        n += 1;
                        if n % PLACEMENT_EVERY == 0 {
                            placement.sample(t as usize);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("an S1 task panicked");
        }
    })
    .await
}

/// A fresh [`Placement`] for one timed region (a few dozen bytes leaked per criterion
/// iteration: the spawned tasks need `'static` state, and an `Arc` would add counts to the
/// figure).
fn leak_placement() -> &'static Placement {
    leak(Placement::default())
}

/// S1 on plain threads: `threads` threads make `calls` calls in all. Returns the longest
/// thread's time, measured from a common start (thread spawning is not measured), and the
/// process CPU time and wall time around the whole (spawning included).
pub fn distinct_keys_blocking<T: DistinctCallBlocking>(target: &T, threads: u64, calls: u64) -> Timed {
    let base = fresh_keys(calls);
    let end = base + calls;
    let barrier = Barrier::new(threads as usize);
    let (cpu, start) = (process_cpu(), Instant::now());
    let longest = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut key = base + t;
                    while key < end {
                        black_box(target.call_fresh_blocking(key));
                        key += threads;
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("an S1 thread panicked")).max().unwrap_or_default()
    });
    let (cpu, around) = (process_cpu().saturating_sub(cpu), start.elapsed());
    // The CPU time is over `around`; scale it to the figure's wall time (`longest`).
    let cpu = cpu.mul_f64(longest.as_secs_f64() / around.as_secs_f64().max(1e-9));
    Timed { wall: longest, cpu, same: 0, samples: 0 }
}

// ---------------------------------------------------------------------------------------------
// S2, S3: fan-out.

/// The shared state of fan-out rounds (leak it with [`Round::leak`]).
#[derive(Debug)]
pub struct Round {
    base: Instant,
    /// Tasks per round, the leader included.
    tasks: usize,
    /// How long the work sleeps once every task has joined.
    work_time: Duration,
    /// How much longer it sleeps, in ns: 0, doubled (from `work_time`) after every
    /// [`ESCALATE_AFTER`] bad rounds in a row. A competitor whose waiters queue on an async lock
    /// before they join (the first poll of their call returns `Pending` before they have joined)
    /// may need time for that queue to drain.
    settle: AtomicU64,
    /// Bad rounds since the last good one.
    bad_in_a_row: AtomicU64,
    /// Tasks whose call has been polled once (so has joined the flight).
    joined: AtomicUsize,
    /// Tasks whose call has not returned yet.
    remaining: AtomicUsize,
    /// Executions of the work this round.
    executions: AtomicUsize,
    /// When the work returned, in ns since `base`.
    work_end: AtomicU64,
    /// When the last task's call returned, in ns since `base`.
    last_end: AtomicU64,
    done: tokio::sync::Notify,
}

/// What fan-out rounds measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct FanOut {
    /// Sum over the counted rounds of (last waiter returned − work returned).
    pub time: Duration,
    /// Rounds run, the re-run bad ones included.
    pub rounds: u64,
    /// Executions of the work in all those rounds.
    pub executions: u64,
}

impl FanOut {
    fn add(&mut self, other: FanOut) {
        self.time += other.time;
        self.rounds += other.rounds;
        self.executions += other.executions;
    }
}

impl Round {
    /// Rounds of `tasks` tasks on one key, whose work sleeps `work_time` once all have joined.
    pub fn leak(tasks: usize, work_time: Duration) -> &'static Round {
        leak(Round {
            base: Instant::now(),
            tasks,
            work_time,
            settle: AtomicU64::new(0),
            bad_in_a_row: AtomicU64::new(0),
            joined: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            executions: AtomicUsize::new(0),
            work_end: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            done: tokio::sync::Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn arm(&self) {
        self.joined.store(0, Ordering::Relaxed);
        self.remaining.store(self.tasks, Ordering::Relaxed);
        self.executions.store(0, Ordering::Relaxed);
    }

    /// The work: waits until every task has joined, sleeps, stamps its end, returns.
    async fn work(&'static self) -> u64 {
        self.executions.fetch_add(1, Ordering::Relaxed);
        while self.joined.load(Ordering::Acquire) < self.tasks {
            tokio::task::yield_now().await;
        }
        let settle = Duration::from_nanos(self.settle.load(Ordering::Relaxed));
        tokio::time::sleep(self.work_time + settle).await;
        self.work_end.store(self.now(), Ordering::Release);
        VALUE
    }

    /// A task's call returned; the last one stamps the time and tells the driver.
    fn returned(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.last_end.store(self.now(), Ordering::Release);
            self.done.notify_one();
        }
    }

    /// Waits for the round's last task; returns its fan-out, or `None` for a bad round.
    async fn finish(&self) -> (Option<Duration>, u64) {
        self.done.notified().await;
        let executions = self.executions.load(Ordering::Acquire) as u64;
        let work_end = self.work_end.load(Ordering::Acquire);
        let last_end = self.last_end.load(Ordering::Acquire);
        let time = (executions == 1).then(|| Duration::from_nanos(last_end.saturating_sub(work_end)));
        if time.is_some() {
            self.bad_in_a_row.store(0, Ordering::Relaxed);
        } else if self.bad_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= ESCALATE_AFTER {
            self.bad_in_a_row.store(0, Ordering::Relaxed);
            let settle = self.settle.load(Ordering::Relaxed);
            let longer = (settle * 2).max(self.work_time.as_nanos() as u64);
            self.settle.store(longer, Ordering::Relaxed);
        }
        (time, executions)
    }

    /// The extra wait the work has had to add so far (zero unless bad rounds escalated it).
    pub fn settle(&self) -> Duration {
        Duration::from_nanos(self.settle.load(Ordering::Relaxed))
    }
}

/// Polls `call` and counts it in `round.joined` after its first poll: by then every
/// competitor has joined the flight (or is queued on the lock that joins it). It takes the
/// call pinned by its caller, so that the call future is not stored twice.
async fn counted<F: Future>(round: &Round, mut call: core::pin::Pin<&mut F>) -> F::Output {
    let mut first = true;
    core::future::poll_fn(|cx| {
        let poll = call.as_mut().poll(cx);
        if first {
            first = false;
            round.joined.fetch_add(1, Ordering::Release);
        }
        poll
    })
    .await
}

/// Runs rounds until one executes the work exactly once (a competitor that never does
/// panics), and adds them all up.
async fn until_good<Fut: Future<Output = (Option<Duration>, u64)>>(
    name: &str,
    mut round: impl FnMut() -> Fut,
) -> FanOut {
    let mut total = FanOut::default();
    for _ in 0..MAX_BAD_ROUNDS {
        let (time, executions) = round().await;
        total.rounds += 1;
        total.executions += executions;
        if let Some(time) = time {
            total.time += time;
            return total;
        }
    }
    panic!("{name}: {MAX_BAD_ROUNDS} fan-out rounds in a row ran the work more than once");
}

/// S2/S3: `round.tasks` tasks call with [`HOT_KEY`]; the work returns once all have joined and
/// it has slept. Measures from the work's return to the last task's return.
pub async fn fan_out<C: Coalesce>(group: &'static C, round: &'static Round) -> FanOut {
    until_good(C::NAME, || async {
        round.arm();
        for _ in 0..round.tasks {
            tokio::spawn(async move {
                let call = pin!(group.call(C::Key::fresh(HOT_KEY), move || round.work()));
                let value = counted(round, call).await;
                assert_eq!(value, VALUE);
                round.returned();
            });
        }
        let result = round.finish().await;
        group.reset(&C::Key::fresh(HOT_KEY)).await;
        result
    })
    .await
}

/// `rounds` rounds of [`fan_out`], added up.
pub async fn fan_out_rounds<C: Coalesce>(group: &'static C, round: &'static Round, rounds: u64) -> FanOut {
    let mut total = FanOut::default();
    for _ in 0..rounds {
        total.add(fan_out(group, round).await);
    }
    total
}

/// A flag and the event its waiters sleep on: the bare-wake floor.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicBool,
    event: Event,
}

impl Gate {
    /// Waits until the gate is open (listen, check again, then sleep).
    pub async fn wait(&self) {
        loop {
            if self.open.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.open.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }

    fn wait_blocking(&self) {
        loop {
            if self.open.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.open.load(Ordering::Acquire) {
                return;
            }
            listener.wait();
        }
    }

    /// Opens the gate and wakes every waiter.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }
}

/// The S2/S3 floor: the same rounds, but the first task runs the work and then opens a bare
/// `event_listener::Event` that the others are parked on. No coalescer can fan out faster.
pub async fn fan_out_floor(gate: &'static Gate, round: &'static Round, rounds: u64) -> FanOut {
    let mut total = FanOut::default();
    for _ in 0..rounds {
        round.arm();
        gate.open.store(false, Ordering::Relaxed);
        for i in 0..round.tasks {
            tokio::spawn(async move {
                if i == 0 {
                    round.joined.fetch_add(1, Ordering::Release);
                    black_box(round.work().await);
                    gate.open();
                } else {
                    counted(round, pin!(gate.wait())).await;
                }
                round.returned();
            });
        }
        let (time, executions) = round.finish().await;
        total.add(FanOut { time: time.expect("the floor runs its work once"), rounds: 1, executions });
    }
    total
}

/// S3 on plain threads: a leader thread runs the work, which returns once a follower thread has
/// started its call and 1 ms has passed (so the follower is parked); measures from the work's
/// return to the follower's return. `rounds` rounds, added up.
pub fn fan_out_blocking<C: CoalesceBlocking>(group: &C, rounds: u64) -> FanOut {
    let call = |work: &dyn Fn() -> u64| group.call_blocking(HOT_KEY, work);
    blocking_rounds(C::NAME, rounds, || {}, call, call)
}

/// The blocking S3 floor: the follower thread parks on a bare `Event` that the leader opens.
pub fn fan_out_blocking_floor(rounds: u64) -> FanOut {
    let gate = Gate::default();
    blocking_rounds(
        "floor",
        rounds,
        || gate.open.store(false, Ordering::Relaxed),
        |work| {
            let value = work();
            gate.open();
            value
        },
        |_| {
            gate.wait_blocking();
            VALUE
        },
    )
}

/// The two threads of blocking fan-out rounds: `lead` and `follow` make the leader's and the
/// follower's calls with [`HOT_KEY`]; `arm` runs before each round.
fn blocking_rounds(
    name: &str,
    rounds: u64,
    arm: impl Fn(),
    lead: impl Fn(&dyn Fn() -> u64) -> u64,
    follow: impl Fn(&dyn Fn() -> u64) -> u64 + Sync,
) -> FanOut {
    let executions = AtomicU64::new(0);
    let follower_started = AtomicBool::new(false);
    let leader_working = AtomicBool::new(false);
    let work_end = std::sync::Mutex::new(Instant::now());
    let work = || {
        executions.fetch_add(1, Ordering::Relaxed);
        leader_working.store(true, Ordering::Release);
        while !follower_started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(1));
        *work_end.lock().expect("no panic holds it") = Instant::now();
        VALUE
    };
    let follower_work = || {
        executions.fetch_add(1, Ordering::Relaxed);
        VALUE
    };
    let mut total = FanOut::default();
    let (mut good, mut bad_in_a_row) = (0, 0);
    while good < rounds {
        assert!(
            bad_in_a_row < MAX_BAD_ROUNDS,
            "{name}: {MAX_BAD_ROUNDS} blocking rounds in a row ran the work more than once"
        );
        arm();
        executions.store(0, Ordering::Relaxed);
        follower_started.store(false, Ordering::Relaxed);
        leader_working.store(false, Ordering::Relaxed);
        let follower_end = std::thread::scope(|s| {
            let follower = s.spawn(|| {
                while !leader_working.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                follower_started.store(true, Ordering::Release);
                let value = follow(&follower_work);
                let end = Instant::now();
                assert_eq!(value, VALUE);
                end
            });
            assert_eq!(lead(&work), VALUE);
            follower.join().expect("the follower thread panicked")
        });
        let executions = executions.load(Ordering::Relaxed);
        total.rounds += 1;
        total.executions += executions;
        if executions == 1 {
            let work_end = *work_end.lock().expect("no panic holds it");
            total.time += follower_end.saturating_duration_since(work_end);
            good += 1;
            bad_in_a_row = 0;
        } else {
            bad_in_a_row += 1;
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// S4: one hot key.

/// What S4 measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct HotKey {
    /// Wall time and CPU time of all the calls, and where the tasks ran.
    pub timed: Timed,
    /// Calls made.
    pub calls: u64,
    /// Executions of the work.
    pub executions: u64,
}

/// S4: `tasks` tasks make `calls` calls in all with [`HOT_KEY`] and work that returns at once.
/// `executions` counts the work's runs (leaked once per competitor).
pub async fn hot_key<C: Coalesce>(
    group: &'static C,
    executions: &'static AtomicU64,
    tasks: u64,
    calls: u64,
) -> HotKey {
    let before = executions.load(Ordering::Relaxed);
    let placement = leak_placement();
    let timed = timed_region(placement, async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let mine = calls / tasks + u64::from(t < calls % tasks);
                tokio::spawn(async move {
                    for n in 1..=mine {
                        let work = move || async move {
                            executions.fetch_add(1, Ordering::Relaxed);
                            VALUE
                        };
                        let key = C::Key::fresh(HOT_KEY);
                        if C::RESETS {
                            black_box(group.call(key.clone(), work).await);
                            group.reset(&key).await;
                        } else {
                            black_box(group.call(key, work).await);
                        }
                        if n % PLACEMENT_EVERY == 0 {
                            placement.sample(t as usize);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("an S4 task panicked");
        }
    })
    .await;
    HotKey { timed, calls, executions: executions.load(Ordering::Relaxed) - before }
}

// ---------------------------------------------------------------------------------------------
// The wake-all cost: work that wakes itself K times while W waiters wait.

/// How the work of [`wake_all`] is woken, `k` times, before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfWake {
    /// `tokio::task::yield_now()`: the work wakes itself while it is being polled (the driver
    /// is still in its poll when the waker fires).
    Yield,
    /// A ping-pong with another task: the work waits on a `Notify` that the other task
    /// signals, so each wake comes while nobody is polling the work. The other task runs at
    /// once, so the wakes come faster than the woken waiters are polled.
    PingPong,
    /// `tokio::time::sleep(1 ms)`: each wake comes from the timer while nobody polls the work,
    /// and long enough after the last that every woken waiter has been polled and waits again
    /// (as I/O readiness would).
    Sleep,
}

/// What one [`wake_all`] round cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct WakeCost {
    /// Polls of all the callers' futures (the leader's included), the first ones included.
    pub polls: u64,
    /// Executions of the work.
    pub executions: u64,
    /// Wall time from the first spawn to the last caller's return.
    pub wall: Duration,
    /// Process CPU time over the same span.
    pub cpu: Duration,
}

/// The shared state of a [`wake_all`] round (leaked, one per round).
#[derive(Debug)]
struct WakeRound {
    tasks: usize,
    k: u32,
    how: SelfWake,
    joined: AtomicUsize,
    all_joined: tokio::sync::Notify,
    polls: AtomicU64,
    executions: AtomicU64,
    remaining: AtomicUsize,
    done: tokio::sync::Notify,
    ping: tokio::sync::Notify,
    pong: tokio::sync::Notify,
}

impl WakeRound {
    /// The work: waits (one wake) until every caller has joined, wakes itself `k` times, returns.
    async fn work(&'static self) -> u64 {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.all_joined.notified().await;
        match self.how {
            SelfWake::Yield => {
                for _ in 0..self.k {
                    tokio::task::yield_now().await;
                }
            }
            SelfWake::PingPong => {
                for _ in 0..self.k {
                    self.ping.notify_one();
                    self.pong.notified().await;
                }
            }
            SelfWake::Sleep => {
                for _ in 0..self.k {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        VALUE
    }

    /// The other side of [`SelfWake::PingPong`].
    async fn feeder(&'static self) {
        for _ in 0..self.k {
            self.ping.notified().await;
            self.pong.notify_one();
        }
    }

    /// Polls `call` and counts every poll; counts the caller as joined after its first.
    async fn counted<F: Future>(&self, mut call: core::pin::Pin<&mut F>) -> F::Output {
        let mut first = true;
        core::future::poll_fn(|cx| {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let poll = call.as_mut().poll(cx);
            if first {
                first = false;
                if self.joined.fetch_add(1, Ordering::AcqRel) + 1 == self.tasks {
                    self.all_joined.notify_one();
                }
            }
            poll
        })
        .await
    }

    fn returned(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// Who runs the work of a [`wake_all`] round.
pub trait WakeAllCall: Send + Sync + 'static {
    /// The name in the table.
    fn name(&self) -> &'static str;
    /// One caller of the round: `first` is the one spawned first.
    fn call(
        &'static self,
        first: bool,
        work: impl FnOnce() -> BoxWork + Send + 'static,
    ) -> impl Future<Output = u64> + Send;
    /// Before each round.
    fn arm(&self) {}
}

/// The work future of a [`wake_all`] round.
pub type BoxWork = core::pin::Pin<Box<dyn Future<Output = u64> + Send>>;

/// A competitor as a [`WakeAllCall`].
#[derive(Debug)]
pub struct WakeVia<C>(pub C);

impl<C: Coalesce<Key = u64>> WakeAllCall for WakeVia<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn call(
        &'static self,
        _first: bool,
        work: impl FnOnce() -> BoxWork + Send + 'static,
    ) -> impl Future<Output = u64> + Send {
        self.0.call(HOT_KEY, work)
    }
}

/// The floor of [`wake_all`]: the first caller runs the work and then opens a bare
/// `event_listener::Event` the others wait on.
impl WakeAllCall for Gate {
    fn name(&self) -> &'static str {
        "floor bare Event wake"
    }

    async fn call(&'static self, first: bool, work: impl FnOnce() -> BoxWork + Send + 'static) -> u64 {
        if first {
            let value = work().await;
            self.open();
            value
        } else {
            self.wait().await;
            VALUE
        }
    }

    fn arm(&self) {
        self.open.store(false, Ordering::Relaxed);
    }
}

/// The wake-all scenario: `waiters + 1` tasks call on one key; the work waits until all have
/// joined, then wakes itself `k` times (`how`), then returns. Counts the polls of every
/// caller's future and the process CPU time. A design that wakes every waiter on each wake of
/// the work polls about `k × waiters` times; one that wakes them once, about `2 × waiters`.
pub async fn wake_all<T: WakeAllCall>(target: &'static T, waiters: usize, k: u32, how: SelfWake) -> WakeCost {
    let round = leak(WakeRound {
        tasks: waiters + 1,
        k,
        how,
        joined: AtomicUsize::new(0),
        all_joined: tokio::sync::Notify::new(),
        polls: AtomicU64::new(0),
        executions: AtomicU64::new(0),
        remaining: AtomicUsize::new(waiters + 1),
        done: tokio::sync::Notify::new(),
        ping: tokio::sync::Notify::new(),
        pong: tokio::sync::Notify::new(),
    });
    target.arm();
    let (cpu, start) = (process_cpu(), Instant::now());
    if how == SelfWake::PingPong {
        tokio::spawn(round.feeder());
    }
    for i in 0..=waiters {
        tokio::spawn(async move {
            let work = move || -> BoxWork { Box::pin(round.work()) };
            let value = round.counted(pin!(target.call(i == 0, work))).await;
            assert_eq!(value, VALUE);
            round.returned();
        });
    }
    round.done.notified().await;
    WakeCost {
        polls: round.polls.load(Ordering::Relaxed),
        executions: round.executions.load(Ordering::Relaxed),
        wall: start.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Visit, VisitAny, VisitBlocking, each_async, each_blocking, each_string, each_variant};

    struct Check(tokio::runtime::Runtime);

    /// Aborts the test process if the test holding it runs for more than `secs` seconds (a
    /// lost wake-up would otherwise hang CI); dropping it disarms it.
    struct Watchdog(std::sync::mpsc::Sender<()>);

    fn watchdog(secs: u64) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_secs(secs))
            {
                eprintln!("watchdog: a benches test ran for more than {secs} s; aborting");
                std::process::abort();
            }
        });
        Watchdog(tx)
    }

    impl Drop for Watchdog {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    impl Visit for Check {
        fn visit<C: Coalesce<Key = u64>>(&mut self) {
            VisitAny::visit::<C>(self);
        }
    }

    impl VisitAny for Check {
        fn visit<C: Coalesce>(&mut self) {
            let group = leak(C::with_capacity(crate::CAPACITY));
            let round = Round::leak(100, Duration::from_millis(1));
            let fan = self.0.block_on(fan_out_rounds(group, round, 3));
            assert_eq!(fan.rounds, fan.executions, "{}", C::NAME);
            self.0.block_on(distinct_keys(group, 2, 1_000));
            let executions = leak(AtomicU64::new(0));
            let hot = self.0.block_on(hot_key(group, executions, 2, 1_000));
            assert!(hot.executions >= 1 && hot.executions <= hot.calls, "{}", C::NAME);
        }
    }

    impl VisitBlocking for Check {
        fn visit<C: CoalesceBlocking>(&mut self) {
            let group = C::with_capacity(crate::CAPACITY);
            let fan = fan_out_blocking(&group, 3);
            assert!(fan.rounds >= 3 && fan.time > Duration::ZERO, "{}", C::NAME);
            distinct_keys_blocking(&group, 2, 1_000);
        }
    }

    #[test]
    fn every_competitor_coalesces_in_every_scenario() {
        let _watchdog = watchdog(300);
        let mut check = Check(runtime());
        each_async(&mut check);
        each_blocking(&mut check);
    }

    #[test]
    fn every_variant_coalesces_with_string_and_u64_keys() {
        let _watchdog = watchdog(300);
        let mut check = Check(runtime());
        each_string(&mut check);
        each_variant::<String>(&mut check);
        each_variant::<u64>(&mut check);
    }

    #[test]
    fn string_keys_are_distinct_and_one_allocation_long() {
        let _watchdog = watchdog(300);
        let keys: std::collections::HashSet<String> = (0..1_000).map(<String as BenchKey>::fresh).collect();
        assert_eq!(keys.len(), 1_000);
        let key = <String as BenchKey>::fresh(u64::MAX);
        assert_eq!((key.as_str(), key.capacity()), ("key:ffffffffffffffff", 20));
    }

    #[test]
    fn two_tasks_report_their_cpu_time_and_placement() {
        let _watchdog = watchdog(300);
        let rt = runtime();
        let group = leak(<crate::CoalescerWork as Coalesce>::with_capacity(crate::CAPACITY));
        let timed = rt.block_on(distinct_keys(group, 2, 100 * PLACEMENT_EVERY));
        assert!(timed.cpu > Duration::ZERO && timed.wall > Duration::ZERO);
        assert!(timed.samples > 0 && timed.same <= timed.samples, "{timed:?}");
    }

    #[test]
    fn wake_all_counts_every_poll_of_every_caller() {
        let _watchdog = watchdog(300);
        let rt = runtime();
        let work = leak(WakeVia(<crate::CoalescerWork as Coalesce>::with_capacity(crate::CAPACITY)));
        let shared = leak(WakeVia(<crate::CoalescerShared as Coalesce>::with_capacity(crate::CAPACITY)));
        let gate = leak(Gate::default());
        for how in [SelfWake::Yield, SelfWake::PingPong, SelfWake::Sleep] {
            for cost in [
                rt.block_on(wake_all(work, 100, 10, how)),
                rt.block_on(wake_all(shared, 100, 10, how)),
                rt.block_on(wake_all(gate, 100, 10, how)),
            ] {
                assert_eq!(cost.executions, 1, "{how:?}: {cost:?}");
                // Every caller is polled at least once to join and once to return, and the
                // work's `k` wakes poll whoever drives it.
                assert!(cost.polls >= 101 + 10, "{how:?}: {cost:?}");
            }
        }
    }

    #[test]
    fn the_floors_run() {
        let _watchdog = watchdog(300);
        let rt = runtime();
        let round = Round::leak(100, Duration::from_millis(1));
        let fan = rt.block_on(fan_out_floor(leak(Gate::default()), round, 3));
        assert_eq!(fan.executions, 3);
        let scc = leak(SccFloor::with_capacity(crate::CAPACITY));
        rt.block_on(distinct_keys(scc, 2, 1_000));
        distinct_keys_blocking(scc, 2, 1_000);
        assert!(fan_out_blocking_floor(3).rounds >= 3);
    }
}
