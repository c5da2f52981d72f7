//! Soak: millions of calls over a few keys, from a multi-threaded tokio runtime and from plain
//! threads at once, in work, shared-work and blocking modes, with random follower and leader
//! drops, timeouts (`Timeout` with `tokio::time::sleep`), panics in the work and `forget`s.
//!
//! Ignored by default; `ci/soak.sh SECONDS` runs it (`COALESCER_SOAK_SECS`, default 20) in
//! release mode. It checks, for the whole run:
//!
//! * **No overlap.** No two executions of one key run at the same time unless a `forget` was
//!   called in between: each execution registers itself with its key while it runs (until its
//!   work future is dropped), together with the number of forgets of the key that had finished
//!   when its caller began. Two executions of a key running at once, with no forget started
//!   but those finished before either caller began, is a violation (neither flight was
//!   detached, so they are one flight, or one outlived its flight's place in the map).
//! * **Right value.** A caller that waited to the end got a value produced by the flight it
//!   joined: the value names its key; no caller had returned with it before this call began
//!   (the flight was gone by then); no forget that started after the value's execution began
//!   had finished before this call began (the flight was detached by then); and the caller is
//!   the value's leader exactly when its own closure made it (not merely its caller's: a
//!   shared flight that a caller left may be joined again by its next call). An `Aborted` is
//!   the injected panic, and a resumed panic is the injected one.
//! * **No hang.** A watchdog fails the run when a caller makes no progress for 30 s.
//! * **Empty when quiet.** Every few seconds all callers pause between calls: the group must
//!   then be idle and no execution running.
//! * **No growth.** Resident memory (`VmRSS` of `/proc/self/status`, sampled at those quiet
//!   points) of the last tenth of the run is no more than that of the first tenth plus a
//!   tolerance (see [`RSS_TOLERANCE_BYTES`]).
//!
//! **User code that panics outside the work's poll** (issue 11), with `SOAK_USER_PANICS=1`:
//! about one value in 200 has a `Clone` that panics once (whichever caller's clone it is), and
//! about one work future in 200 (not the blocking ones) has a `Drop` that panics, after the work
//! returned or, for shared work, when its last caller leaves it. The contract's outcomes are
//! the checks: the panic of a clone reaches only the caller whose clone it was (resumed in its
//! call), every other caller still gets the value; a panicking drop after the work returned
//! leaves the flight with its value (the followers get it) and resumes the panic in the caller
//! that ran the work; a panicking drop of abandoned shared work comes out of the last caller's
//! drop of its future; never `Aborted` for either, and never a hang or a stuck key (the
//! watchdog and the quiet points). Off by default (`ci/soak.sh` says how to flip it): the core
//! before issue 11's fix hangs on it, the fixed core passes.
//!
//! For diagnosis, `COALESCER_SOAK_KNOBS` (comma-separated) narrows the mix: `noforget`,
//! `nopanic`, `noclonepanic` and `nodroppanic` (with `SOAK_USER_PANICS=1`), `nocancel` (async
//! callers wait to the end), `noblocking` (plain threads only block
//! on async calls), `shared` or `work` (the async callers' mode); and `trace` keeps the last 200
//! events of each key (calls, executions, forgets) and prints the key's on a violation.

use coalescer::futures::Timeout;
use coalescer::{Aborted, Group, Outcome};
use futures_lite::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

const KEYS: usize = 8;
const ASYNC_CALLERS: usize = 48;
const THREAD_CALLERS: usize = 3;
const CALLERS: usize = ASYNC_CALLERS + THREAD_CALLERS;
/// A caller that makes no progress for this long is hung.
const HANG: Duration = Duration::from_secs(30);
const INJECTED: &str = "soak: injected panic in the work";
/// The panic of a value's `Clone` (with `SOAK_USER_PANICS=1`).
const CLONE_INJECTED: &str = "soak: injected panic in a clone of the value";
/// The panic of the work's `Drop` (with `SOAK_USER_PANICS=1`).
const DROP_INJECTED: &str = "soak: injected panic in the drop of the work";
/// How much resident memory the last tenth of the run may have above the first tenth: 4 MiB,
/// about the whole process's resident size here. The allocator keeps freed memory in per-thread
/// arenas and caches and hands it back unevenly, the map and tokio's task and timer slabs grow
/// to a high-water mark that the first tenth may not have reached yet, and pages are counted
/// when touched; none of that grows with the number of calls. A leak does: one allocation of
/// 16 bytes per call is 80 MiB over the five million calls of a 20-second run.
const RSS_TOLERANCE_BYTES: u64 = 4 << 20;

type SoakGroup = Group<u8, Val>;
type SharedSoakGroup = coalescer::SharedGroup<u8, Val>;

/// Whether `key` lives in the shared group (odd keys) or the inline one (even keys): a group's
/// mode is its type, so each key's calls go to one group, of one mode. The knobs `shared` and
/// `work` put every key in one of them.
fn is_shared_key(key: u8) -> bool {
    knob("shared") || (!knob("work") && key % 2 == 1)
}

/// A call's future, whichever group it went to.
type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome<Val>, Aborted>> + Send + 'a>>;

/// Whether the run mixes in panicking clones and drops (`SOAK_USER_PANICS=1`).
fn user_panics() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SOAK_USER_PANICS").is_ok_and(|v| v == "1"))
}

/// The flight's value: every caller gets a clone of the same `Arc`. Its `Clone` panics once
/// when the execution was made so ([`Exec::clone_panics`]).
#[derive(Debug)]
struct Val(Arc<Exec>);

impl Clone for Val {
    fn clone(&self) -> Self {
        if self.0.clone_panics.swap(false, SeqCst) {
            std::panic::panic_any(CLONE_INJECTED);
        }
        Self(self.0.clone())
    }
}

impl std::ops::Deref for Val {
    type Target = Exec;

    fn deref(&self) -> &Exec {
        &self.0
    }
}

/// What one execution of the work produced; every caller of its flight gets the same `Arc`.
#[derive(Debug)]
struct Exec {
    key: u8,
    id: u64,
    /// The call whose closure started this execution (its `began` number).
    call: u64,
    /// The key's forget count when the execution started (after its flight was created).
    forgets_at_start: u64,
    /// The sequence number at which the first caller returned with this value.
    first_returned: AtomicU64,
    /// The next clone of the value panics.
    clone_panics: AtomicBool,
}

#[derive(Default)]
struct KeyState {
    /// Forgets started and finished; one at a time per key (`forget_lock`), so "finished >= n"
    /// means the n-th forget is over.
    forgets_started: AtomicU64,
    forgets_finished: AtomicU64,
    forget_lock: Mutex<()>,
    /// The executions of this key running now.
    running: Mutex<Vec<Running>>,
}

/// How a call runs its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `work`, from a tokio task.
    Work,
    /// shared-mode `work`, from a tokio task.
    Shared,
    /// `work_blocking`, from a plain thread.
    Blocking,
    /// shared-mode `work` blocked on from a plain thread.
    SharedOnThread,
    /// `work` blocked on from a plain thread.
    WorkOnThread,
}

/// An execution of a key, while it runs (until its work future is dropped).
#[derive(Clone, Debug)]
struct Running {
    id: u64,
    /// The call whose closure started it, and how.
    call: u64,
    mode: Mode,
    /// The forgets of its key that had finished when its caller began (a forget that had only
    /// started then may still detach the flight the caller joins).
    forgets_seen: u64,
    /// It panicked and waits to be dropped.
    panicked: bool,
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    values: AtomicU64,
    aborted: AtomicU64,
    resumed_panics: AtomicU64,
    clone_panics: AtomicU64,
    drop_panics: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    forgets: AtomicU64,
    executions: AtomicU64,
}

struct Soak {
    group: SoakGroup,
    shared: SharedSoakGroup,
    keys: [KeyState; KEYS],
    seq: AtomicU64,
    exec_ids: AtomicU64,
    tally: Tally,
    violations: Mutex<Vec<String>>,
    pause: AtomicBool,
    paused: AtomicUsize,
    stop: AtomicBool,
    started: Instant,
    /// Per caller: milliseconds since `started` of its last sign of progress (`u64::MAX` once
    /// it has stopped), and the call it is in (key, mode, sequence number), for a hang report.
    heartbeat: Vec<AtomicU64>,
    doing: Vec<Mutex<Option<(u8, Mode, u64)>>>,
}

impl Soak {
    fn new() -> Self {
        Self {
            group: Group::with_capacity(4 * KEYS),
            shared: Group::with_capacity(4 * KEYS).shared(),
            keys: Default::default(),
            seq: AtomicU64::new(0),
            exec_ids: AtomicU64::new(0),
            tally: Tally::default(),
            violations: Mutex::new(Vec::new()),
            pause: AtomicBool::new(false),
            paused: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            heartbeat: (0..CALLERS).map(|_| AtomicU64::new(0)).collect(),
            doing: (0..CALLERS).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn violation(&self, message: String) {
        let mut violations = self.violations.lock().unwrap();
        if violations.len() < 20 {
            eprintln!("soak: VIOLATION: {message}");
            violations.push(message);
        }
        self.stop.store(true, SeqCst);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn beat(&self, caller: usize) {
        self.heartbeat[caller].store(self.now_ms(), SeqCst);
    }

    fn doing(&self, caller: usize, call: Option<(u8, Mode, u64)>) {
        if let Some((key, mode, began)) = call {
            trace(key, || format!("call {began} begins {mode:?} (caller {caller})"));
        }
        *self.doing[caller].lock().unwrap() = call;
    }

    fn forget(&self, key: u8) {
        let state = &self.keys[usize::from(key)];
        let Ok(_one_at_a_time) = state.forget_lock.try_lock() else { return };
        let n = state.forgets_started.fetch_add(1, SeqCst) + 1;
        trace(key, || format!("forget #{n} start"));
        let d = if is_shared_key(key) { self.shared.forget(&key) } else { self.group.forget(&key) };
        if d {
            self.tally.forgets.fetch_add(1, SeqCst);
        }
        trace(key, || format!("forget #{n} done detached={d}"));
        state.forgets_finished.fetch_add(1, SeqCst);
    }

    /// Between calls: waits while the coordinator holds the callers still.
    fn quiet_point_sync(&self, caller: usize) {
        if !self.pause.load(SeqCst) {
            return;
        }
        self.paused.fetch_add(1, SeqCst);
        while self.pause.load(SeqCst) {
            self.beat(caller);
            std::thread::sleep(Duration::from_millis(1));
        }
        self.paused.fetch_sub(1, SeqCst);
    }

    async fn quiet_point(&self, caller: usize) {
        if !self.pause.load(SeqCst) {
            return;
        }
        self.paused.fetch_add(1, SeqCst);
        while self.pause.load(SeqCst) {
            self.beat(caller);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.paused.fetch_sub(1, SeqCst);
    }
}

/// xorshift64*: a reproducible stream per caller, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// True with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One caller's view of a call, taken before it joins.
struct Call {
    key: u8,
    caller: usize,
    /// The key's forgets finished when the call began.
    forgets_finished: u64,
    /// The global sequence number when the call began.
    began: u64,
}

impl Call {
    fn begin(soak: &Soak, rng: &mut Rng, caller: usize) -> Self {
        let key = rng.below(KEYS as u64) as u8;
        let state = &soak.keys[usize::from(key)];
        soak.tally.calls.fetch_add(1, SeqCst);
        Self {
            key,
            caller,
            forgets_finished: state.forgets_finished.load(SeqCst),
            began: soak.seq.fetch_add(1, SeqCst),
        }
    }

    fn job(&self, soak: &Arc<Soak>, rng: &mut Rng) -> Job {
        Job {
            soak: soak.clone(),
            key: self.key,
            call: self.began,
            forgets_seen: self.forgets_finished,
            yields: rng.below(24) as u32,
            panics: !knob("nopanic") && rng.below(300) == 0,
            clone_panics: user_panics() && !knob("noclonepanic") && rng.below(200) == 0,
            drop_panics: user_panics() && !knob("nodroppanic") && rng.below(200) == 0,
            started: false,
            returned: false,
            mode: Mode::Work,
            running: None,
        }
    }

    /// Checks what the call returned (`None`: it was dropped before the end).
    fn check(&self, soak: &Soak, result: Result<Result<Outcome<Val>, Aborted>, String>) {
        trace(self.key, || match &result {
            Ok(Ok(o)) => format!("call {} ends: exec {} leader={}", self.began, o.value().id, o.is_leader()),
            Ok(Err(_)) => format!("call {} ends: aborted", self.began),
            Err(_) => format!("call {} ends: panic", self.began),
        });
        match result {
            Ok(Ok(outcome)) => self.check_value(soak, &outcome),
            Ok(Err(aborted)) => {
                soak.tally.aborted.fetch_add(1, SeqCst);
                if !aborted.is_panic() || aborted.message() != Some(INJECTED) {
                    soak.violation(format!("key {}: unexpected {aborted:?}", self.key));
                }
            }
            // A clone's panic reaches the caller whose clone it was; a drop's panic after the
            // work returned, the caller that ran the work.
            Err(message) if user_panics() && message == CLONE_INJECTED => {
                soak.tally.clone_panics.fetch_add(1, SeqCst);
            }
            Err(message) if user_panics() && message == DROP_INJECTED => {
                soak.tally.drop_panics.fetch_add(1, SeqCst);
            }
            Err(message) => {
                soak.tally.resumed_panics.fetch_add(1, SeqCst);
                if message != INJECTED {
                    soak.violation(format!("key {}: unexpected panic {message:?}", self.key));
                }
            }
        }
    }

    fn check_value(&self, soak: &Soak, outcome: &Outcome<Val>) {
        soak.tally.values.fetch_add(1, SeqCst);
        let exec = outcome.value();
        let returned = soak.seq.fetch_add(1, SeqCst);
        let first = exec.first_returned.fetch_min(returned, SeqCst);
        let key = self.key;
        if exec.key != key {
            soak.violation(format!("a call for key {key} got execution {} of key {}", exec.id, exec.key));
        }
        if first < self.began {
            soak.violation(format!(
                "key {key}: stale value: execution {} was returned at {first}, before this call began at {}",
                exec.id, self.began
            ));
        }
        if self.forgets_finished > exec.forgets_at_start {
            soak.violation(format!(
                "key {key}: execution {} is of a flight forgotten before this call began \
                 ({} forgets finished then; {} had started when it began)",
                exec.id, self.forgets_finished, exec.forgets_at_start
            ));
        }
        if outcome.is_leader() != (exec.call == self.began) {
            soak.violation(format!(
                "key {key}: call {} of caller {} got execution {} (made by call {}) with is_leader {}",
                self.began,
                self.caller,
                exec.id,
                exec.call,
                outcome.is_leader()
            ));
        }
    }
}

/// The work: registers itself as running on its key (checking that no other execution of the
/// key runs without a forget in between), yields a few times, may panic, returns its `Exec`.
struct Job {
    soak: Arc<Soak>,
    key: u8,
    call: u64,
    forgets_seen: u64,
    yields: u32,
    panics: bool,
    /// Its value's first clone panics.
    clone_panics: bool,
    /// Its `Drop` panics after it returned, or (shared work) when it is dropped unfinished.
    drop_panics: bool,
    /// It was polled (the work began).
    started: bool,
    /// It returned its value.
    returned: bool,
    mode: Mode,
    /// (execution id, forgets started when it began) while running.
    running: Option<(u64, u64)>,
}

impl Job {
    fn start(&mut self) {
        self.started = true;
        let soak = &self.soak;
        let id = soak.exec_ids.fetch_add(1, SeqCst);
        soak.tally.executions.fetch_add(1, SeqCst);
        let state = &soak.keys[usize::from(self.key)];
        let mut running = state.running.lock().unwrap();
        let forgets_now = state.forgets_started.load(SeqCst);
        // No forget started but the ones finished before either caller began: neither flight
        // was detached, so the two executions belong to one flight, or one outlived its flight's
        // place in the map.
        let unforgotten = self.forgets_seen == forgets_now;
        for other in running.iter().filter(|other| unforgotten && other.forgets_seen == forgets_now) {
            print_trace(self.key);
            soak.violation(format!(
                "key {}: execution {id} (call {}, {:?}) started while execution {} (call {}, {:?}, \
                 panicked: {}) was running, with no forget since either caller began",
                self.key, self.call, self.mode, other.id, other.call, other.mode, other.panicked
            ));
        }
        trace(self.key, || {
            format!(
                "exec {id} start call {} {:?} seen={} now={forgets_now}",
                self.call, self.mode, self.forgets_seen
            )
        });
        running.push(Running {
            id,
            call: self.call,
            mode: self.mode,
            forgets_seen: self.forgets_seen,
            panicked: false,
        });
        self.running = Some((id, forgets_now));
    }

    fn stop(&mut self) {
        if let Some((id, _)) = self.running.take() {
            trace(self.key, || format!("exec {id} stop"));
            let mut running = self.soak.keys[usize::from(self.key)].running.lock().unwrap();
            running.retain(|other| other.id != id);
        }
    }

    fn finish(&mut self) -> Val {
        if self.panics {
            if let Some((id, _)) = self.running {
                let mut running = self.soak.keys[usize::from(self.key)].running.lock().unwrap();
                if let Some(me) = running.iter_mut().find(|r| r.id == id) {
                    me.panicked = true;
                }
            }
            std::panic::panic_any(INJECTED);
        }
        let (id, forgets_at_start) = self.running.expect("a finishing job is running");
        self.stop();
        self.returned = true;
        Val(Arc::new(Exec {
            key: self.key,
            id,
            call: self.call,
            forgets_at_start,
            first_returned: AtomicU64::new(u64::MAX),
            clone_panics: AtomicBool::new(self.clone_panics),
        }))
    }

    /// The blocking form: the same steps on the calling thread.
    fn run_blocking(mut self) -> Val {
        // Its drop is a part of the blocking work closure: a panic there is the work's.
        self.drop_panics = false;
        self.start();
        for _ in 0..self.yields {
            std::thread::yield_now();
        }
        self.finish()
    }
}

impl Future for Job {
    type Output = Val;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Val> {
        if self.running.is_none() {
            self.start();
        }
        if self.yields > 0 {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.finish())
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.stop();
        let shared = matches!(self.mode, Mode::Shared | Mode::SharedOnThread);
        // Started and dropped unfinished (a follower's closure, never called, is no work).
        let abandoned = shared && self.started && !self.returned && !self.panics;
        if self.drop_panics && (self.returned || abandoned) && !std::thread::panicking() {
            std::panic::panic_any(DROP_INJECTED);
        }
    }
}

/// Drops a call's future that did not finish (given up, timed out): with `SOAK_USER_PANICS=1`
/// the drop may cancel abandoned shared work whose `Drop` panics, and that panic comes out
/// here (and only that one).
fn drop_unfinished<F>(soak: &Soak, key: u8, fut: F) {
    if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(fut))) {
        let message = panic_message(payload);
        if user_panics() && message == DROP_INJECTED {
            soak.tally.drop_panics.fetch_add(1, SeqCst);
        } else {
            soak.violation(format!("key {key}: dropping an unfinished call panicked: {message:?}"));
        }
    }
}

/// Gives up on its future after `turns` polls (it wakes itself in between): a caller that is
/// dropped mid-call, whether it leads or follows.
struct GiveUp<F> {
    inner: Pin<Box<F>>,
    turns: u32,
}

impl<F: Future> Future for GiveUp<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(output) = self.inner.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if self.turns == 0 {
            return Poll::Ready(None);
        }
        self.turns -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<not a string>".to_string())
}

/// One async call: work or shared work, awaited to the end, given up after a few turns, or
/// under a timer; sometimes with a forget of its key before or after.
async fn async_call(soak: &Arc<Soak>, rng: &mut Rng, caller: usize) {
    let call = Call::begin(soak, rng, caller);
    if !knob("noforget") && rng.percent(2) {
        soak.forget(call.key);
    }
    let mut job = call.job(soak, rng);
    job.mode = if is_shared_key(call.key) { Mode::Shared } else { Mode::Work };
    soak.doing(caller, Some((call.key, job.mode, call.began)));
    let start = move || job;
    let fut: CallFuture<'_> = if is_shared_key(call.key) {
        Box::pin(soak.shared.work(&call.key, start))
    } else {
        Box::pin(soak.group.work(&call.key, start))
    };
    let result = match if knob("nocancel") { 0 } else { rng.below(10) } {
        0..=6 => Some(AssertUnwindSafe(fut).catch_unwind().await),
        7 | 8 => {
            let turns = rng.below(6) as u32;
            let mut give_up = GiveUp { inner: Box::pin(AssertUnwindSafe(fut).catch_unwind()), turns };
            let result = (&mut give_up).await;
            if result.is_none() {
                soak.tally.cancelled.fetch_add(1, SeqCst);
            }
            drop_unfinished(soak, call.key, give_up);
            result
        }
        _ => {
            let timer = tokio::time::sleep(Duration::from_micros(50 + rng.below(1500)));
            let mut timed = Box::pin(AssertUnwindSafe(Timeout::new(fut, timer)).catch_unwind());
            let result = match timed.as_mut().await {
                Ok(Err(aborted)) if aborted.is_timed_out() => {
                    soak.tally.timed_out.fetch_add(1, SeqCst);
                    None
                }
                result => Some(result),
            };
            drop_unfinished(soak, call.key, timed);
            result
        }
    };
    if let Some(result) = result {
        call.check(soak, result.map_err(panic_message));
    }
    if !knob("noforget") && rng.percent(2) {
        soak.forget(call.key);
    }
}

/// One call from a plain thread: `work_blocking`, or an async call blocked on (and sometimes
/// given up on) with `futures_lite`.
fn thread_call(soak: &Arc<Soak>, rng: &mut Rng, caller: usize) {
    let call = Call::begin(soak, rng, caller);
    if !knob("noforget") && rng.percent(2) {
        soak.forget(call.key);
    }
    let mut job = call.job(soak, rng);
    let result = match if knob("noblocking") { 2 + rng.below(2) } else { rng.below(4) } {
        0 | 1 => Some(std::panic::catch_unwind(AssertUnwindSafe(|| {
            job.mode = Mode::Blocking;
            soak.doing(caller, Some((call.key, job.mode, call.began)));
            if is_shared_key(call.key) {
                soak.shared.work_blocking(&call.key, || job.run_blocking())
            } else {
                soak.group.work_blocking(&call.key, || job.run_blocking())
            }
        }))),
        _ if is_shared_key(call.key) => {
            job.mode = Mode::SharedOnThread;
            soak.doing(caller, Some((call.key, job.mode, call.began)));
            let fut = soak.shared.work(&call.key, move || job);
            Some(futures_lite::future::block_on(AssertUnwindSafe(fut).catch_unwind()))
        }
        _ => {
            job.mode = Mode::WorkOnThread;
            soak.doing(caller, Some((call.key, job.mode, call.began)));
            let fut = AssertUnwindSafe(soak.group.work(&call.key, move || job)).catch_unwind();
            let turns = rng.below(6) as u32;
            let mut give_up = GiveUp { inner: Box::pin(fut), turns };
            let result = futures_lite::future::block_on(&mut give_up);
            if result.is_none() {
                soak.tally.cancelled.fetch_add(1, SeqCst);
            }
            drop_unfinished(soak, call.key, give_up);
            result
        }
    };
    if let Some(result) = result {
        call.check(soak, result.map_err(panic_message));
    }
}

/// Whether `COALESCER_SOAK_KNOBS` names `knob`.
fn knob(knob: &str) -> bool {
    std::env::var("COALESCER_SOAK_KNOBS").is_ok_and(|knobs| knobs.split(',').any(|k| k == knob))
}

fn tracing_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| knob("trace"))
}

/// The last events of each key, with knob `trace`.
static TRACE: Mutex<Vec<std::collections::VecDeque<String>>> = Mutex::new(Vec::new());

fn trace(key: u8, event: impl FnOnce() -> String) {
    if tracing_on() {
        let mut trace = TRACE.lock().unwrap();
        if trace.is_empty() {
            trace.resize(KEYS, Default::default());
        }
        let events = &mut trace[usize::from(key)];
        if events.len() == 200 {
            events.pop_front();
        }
        events.push_back(format!("{:?} {}", std::thread::current().id(), event()));
    }
}

fn print_trace(key: u8) {
    if tracing_on() {
        for event in &TRACE.lock().unwrap()[usize::from(key)] {
            eprintln!("soak: trace of key {key}: {event}");
        }
    }
}

/// A field of `/proc/self/status` in bytes (`VmRSS`: resident now; `VmHWM`: peak resident).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn resident_bytes() -> u64 {
    status_bytes("VmRSS")
}

fn quiet_injected_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<&str>().copied();
        if !matches!(message, Some(INJECTED | CLONE_INJECTED | DROP_INJECTED)) {
            previous(info);
        }
    }));
}

/// Fails the run (the whole process: a hung caller cannot be unwound) when a caller makes no
/// progress for [`HANG`], during the run or while the callers finish at its end.
fn watchdog(soak: Arc<Soak>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = soak.now_ms();
        let beats: Vec<u64> = soak.heartbeat.iter().map(|b| b.load(SeqCst)).collect();
        if beats.iter().all(|&b| b == u64::MAX) {
            return;
        }
        let hung: Vec<_> = (0..CALLERS)
            .filter(|&c| beats[c] != u64::MAX && now.saturating_sub(beats[c]) > HANG.as_millis() as u64)
            .map(|c| (c, *soak.doing[c].lock().unwrap()))
            .collect();
        if !hung.is_empty() {
            eprintln!(
                "soak: HANG: callers without progress for {HANG:?}, (caller, (key, mode, call)): {hung:?}"
            );
            eprintln!("soak: {:?}", soak.group);
            for (key, state) in soak.keys.iter().enumerate() {
                eprintln!("soak: key {key}: running {:?}", state.running.lock().unwrap());
            }
            std::process::exit(3);
        }
    }
}

/// Holds every caller still between calls and checks that nothing is left in the air.
fn quiet_check(soak: &Soak, rss: &mut Vec<(f64, u64)>) {
    soak.pause.store(true, SeqCst);
    let since = Instant::now();
    while soak.paused.load(SeqCst) < CALLERS && !soak.stop.load(SeqCst) {
        if since.elapsed() > 2 * HANG {
            soak.violation(format!(
                "only {} of {CALLERS} callers paused within {:?}",
                soak.paused.load(SeqCst),
                2 * HANG
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !soak.group.is_idle() || !soak.shared.is_idle() {
        soak.violation(format!(
            "a group is not idle while every caller is paused: {:?} {:?}",
            soak.group, soak.shared
        ));
    }
    for (key, state) in soak.keys.iter().enumerate() {
        let running = state.running.lock().unwrap();
        if !running.is_empty() {
            soak.violation(format!(
                "key {key}: executions {running:?} still run while every caller is paused"
            ));
        }
    }
    rss.push((soak.started.elapsed().as_secs_f64(), resident_bytes()));
    soak.pause.store(false, SeqCst);
}

#[test]
#[ignore = "long: run by ci/soak.sh SECONDS (COALESCER_SOAK_SECS)"]
fn soak() {
    let secs: u64 = std::env::var("COALESCER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let duration = Duration::from_secs(secs);
    quiet_injected_panics();
    let soak = Arc::new(Soak::new());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let watchdog = std::thread::spawn({
        let soak = soak.clone();
        move || watchdog(soak)
    });
    let tasks: Vec<_> = (0..ASYNC_CALLERS)
        .map(|caller| {
            let soak = soak.clone();
            runtime.spawn(async move {
                let mut rng = Rng::new(caller as u64 + 1);
                while !soak.stop.load(SeqCst) {
                    soak.quiet_point(caller).await;
                    async_call(&soak, &mut rng, caller).await;
                    soak.doing(caller, None);
                    soak.beat(caller);
                }
                soak.heartbeat[caller].store(u64::MAX, SeqCst);
            })
        })
        .collect();
    let threads: Vec<_> = (ASYNC_CALLERS..CALLERS)
        .map(|caller| {
            let soak = soak.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(caller as u64 + 1);
                while !soak.stop.load(SeqCst) {
                    soak.quiet_point_sync(caller);
                    thread_call(&soak, &mut rng, caller);
                    soak.doing(caller, None);
                    soak.beat(caller);
                }
                soak.heartbeat[caller].store(u64::MAX, SeqCst);
            })
        })
        .collect();

    // Quiet points every twentieth of the run (at least every 200 ms, at most every 5 s), so
    // that each tenth of it has a couple of memory samples.
    let every = (duration / 20).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut rss = Vec::new();
    let mut last_report = Instant::now();
    while soak.started.elapsed() < duration && !soak.stop.load(SeqCst) {
        std::thread::sleep(every.min(duration.saturating_sub(soak.started.elapsed())));
        quiet_check(&soak, &mut rss);
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "soak: {:.0} s, {} calls, resident {} KiB",
                soak.started.elapsed().as_secs_f64(),
                soak.tally.calls.load(SeqCst),
                resident_bytes() >> 10
            );
        }
    }
    soak.stop.store(true, SeqCst);
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    let elapsed = soak.started.elapsed();
    watchdog.join().unwrap();

    // Quiet at last: nothing in the air, nothing running.
    assert!(soak.group.is_idle(), "the group is not idle at the end: {:?}", soak.group);
    assert!(soak.shared.is_idle(), "the shared group is not idle at the end: {:?}", soak.shared);
    drop(runtime);

    let t = &soak.tally;
    let calls = t.calls.load(SeqCst);
    let c = soak.group.counters();
    eprintln!();
    eprintln!(
        "soak: {calls} calls in {:.1} s ({:.0}/s); {} values, {} aborted, {} panics resumed, \
         {} given up, {} timed out; {} executions; {} forgets detached a flight; user panics \
         {}: {} in clones, {} in drops",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        t.values.load(SeqCst),
        t.aborted.load(SeqCst),
        t.resumed_panics.load(SeqCst),
        t.cancelled.load(SeqCst),
        t.timed_out.load(SeqCst),
        t.executions.load(SeqCst),
        t.forgets.load(SeqCst),
        if user_panics() { "on" } else { "off (SOAK_USER_PANICS=1)" },
        t.clone_panics.load(SeqCst),
        t.drop_panics.load(SeqCst),
    );
    eprintln!("soak: group counters {c:?}; shared ratio {:.2}", c.shared_ratio());
    let c = soak.shared.counters();
    eprintln!("soak: shared group counters {c:?}; shared ratio {:.2}", c.shared_ratio());

    let tenth = elapsed.as_secs_f64() / 10.0;
    let first = rss.iter().filter(|(at, _)| *at <= tenth).map(|&(_, b)| b).max();
    let last = rss.iter().filter(|(at, _)| *at >= elapsed.as_secs_f64() - tenth).map(|&(_, b)| b).max();
    eprintln!(
        "soak: resident memory: first tenth {} KiB, last tenth {} KiB, peak {} KiB ({} samples)",
        first.unwrap_or(0) >> 10,
        last.unwrap_or(0) >> 10,
        status_bytes("VmHWM") >> 10,
        rss.len()
    );
    let violations = soak.violations.lock().unwrap();
    assert!(violations.is_empty(), "{} violations, the first: {:#?}", violations.len(), *violations);

    // No sample in a tenth means the memory check would prove nothing: that fails the run.
    let (Some(first), Some(last)) = (first, last) else {
        panic!(
            "the memory check has no sample in the {} tenth of the run ({} samples at {:?} s, \
             {:.1} s in all): quiet points came too rarely to compare the first and last tenths",
            if first.is_none() { "first" } else { "last" },
            rss.len(),
            rss.iter().map(|(at, _)| (at * 10.0).round() / 10.0).collect::<Vec<_>>(),
            elapsed.as_secs_f64()
        )
    };
    assert!(
        last <= first + RSS_TOLERANCE_BYTES,
        "resident memory grew from {first} to {last} bytes between the first and the last tenth"
    );
}
