//! The driver: runs a [`Scenario`] against a real `Group` on one thread, polling every future
//! by hand, and checks each observation against the [`Model`] after every step.

use crate::input::{Ending, Op, Scenario, Start};
use crate::model::{CallerState, End, FlightId, LeaveEffect, Mode, Model};
use crate::probe::{
    CallerId, CountingWaker, Event, ExecId, GateAt, Key, Plan, Probe, Signal, Timer, Val,
    clone_panic_message, drop_panic_message, key_panic_message, planned_message, work_panic_message,
};
use crate::trace::{self, Recording};
use coalescer::futures::Timeout;
use coalescer::{Aborted, Group, Outcome, SharedGroup, WhenFull};
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};

/// At most this many callers are alive at once; further joins are skipped.
const MAX_LIVE_CALLERS: usize = 24;

type Hasher = BuildHasherDefault<DefaultHasher>;
type TestGroup = Group<Key, Val, Hasher>;
type SharedTestGroup = SharedGroup<Key, Val, Hasher>;
type CallOutput = Result<Outcome<Val>, Aborted>;

/// A caller's future, of either group: a plain call, or one that gives up (with
/// `Aborted::is_timed_out`) when its timer fires.
struct CallFut<'g>(Pin<Box<dyn Future<Output = CallOutput> + Send + 'g>>);

impl CallFut<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<CallOutput> {
        self.0.as_mut().poll(cx)
    }
}

/// The driver's side of one caller.
struct Caller<'g> {
    fut: Option<CallFut<'g>>,
    wakes: Arc<CountingWaker>,
    waker: Waker,
    /// The wake count when its last poll started: a wake after that schedules it again.
    wakes_at_poll: usize,
    /// Its next poll gets a new waker ([`Op::NewWaker`]).
    renew_waker: bool,
    timer: Option<Timer>,
    /// The caller's own span (in a traced run), entered around each of its polls and its
    /// drop: a flight's span is a child of its leader's, a follower's links go from it.
    span: tracing::Span,
}

/// A broken promise of the contract, with the steps that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What went wrong.
    pub message: String,
    /// The operations run, the last one being where it went wrong.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "contract violation: {}", self.message)?;
        writeln!(f, "after these steps:")?;
        for (i, step) in self.trace.iter().enumerate() {
            writeln!(f, "  {i:3}: {step}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// What a run did, for tests that check that scenarios reach the interesting states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Flights led.
    pub leaders: u64,
    /// Calls that joined a flight as followers.
    pub followers: u64,
    /// Followers promoted after a work-mode leader left.
    pub promotions: u64,
    /// Flights that ended in a panic.
    pub panics: u64,
    /// Flights every caller left before they ended.
    pub cancellations: u64,
    /// Successful forgets.
    pub forgets: u64,
    /// Callers that gave up at their timer.
    pub timeouts: u64,
    /// Polls of callers.
    pub polls: u64,
    /// Times two executions of one key were alive at once (allowed after a forget).
    pub overlaps: u64,
    /// Times operations ran while an execution was paused inside its poll, or a leader inside
    /// its key's `Debug`.
    pub pauses: u64,
    /// Followers that joined a flight while its leader was inside its join (before the
    /// flight's span was there).
    pub early_joins: u64,
    /// Of those, the ones that finished or left after the flight had its span (each must have
    /// linked to it by then).
    pub early_joins_linked: u64,
    /// `follows_from` links checked (traced runs).
    pub links: u64,
}

impl std::ops::AddAssign for Summary {
    /// Sums two runs' figures (the tests that run many inputs report the total).
    fn add_assign(&mut self, s: Self) {
        self.leaders += s.leaders;
        self.followers += s.followers;
        self.promotions += s.promotions;
        self.panics += s.panics;
        self.cancellations += s.cancellations;
        self.forgets += s.forgets;
        self.timeouts += s.timeouts;
        self.polls += s.polls;
        self.overlaps += s.overlaps;
        self.pauses += s.pauses;
        self.early_joins += s.early_joins;
        self.early_joins_linked += s.early_joins_linked;
        self.links += s.links;
    }
}

type Checked<T = ()> = Result<T, String>;

/// What the events of one caller's poll are checked against.
#[derive(Clone, Copy, Debug)]
struct PollCtx {
    c: CallerId,
    f: FlightId,
    /// This is the caller's first poll (it joined in it).
    first: bool,
    /// The first execution it polled.
    polled: Option<ExecId>,
    /// The execution whose planned panic it ran into.
    panicked: Option<ExecId>,
    /// The last execution that yielded in it.
    yielded: Option<ExecId>,
    /// The execution a clone of whose value panicked in it.
    clone_panicked: Option<ExecId>,
    /// The execution whose `Drop` panicked in it.
    drop_panicked: Option<ExecId>,
    /// The key method that panicked in it.
    key_panicked: Option<crate::input::KeyFn>,
}

impl PollCtx {
    /// The messages of the planned panics that happened in this poll: it must panic with one.
    fn planned_panics(&self) -> Vec<String> {
        let work = self.panicked.map(work_panic_message);
        let clone = self.clone_panicked.map(clone_panic_message);
        let dropped = self.drop_panicked.map(drop_panic_message);
        let key = self.key_panicked.map(key_panic_message);
        [work, clone, dropped, key].into_iter().flatten().collect()
    }
}

/// Resumes a paused execution when dropped.
struct ResumeOnDrop(mpsc::Sender<()>);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs `scenario` against a new group; returns what it did, or the first contract violation.
///
/// A panic that is not a planned panic of the work (the group itself panicked) is not caught:
/// it propagates to the caller, as a crash.
pub fn run(scenario: &Scenario) -> Result<Summary, Violation> {
    crate::install_panic_hook();
    if scenario.trace {
        // Scoped to this run (and its worker threads): runs share no state.
        let (dispatch, recording) = crate::trace::dispatch();
        tracing::dispatcher::with_default(&dispatch, || run_with(scenario, Some(recording)))
    } else {
        run_with(scenario, None)
    }
}

fn run_with(scenario: &Scenario, recording: Option<Recording>) -> Result<Summary, Violation> {
    // Sized for the scenario's few keys: the default capacity would dominate a short run.
    // A group's mode is its type: the driver keeps one group per mode, and each key's calls go
    // to the group of the mode its first caller asked for (a mixed scenario mixes keys).
    let bounded = |group: TestGroup| match scenario.bound.limit() {
        None => group,
        Some((limit, false)) => group.max_in_flight(limit, WhenFull::Reject),
        Some((limit, true)) => group.max_in_flight(limit, WhenFull::RunAlone),
    };
    // Traced: each group is named (its spans' `group` field) and traces keys, so that a
    // leader formats its key (which may pause it, see `Op::PauseInDebug`) to make its span.
    let traced = |group: TestGroup, name: &'static str| {
        if scenario.trace { group.named(name).trace_keys() } else { group }
    };
    // A named group registers its metrics handles with the recorder installed as it is named:
    // this run's own (traced runs).
    let make = || {
        let group = traced(bounded(TestGroup::with_capacity_and_hasher(4, Hasher::default())), "work");
        let shared = traced(bounded(TestGroup::with_capacity_and_hasher(4, Hasher::default())), "shared");
        (group, shared.shared())
    };
    let (metrics, (group, shared)) = if scenario.trace {
        let (snapshotter, groups) = crate::trace::with_recorder(make);
        (Some(snapshotter), groups)
    } else {
        (None, make())
    };
    // Calls borrow their key (a leader clones it): the keys outlive the driver's callers.
    let probe = Arc::<Probe>::default();
    let keys: Vec<Key> = (0..4).map(|k| Key::new(k, &probe)).collect();
    let mut driver = Driver::new(&group, &shared, &keys, probe, scenario.keys.clamp(1, 4), &scenario.ops);
    driver.model.bound = scenario.bound.limit();
    driver.recording = recording;
    driver.metrics = metrics;
    if scenario.check_keys {
        driver.probe.check_keys();
    }
    let result = driver.run_ops().and_then(|()| {
        driver.next += 1;
        driver.end(scenario.ending)
    });
    if result.is_err() {
        // The group broke a promise: its state is unknown, and dropping the callers that are
        // left would run more user code (armed to panic) against it. They are leaked instead.
        std::mem::forget(std::mem::take(&mut driver.callers));
    }
    result.map(|()| driver.summary).map_err(|message| {
        let ops = scenario.ops.iter().map(|op| format!("{op:?}"));
        let ending = format!("end: {:?}", scenario.ending);
        let trace = ops.chain([ending]).take(driver.next).collect();
        Violation { message, trace }
    })
}

struct Driver<'g> {
    group: &'g TestGroup,
    shared: &'g SharedTestGroup,
    /// The key objects, one per key id.
    key_objects: &'g [Key],
    /// Per key: whether its calls go to the shared group, fixed by its first caller.
    key_mode: [Option<bool>; 4],
    keys: u8,
    /// The scenario's operations, and the index of the next one to run.
    ops: &'g [Op],
    next: usize,
    /// An execution to pause at its next poll, and how many operations then run.
    armed: Option<(ExecId, u8)>,
    /// The next new flight's leader pauses in its key's `Debug`, while this many operations run.
    armed_debug: Option<u8>,
    /// The caller whose poll is paused inside this execution's poll (`None`: inside its key's
    /// `Debug`, in its join), while operations run.
    busy: Option<(CallerId, Option<ExecId>)>,
    /// What the run's `tracing` subscriber recorded (traced runs).
    recording: Option<Recording>,
    /// What the run's `metrics` recorder recorded (traced runs).
    metrics: Option<crate::trace::Metrics>,
    /// Per caller: its spans, links and events were checked after it ended.
    trace_checked: Vec<bool>,
    probe: Arc<Probe>,
    model: Model,
    callers: Vec<Caller<'g>>,
    summary: Summary,
}

impl<'g> Driver<'g> {
    fn new(
        group: &'g TestGroup,
        shared: &'g SharedTestGroup,
        key_objects: &'g [Key],
        probe: Arc<Probe>,
        keys: u8,
        ops: &'g [Op],
    ) -> Self {
        Self {
            group,
            shared,
            key_objects,
            key_mode: [None; 4],
            keys,
            ops,
            next: 0,
            armed: None,
            armed_debug: None,
            busy: None,
            recording: None,
            metrics: None,
            trace_checked: Vec::new(),
            probe,
            model: Model::default(),
            callers: Vec::new(),
            summary: Summary::default(),
        }
    }

    fn run_ops(&mut self) -> Checked {
        while let Some(&op) = self.ops.get(self.next) {
            self.next += 1;
            self.step(op)?;
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Checked {
        match op {
            Op::Join { key, shared, timed, poll, start } => {
                if self.live().count() < MAX_LIVE_CALLERS {
                    let c = self.add_caller(key % self.keys, shared, timed, start);
                    if poll {
                        self.poll(c)?;
                    }
                }
            }
            Op::Poll { caller } => {
                if let Some(c) = self.pick_caller(caller, |_| true) {
                    self.model.callers[c].stalled = false;
                    self.poll(c)?;
                }
            }
            Op::Settle => self.settle()?,
            Op::Stall { caller } => {
                if let Some(c) = self.pick_caller(caller, |_| true) {
                    self.model.callers[c].stalled = true;
                }
            }
            Op::Drop { caller } => {
                if let Some(c) = self.pick_caller(caller, |_| true) {
                    self.drop_caller(c)?;
                }
            }
            Op::DropLeader { key } => {
                if let Some(c) = self.leader_of(key % self.keys) {
                    self.drop_caller(c)?;
                }
            }
            Op::Complete { exec } => self.command(exec, Plan::Complete),
            Op::Panic { exec } => self.command(exec, Plan::Panic),
            Op::Wake { exec } => {
                let running: Vec<ExecId> = self.model.running().collect();
                if !running.is_empty() {
                    let e = running[usize::from(exec) % running.len()];
                    if let Some(waker) = self.probe.waker(e) {
                        self.woke(e);
                        waker.wake();
                    }
                }
            }
            Op::Yield { exec, times } => {
                let running: Vec<ExecId> = self.model.running().collect();
                if !running.is_empty() {
                    let e = running[usize::from(exec) % running.len()];
                    if let Some(waker) = self.probe.yields(e, times) {
                        self.woke(e);
                        waker.wake();
                    }
                }
            }
            Op::FireTimer { caller } => {
                if let Some(c) = self.pick_caller(caller, |c| c.timed && !c.timer_fired) {
                    self.model.callers[c].timer_fired = true;
                    self.callers[c].timer.as_ref().expect("a timed caller").fire();
                }
            }
            Op::Arm { exec, ops } => {
                let running: Vec<ExecId> = self.model.running().collect();
                if self.busy.is_none() && !running.is_empty() {
                    self.armed = Some((running[usize::from(exec) % running.len()], ops));
                }
            }
            Op::Forget { key } => {
                let key = key % self.keys;
                let probe_key = &self.key_objects[usize::from(key)];
                let shared = self.key_mode[usize::from(key)] == Some(true);
                self.probe.set_current(None, false);
                let forgot = catch_unwind(AssertUnwindSafe(|| {
                    if shared { self.shared.forget(probe_key) } else { self.group.forget(probe_key) }
                }));
                let mut key_panicked = None;
                for event in self.probe.drain() {
                    match event {
                        // `forget` hashes and compares the key it is given: user code that may
                        // panic, out of `forget`, leaving the group as it was.
                        Event::KeyUsed { what, by: None, panicked } => {
                            if panicked {
                                key_panicked = Some(what);
                            }
                        }
                        event => return Err(format!("forget({key}) did {event:?}")),
                    }
                }
                match forgot {
                    Ok(forgot) => {
                        ensure!(
                            key_panicked.is_none(),
                            "the key's {key_panicked:?} panicked in forget({key}), which returned"
                        );
                        let expected = self.model.forget(key);
                        ensure!(
                            forgot == expected,
                            "forget({key}) returned {forgot}; the key {} a flight",
                            if expected { "had" } else { "had no" }
                        );
                    }
                    Err(payload) => {
                        let planned = key_panicked.map(key_panic_message);
                        if planned.as_deref() != planned_message(&*payload) {
                            resume_unwind(payload);
                        }
                    }
                }
            }
            Op::ClonePanics { exec } => {
                if let Some(e) = self.pick_exec(exec) {
                    self.probe.arm_clone(e);
                }
            }
            Op::DropPanics { exec } => {
                if let Some(e) = self.pick_exec(exec) {
                    self.probe.arm_drop(e);
                }
            }
            Op::KeyPanics { what } => self.probe.arm_key(what),
            Op::NewWaker { caller } => {
                if let Some(c) = self.pick_caller(caller, |_| true) {
                    self.callers[c].renew_waker = true;
                }
            }
            Op::PauseInDebug { ops } => {
                if self.busy.is_none() {
                    self.armed_debug = Some(ops);
                }
            }
        }
        // Polls and drops check their own events; whatever is left came from a wake, a timer
        // or a forget, none of which may start, poll or drop any work by itself.
        let stray = self.probe.drain();
        ensure!(stray.is_empty(), "{op:?} made the group touch the work: {stray:?}");
        self.check_group()?;
        self.check_ended_callers()
    }

    /// Execution `e`'s waker is about to be woken.
    fn woke(&mut self, e: ExecId) {
        self.model.execs[e].woken = true;
    }

    /// One of the running executions, picked by `index`.
    fn pick_exec(&self, index: u8) -> Option<ExecId> {
        let running: Vec<ExecId> = self.model.running().collect();
        (!running.is_empty()).then(|| running[usize::from(index) % running.len()])
    }

    /// Whether `c` may be picked by an operation: not while its poll is paused.
    fn idle(&self, c: CallerId) -> bool {
        self.busy.is_none_or(|(b, _)| b != c)
    }

    /// The live callers, oldest first.
    fn live(&self) -> impl Iterator<Item = CallerId> + '_ {
        (0..self.callers.len()).filter(|&c| self.model.callers[c].is_live())
    }

    fn pick_caller(&self, index: u8, filter: impl Fn(&crate::model::Caller) -> bool) -> Option<CallerId> {
        let candidates: Vec<CallerId> =
            self.live().filter(|&c| self.idle(c) && filter(&self.model.callers[c])).collect();
        (!candidates.is_empty()).then(|| candidates[usize::from(index) % candidates.len()])
    }

    /// The caller running (work mode) or having started (shared work) `key`'s current flight's
    /// work, if it is still a member.
    fn leader_of(&self, key: u8) -> Option<CallerId> {
        let f = self.model.current[usize::from(key)]?;
        let flight = &self.model.flights[f];
        let leader = match flight.mode {
            Mode::Work => flight.runner,
            Mode::Shared => Some(flight.leader).filter(|c| flight.members.contains(c)),
        };
        leader.filter(|&c| self.idle(c))
    }

    fn add_caller(&mut self, key: u8, shared: bool, timed: bool, start: Start) -> CallerId {
        let shared = *self.key_mode[usize::from(key)].get_or_insert(shared);
        let mode = if shared { Mode::Shared } else { Mode::Work };
        let c = self.model.add_caller(key, mode, timed);
        let (plan, closure_panics) = match start {
            Start::Pending => (Plan::Pending, false),
            Start::Ready => (Plan::Complete, false),
            Start::PanicOnPoll => (Plan::Panic, false),
            Start::PanicInClosure => (Plan::Panic, true),
        };
        let closure = self.probe.closure(c, plan, closure_panics, shared);
        let key = &self.key_objects[usize::from(key)];
        let timer = timed.then(Timer::default);
        let fut = match (shared, &timer) {
            (false, None) => CallFut(Box::pin(self.group.work(key, closure))),
            (false, Some(timer)) => {
                CallFut(Box::pin(Timeout::new(self.group.work(key, closure), timer.clone())))
            }
            (true, None) => CallFut(Box::pin(self.shared.work(key, closure))),
            (true, Some(timer)) => {
                CallFut(Box::pin(Timeout::new(self.shared.work(key, closure), timer.clone())))
            }
        };
        let wakes = Arc::new(CountingWaker::default());
        let span = if self.recording.is_some() {
            tracing::info_span!(parent: None, "caller", id = c)
        } else {
            tracing::Span::none()
        };
        self.callers.push(Caller {
            fut: Some(fut),
            waker: Waker::from(wakes.clone()),
            wakes,
            wakes_at_poll: 0,
            renew_waker: false,
            timer,
            span,
        });
        self.trace_checked.push(false);
        c
    }

    /// Whether `c` was woken since its last poll started (a new caller counts as woken, as a
    /// newly spawned task is scheduled).
    fn scheduled(&self, c: CallerId) -> bool {
        self.model.callers[c].state == CallerState::Unjoined
            || self.callers[c].wakes.wakes() > self.callers[c].wakes_at_poll
    }

    /// Polls caller `c` once and checks everything it did.
    fn poll(&mut self, c: CallerId) -> Checked {
        self.summary.polls += 1;
        let first = self.model.callers[c].state == CallerState::Unjoined;
        let f = if first {
            match self.model.join(c) {
                Some(f) => f,
                None => return self.refused(c),
            }
        } else {
            self.model.flight_of(c).expect("a live caller is unjoined or in a flight")
        };
        let flight = &self.model.flights[f];
        let ended_before = flight.end.is_some();
        // What this poll must do to the work, if anything.
        let must_poll = match flight.mode {
            // The runner's future is where its work runs.
            Mode::Work if flight.runner == Some(c) => flight.exec,
            // Woken shared work is driven by whichever member is polled first (unless another
            // caller is inside its poll right now).
            Mode::Shared if !ended_before => flight
                .exec
                .filter(|&e| self.model.execs[e].woken && self.busy.map(|(_, b)| b) != Some(Some(e))),
            _ => None,
        };
        let leads_new = first && flight.leader == c && !flight.started;
        let mut ctx = PollCtx {
            c,
            f,
            first,
            polled: None,
            panicked: None,
            yielded: None,
            clone_panicked: None,
            drop_panicked: None,
            key_panicked: None,
        };
        if std::mem::take(&mut self.callers[c].renew_waker) {
            // The task moved: from this poll on, only the new waker schedules it.
            let wakes = Arc::new(CountingWaker::default());
            self.callers[c].waker = Waker::from(wakes.clone());
            self.callers[c].wakes = wakes;
        }

        // A closure may panic in either mode: that is a panic of the work.
        self.probe.set_current(Some(c), true);
        self.callers[c].wakes_at_poll = self.callers[c].wakes.wakes();
        // A poll goes to a worker thread only when it will reach the armed execution (the model
        // says it must poll it): spawning a thread for every poll would cost most of a run.
        let armed = self.armed.filter(|&(e, _)| self.busy.is_none() && must_poll == Some(e));
        // A new flight's leader formats its key for the flight's span (traced runs) inside its
        // join: there it pauses, if armed.
        let debug_pause = self
            .armed_debug
            .filter(|_| self.recording.is_some() && leads_new && self.busy.is_none() && armed.is_none());
        let result = match (armed, debug_pause) {
            (None, None) => {
                let call = &mut self.callers[c];
                let fut = call.fut.as_mut().expect("a live caller has its future");
                let mut cx = Context::from_waker(&call.waker);
                let span = &call.span;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let _entered = span.enter();
                    fut.poll(&mut cx)
                }));
                self.probe.set_current(None, false);
                result
            }
            (Some((e, ops)), _) => self.poll_on_worker(&mut ctx, GateAt::Exec(e), ops)?,
            (None, Some(ops)) => {
                self.armed_debug = None;
                self.poll_on_worker(&mut ctx, GateAt::KeyDebug, ops)?
            }
        };
        if first && self.model.flights[f].leader == c {
            // The leader's join is over: its flight has its span.
            self.model.flights[f].watched = true;
        }
        self.absorb(&mut ctx)?;
        let planned_panics = ctx.planned_panics();
        let PollCtx { polled, panicked, .. } = ctx;
        // A join that panicked in the key's methods joined nothing: it owes the work nothing.
        if let Some(e) = must_poll.filter(|_| ctx.key_panicked.is_none()) {
            ensure!(
                polled == Some(e) || self.model.execs[e].dropped,
                "polling caller {c} did not poll execution {e} ({})",
                match self.model.flights[f].mode {
                    Mode::Work => "its own work, which runs in its future",
                    Mode::Shared => "the shared work, which was woken and nobody was driving",
                }
            );
        }

        let flight = &self.model.flights[f];
        let (end, started) = (flight.end, flight.started);
        let timed_out = self.model.callers[c].timer_fired;
        match result {
            Err(payload) => {
                let message = planned_message(&*payload);
                if !message.is_some_and(|m| planned_panics.iter().any(|p| p == m)) {
                    // Not a planned panic of this poll: the group itself panicked. A crash.
                    resume_unwind(payload);
                }
                if let Some(e) = ctx.clone_panicked {
                    ensure!(
                        end == Some(End::Value(e)),
                        "a clone of execution {e}'s value panicked in caller {c} of flight {f}, \
                         which ended with {end:?}"
                    );
                }
                if let Some(what) = ctx.key_panicked {
                    // A panic at the join: the caller joined nothing, the group is unchanged.
                    ensure!(first, "the key's {what:?} panicked in caller {c}'s poll after it joined");
                    ensure!(
                        panicked.is_none() && ctx.polled.is_none(),
                        "caller {c}'s join panicked in the key's {what:?}, yet its poll ran work"
                    );
                    self.model.unjoin(c, f);
                    return self.discard(c);
                }
                self.model.finished(c);
                self.discard(c)?;
                return self.check_woken(f, ended_before);
            }
            Ok(poll) => {
                ensure!(
                    planned_panics.is_empty(),
                    "{planned_panics:?} happened while caller {c} was polled, but the panic did \
                     not propagate to the caller"
                );
                match poll {
                    Poll::Pending => {
                        ensure!(
                            end.is_none(),
                            "caller {c} got Pending from flight {f}, which ended ({end:?})"
                        );
                        ensure!(!timed_out, "caller {c}'s timer fired but its poll was Pending");
                        ensure!(!leads_new || started, "leader {c}'s first poll did not start its work");
                    }
                    Poll::Ready(Err(aborted)) if aborted.is_timed_out() => {
                        ensure!(timed_out, "caller {c} timed out before its timer fired");
                        ensure!(
                            end.is_none(),
                            "caller {c} timed out although flight {f} had ended ({end:?})"
                        );
                        self.summary.timeouts += 1;
                        self.drop_caller(c)?;
                    }
                    Poll::Ready(result) => {
                        self.check_result(c, f, result)?;
                        self.model.finished(c);
                        self.discard(c)?;
                    }
                }
            }
        }

        self.check_woken(f, ended_before)
    }

    /// If flight `f` ended in this step (it had not before), everybody still waiting must hear
    /// of it (contract: released at once).
    fn check_woken(&self, f: FlightId, ended_before: bool) -> Checked {
        if !ended_before && self.model.flights[f].end.is_some() {
            for &m in &self.model.flights[f].members {
                ensure!(
                    self.scheduled(m),
                    "flight {f} ended ({:?}) but waiting caller {m} was not woken",
                    self.model.flights[f].end
                );
            }
        }
        Ok(())
    }

    /// Polls caller `ctx.c` on a worker thread, with a gate `at` execution `e`'s poll or the
    /// keys' `Debug`: when the poll reaches it, it pauses and the next `ops` operations run
    /// here, as another thread's would while this caller is inside the work's poll (or inside
    /// its join, making its flight's span). The handover is strict (one side runs at a time),
    /// so the run stays deterministic.
    fn poll_on_worker(
        &mut self,
        ctx: &mut PollCtx,
        at: GateAt,
        ops: u8,
    ) -> Checked<std::thread::Result<Poll<CallOutput>>> {
        let c = ctx.c;
        let (to_driver, from_worker) = mpsc::channel();
        let (resume, resumed) = mpsc::channel();
        self.probe.arm(at, to_driver.clone(), resumed);
        let mut fut = self.callers[c].fut.take().expect("a live caller has its future");
        let waker = self.callers[c].waker.clone();
        let span = self.callers[c].span.clone();
        // The run's subscriber, for the worker too.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let (fut, result, nested) = std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let result = tracing::dispatcher::with_default(&dispatch, || {
                    catch_unwind(AssertUnwindSafe(|| {
                        let _entered = span.enter();
                        fut.poll(&mut Context::from_waker(&waker))
                    }))
                });
                let _ = to_driver.send(Signal::Done);
                (fut, result)
            });
            // Lets the worker go on even if a nested step unwinds, so that the scope can end.
            let resume_on_exit = ResumeOnDrop(resume);
            let mut nested = Ok(());
            if from_worker.recv() == Ok(Signal::Paused) {
                let e = match at {
                    GateAt::Exec(e) => {
                        self.armed = None;
                        Some(e)
                    }
                    GateAt::KeyDebug => None,
                };
                self.summary.pauses += 1;
                nested = self.absorb(ctx).and_then(|()| self.run_nested(c, e, ops));
                drop(resume_on_exit);
                let _ = from_worker.recv();
            }
            let (fut, result) = worker.join().expect("the worker catches the poll's panics");
            (fut, result, nested)
        });
        self.probe.disarm();
        self.probe.set_current(None, false);
        self.callers[c].fut = Some(fut);
        nested.map(|()| result)
    }

    /// Runs the next `ops` operations while caller `c` is inside execution `e`'s poll (`None`:
    /// inside its key's `Debug`, in its join).
    fn run_nested(&mut self, c: CallerId, e: Option<ExecId>, ops: u8) -> Checked {
        self.probe.set_current(None, false);
        self.busy = Some((c, e));
        let mut result = Ok(());
        for _ in 0..ops {
            let Some(&op) = self.ops.get(self.next) else { break };
            self.next += 1;
            result = self.step(op);
            if result.is_err() {
                break;
            }
        }
        self.busy = None;
        self.probe.set_current(Some(c), false);
        result
    }

    /// Checks the events the poll of `ctx.c` has caused so far.
    fn absorb(&mut self, ctx: &mut PollCtx) -> Checked {
        let PollCtx { c, f, first, .. } = *ctx;
        for event in self.probe.drain() {
            match event {
                Event::Started { exec, caller, plan } => {
                    ensure!(caller == c, "caller {caller}'s closure ran while {c} was polled");
                    self.model.start(c, exec, first)?;
                    self.model.execs[exec].plan = plan;
                    self.note_overlap(exec);
                }
                Event::ClosurePanicked { exec, caller } => {
                    ensure!(caller == c, "caller {caller}'s closure ran while {c} was polled");
                    self.model.start(c, exec, first)?;
                    self.model.dropped(exec);
                    self.model.end(f, End::Panic(exec));
                    ctx.panicked = Some(exec);
                }
                Event::Polled { exec, by } => {
                    ensure!(
                        ctx.yielded != Some(exec),
                        "polling caller {c} polled execution {exec} again after it yielded in the \
                         same poll: work that yields until another task acts would spin forever"
                    );
                    self.model.polled(exec, by)?;
                    ctx.polled = ctx.polled.or(Some(exec));
                }
                Event::Yielded { exec } => {
                    // It woke its own waker: it wants another poll.
                    self.model.execs[exec].woken = true;
                    ctx.yielded = Some(exec);
                }
                Event::Completed { exec } => {
                    let ef = self.model.execs[exec].flight;
                    ensure!(ef == f, "caller {c} finished flight {ef}'s work, not its own");
                    ensure!(
                        self.model.flights[f].end.is_none(),
                        "execution {exec} completed after flight {f} had ended"
                    );
                    ensure!(
                        self.model.execs[exec].plan == Plan::Complete,
                        "execution {exec} was not told to complete"
                    );
                    self.model.end(f, End::Value(exec));
                }
                Event::Panicked { exec } => {
                    let ef = self.model.execs[exec].flight;
                    ensure!(ef == f, "caller {c} ran flight {ef}'s work, not its own");
                    ensure!(
                        self.model.flights[f].end.is_none(),
                        "execution {exec} panicked after flight {f} had ended"
                    );
                    self.model.end(f, End::Panic(exec));
                    ctx.panicked = Some(exec);
                }
                Event::Dropped { exec } => {
                    ensure!(
                        self.model.execs[exec].ended,
                        "polling caller {c} dropped execution {exec}, which had not ended"
                    );
                    self.model.dropped(exec);
                }
                Event::DropPanicked { exec } => {
                    // After the work returned (it was dropped just now, see above): the flight
                    // keeps its value, the panic goes to this caller and counts as a panic.
                    ensure!(
                        self.model.flights[self.model.execs[exec].flight].end == Some(End::Value(exec)),
                        "execution {exec}'s drop panicked in caller {c}'s poll, but it had not \
                         returned its value"
                    );
                    self.model.drop_panicked(exec);
                    ctx.drop_panicked = Some(exec);
                }
                Event::ClonePanicked { exec, by } => {
                    ensure!(
                        by == Some(c),
                        "a clone of execution {exec}'s value ran for {by:?} in {c}'s poll"
                    );
                    ctx.clone_panicked = Some(exec);
                }
                Event::KeyUsed { what, by, panicked } => {
                    ensure!(by == Some(c), "the key's {what:?} ran for {by:?} in {c}'s poll");
                    ensure!(
                        first && self.model.flights[f].end.is_none() && ctx.polled.is_none(),
                        "the group ran the key's {what:?} in caller {c}'s poll after the caller \
                         had joined flight {f}: a key whose {what:?} panics only sometimes would \
                         wedge the flight (removal must go by the flight's identity)"
                    );
                    if panicked {
                        ctx.key_panicked = Some(what);
                    }
                }
            }
        }
        Ok(())
    }

    /// `c`'s first poll, for a new key while its group is at its bound and refuses new keys:
    /// it must get `Aborted::is_full` at once, having joined nothing and run nothing (or panic
    /// in its key's `Hash`, `Eq` or `Clone`, before the group looked at its bound).
    fn refused(&mut self, c: CallerId) -> Checked {
        self.probe.set_current(Some(c), true);
        let waker = self.callers[c].waker.clone();
        let span = self.callers[c].span.clone();
        let fut = self.callers[c].fut.as_mut().expect("a live caller has its future");
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let _entered = span.enter();
            fut.poll(&mut Context::from_waker(&waker))
        }));
        self.probe.set_current(None, false);
        let mut key_panicked = None;
        for event in self.probe.drain() {
            match event {
                Event::KeyUsed { what, by, panicked } => {
                    ensure!(by == Some(c), "the key's {what:?} ran for {by:?} in {c}'s poll");
                    if panicked {
                        key_panicked = Some(what);
                    }
                }
                event => return Err(format!("caller {c}, refused by the bound, did {event:?}")),
            }
        }
        match polled {
            Err(payload) => {
                let planned = key_panicked.map(key_panic_message);
                if planned.is_none() || planned.as_deref() != planned_message(&*payload) {
                    resume_unwind(payload);
                }
                self.model.unrefuse();
            }
            Ok(Poll::Ready(Err(aborted))) if aborted.is_full() => {
                ensure!(
                    key_panicked.is_none(),
                    "the key's {key_panicked:?} panicked, yet caller {c} returned"
                );
                let limit = self.model.bound.map(|(limit, _)| limit);
                ensure!(
                    aborted.cause() == coalescer::Cause::Full { limit: limit.unwrap_or(0) },
                    "caller {c} was refused with {aborted:?}; the bound is {limit:?}"
                );
            }
            Ok(other) => {
                return Err(format!(
                    "caller {c}'s group is at its bound ({:?}), yet its first poll gave {other:?}",
                    self.model.bound
                ));
            }
        }
        self.discard(c)
    }

    /// Checks what `c` got from flight `f`.
    fn check_result(&self, c: CallerId, f: FlightId, result: Result<Outcome<Val>, Aborted>) -> Checked {
        let flight = &self.model.flights[f];
        let end = flight
            .end
            .ok_or_else(|| format!("caller {c} got {result:?} from flight {f}, which has not ended"))?;
        match (end, result) {
            (End::Value(e), Ok(outcome)) => {
                ensure!(
                    outcome.value().exec == e,
                    "caller {c} got the value of execution {}, flight {f} produced {e}'s",
                    outcome.value().exec
                );
                let leader = self.model.execs[e].caller == c;
                ensure!(
                    outcome.is_leader() == leader,
                    "caller {c}: is_leader() is {}, but it {} the work that produced the value",
                    outcome.is_leader(),
                    if leader { "started" } else { "did not start" }
                );
                let shared = flight.members_at_end > 1;
                ensure!(
                    outcome.is_shared() == shared,
                    "caller {c}: is_shared() is {}, but the value went to {} caller(s)",
                    outcome.is_shared(),
                    flight.members_at_end
                );
            }
            (End::Panic(e), Err(aborted)) => {
                let message = work_panic_message(e);
                ensure!(
                    aborted.is_panic() && aborted.message() == Some(message.as_str()),
                    "caller {c} of flight {f}, whose execution {e} panicked, got {aborted:?}"
                );
            }
            (end, result) => {
                return Err(format!("caller {c} got {result:?} from flight {f}, which ended with {end:?}"));
            }
        }
        Ok(())
    }

    /// Drops the future of `c`, which has its result or panicked: nothing may happen.
    fn discard(&mut self, c: CallerId) -> Checked {
        self.probe.set_current(Some(c), false);
        {
            let call = &mut self.callers[c];
            let _entered = call.span.enter();
            drop(call.fut.take());
        }
        self.probe.set_current(None, false);
        let events = self.probe.drain();
        ensure!(events.is_empty(), "dropping caller {c}, which had its result, did {events:?}");
        Ok(())
    }

    /// Drops live caller `c` (a cancellation) and checks what that did.
    fn drop_caller(&mut self, c: CallerId) -> Checked {
        let f = self.model.flight_of(c);
        let effect = self.model.leave(c);
        self.probe.set_current(Some(c), false);
        let fut = self.callers[c].fut.take();
        let span = self.callers[c].span.clone();
        let dropped = catch_unwind(AssertUnwindSafe(move || {
            let _entered = span.enter();
            drop(fut);
        }));
        self.probe.set_current(None, false);
        let mut cancelled = false;
        let mut drop_panicked = None;
        for event in self.probe.drain() {
            match event {
                Event::Dropped { exec } if effect == LeaveEffect::Cancel(exec) => {
                    cancelled = true;
                    self.model.dropped(exec);
                }
                // Abandoned shared work whose `Drop` panics: the panic comes out of this drop,
                // the key is free all the same (the model counts the cancellation).
                Event::DropPanicked { exec } if effect == LeaveEffect::Cancel(exec) => {
                    drop_panicked = Some(exec);
                }
                Event::KeyUsed { what, .. } => {
                    return Err(format!(
                        "the group ran the key's {what:?} while caller {c} left flight {f:?}, after \
                         it had joined: a key whose {what:?} panics only sometimes would wedge the \
                         flight (removal must go by the flight's identity)"
                    ));
                }
                event => {
                    return Err(format!(
                        "dropping caller {c} (flight {f:?}) did {event:?}; expected {effect:?}"
                    ));
                }
            }
        }
        if let Err(payload) = dropped {
            let planned = drop_panicked.map(drop_panic_message);
            if planned.is_none() || planned.as_deref() != planned_message(&*payload) {
                resume_unwind(payload);
            }
        } else {
            ensure!(
                drop_panicked.is_none(),
                "execution {drop_panicked:?}'s drop panicked while caller {c} was dropped, but \
                 the panic did not come out of the drop"
            );
        }
        if let LeaveEffect::Cancel(e) = effect {
            ensure!(
                cancelled,
                "dropping caller {c} (flight {f:?}) must have dropped execution {e}: {}",
                match self.model.flights[f.expect("cancels only in a flight")].mode {
                    Mode::Work => "a work-mode caller's work runs in its future",
                    Mode::Shared => "shared work goes with the last caller",
                }
            );
        }
        Ok(())
    }

    /// The running executions that have no plan but `Pending` yet.
    fn pending_execs(&self) -> Vec<ExecId> {
        self.model.running().filter(|&e| self.model.execs[e].plan == Plan::Pending).collect()
    }

    /// Gives one of the pending executions a plan.
    fn command(&mut self, index: u8, plan: Plan) {
        let pending = self.pending_execs();
        if !pending.is_empty() {
            self.command_exec(pending[usize::from(index) % pending.len()], plan);
        }
    }

    /// Gives execution `e` a plan, and wakes it.
    fn command_exec(&mut self, e: ExecId, plan: Plan) {
        self.model.execs[e].plan = plan;
        if let Some(waker) = self.probe.command(e, plan) {
            self.woke(e);
            waker.wake();
        }
    }

    fn note_overlap(&mut self, e: ExecId) {
        let key = self.model.execs[e].key;
        if self.model.running().any(|x| x != e && self.model.execs[x].key == key) {
            self.summary.overlaps += 1;
        }
    }

    /// Runs like an executor: polls the woken callers that are not stalled until none is left,
    /// then checks that nobody who could make progress was left behind.
    fn settle(&mut self) -> Checked {
        let limit = 16 * self.callers.len() + 64;
        for _ in 0..limit {
            let next =
                self.live().find(|&c| self.idle(c) && !self.model.callers[c].stalled && self.scheduled(c));
            match next {
                Some(c) => self.poll(c)?,
                None => return self.check_quiescent().and_then(|()| self.check_settled_links()),
            }
        }
        Err(format!("callers kept being woken for {limit} polls without settling (a busy loop)"))
    }

    /// After a settle: every caller that is being polled and could make progress has.
    fn check_quiescent(&self) -> Checked {
        let busy_exec = self.busy.and_then(|(_, e)| e);
        for c in self.live() {
            let caller = &self.model.callers[c];
            if caller.stalled || !self.idle(c) {
                continue;
            }
            ensure!(!caller.timer_fired, "caller {c}'s timer fired but it was never resolved");
            let f = self.model.flight_of(c).expect("settle polled every unjoined caller");
            let flight = &self.model.flights[f];
            ensure!(
                flight.end.is_none(),
                "caller {c} hangs: flight {f} ended ({:?}) but it was not woken",
                flight.end
            );
            if !flight.started && self.busy == Some((flight.leader, None)) {
                // Its leader is inside its join (paused in its key's `Debug`): no work yet.
                continue;
            }
            match flight.mode {
                Mode::Work => {
                    let Some(r) = flight.runner else {
                        return Err(format!(
                            "caller {c} hangs: work-mode flight {f} lost its runner and no \
                             waiting caller was promoted"
                        ));
                    };
                    let e = flight.exec.expect("a runner runs an execution");
                    ensure!(
                        self.model.callers[r].stalled || !self.idle(r) || !self.model.execs[e].woken,
                        "runner {r} of flight {f} hangs: its work {e} was woken but not polled"
                    );
                }
                Mode::Shared => {
                    let e = flight.exec.expect("a shared flight in the air has its work");
                    ensure!(
                        !self.model.execs[e].woken || busy_exec == Some(e), // unless being polled now
                        "caller {c} hangs: shared work {e} of flight {f} was woken, and caller \
                         {c} is being polled, but nobody drove the work"
                    );
                }
            }
        }
        Ok(())
    }

    /// Both groups' counters, added up.
    fn counters(&self) -> coalescer::Counters {
        let (a, b) = (self.group.counters(), self.shared.counters());
        let mut c = a;
        c.leaders += b.leaders;
        c.followers += b.followers;
        c.promotions += b.promotions;
        c.panics += b.panics;
        c.cancellations += b.cancellations;
        c.forgets += b.forgets;
        c.shutdowns += b.shutdowns;
        c.overflows += b.overflows;
        c
    }

    /// The group's own view must match the model after every step.
    fn check_group(&self) -> Checked {
        let expected = self.model.in_flight();
        let in_flight = self.group.in_flight() + self.shared.in_flight();
        ensure!(in_flight == expected, "in_flight() is {in_flight}; {expected} key(s) have a flight");
        let idle = self.group.is_idle() && self.shared.is_idle();
        ensure!(idle == (expected == 0), "is_idle() is {idle} with {expected} flight(s)");
        let counters = self.counters();
        let counts = self.model.counts;
        // A leader paused in its key's `Debug` (inside its join, making its span) is already
        // counted, as are the followers that join meanwhile.
        let pairs = [
            ("leaders", counters.leaders, counts.leaders),
            ("followers", counters.followers, counts.followers),
            ("promotions", counters.promotions, counts.promotions),
            ("panics", counters.panics, counts.panics),
            ("cancellations", counters.cancellations, counts.cancellations),
            ("forgets", counters.forgets, counts.forgets),
            ("shutdowns", counters.shutdowns, 0),
            ("overflows", counters.overflows, counts.overflows),
        ];
        for (name, seen, expected) in pairs {
            ensure!(seen == expected, "counters().{name} is {seen}; expected {expected} ({counters:?})");
        }
        for (e, x) in self.model.execs.iter().enumerate() {
            let flight = &self.model.flights[x.flight];
            ensure!(
                x.dropped || !flight.members.is_empty(),
                "execution {e} of flight {} is still alive with nobody left in the flight",
                x.flight
            );
        }
        Ok(())
    }

    /// Ends the scenario, then checks that the group is empty and nothing leaked.
    fn end(&mut self, ending: Ending) -> Checked {
        match ending {
            Ending::Drain => self.drain()?,
            Ending::AbandonOldestFirst | Ending::AbandonNewestFirst => {
                let mut left: Vec<CallerId> = self.live().collect();
                if ending == Ending::AbandonNewestFirst {
                    left.reverse();
                }
                for c in left {
                    self.drop_caller(c)?;
                    self.check_group()?;
                    self.check_ended_callers()?;
                }
            }
        }
        self.check_group()?;
        self.check_ended_callers()?;
        self.check_trace()?;
        self.check_metrics()?;
        ensure!(
            self.group.is_idle() && self.shared.is_idle(),
            "the group is not idle after every caller left"
        );
        ensure!(
            self.model.flights.iter().all(|f| !f.is_live()),
            "the model has a flight in the air after every caller left"
        );
        if let Some(e) = self.model.execs.iter().position(|x| !x.dropped) {
            return Err(format!("execution {e} was never dropped"));
        }
        let values = self.probe.live_values();
        ensure!(values == 0, "{values} value(s) still alive after every caller left");
        // The driver's own handle and the key objects' are not the work's.
        let holders = Arc::strong_count(&self.probe) - 1 - self.key_objects.len();
        ensure!(holders == 0, "{holders} closure(s) or work future(s) still alive after every caller left");
        let c = self.counters();
        self.summary.leaders = c.leaders;
        self.summary.followers = c.followers;
        self.summary.promotions = c.promotions;
        self.summary.panics = c.panics;
        self.summary.cancellations = c.cancellations;
        self.summary.forgets = c.forgets;
        Ok(())
    }

    /// Resumes every caller and completes every execution until all callers have results.
    fn drain(&mut self) -> Checked {
        for c in 0..self.model.callers.len() {
            self.model.callers[c].stalled = false;
        }
        let rounds = self.callers.len() + 2;
        for _ in 0..rounds {
            self.settle()?;
            if self.live().next().is_none() {
                return Ok(());
            }
            let pending = self.pending_execs();
            ensure!(
                !pending.is_empty(),
                "callers {:?} hang: no work is left to finish",
                self.live().collect::<Vec<_>>()
            );
            for e in pending {
                self.command_exec(e, Plan::Complete);
            }
        }
        Err(format!(
            "callers {:?} still wait after {rounds} rounds of completing every execution",
            self.live().collect::<Vec<_>>()
        ))
    }
}

/// The observability checks (traced runs): the spans, links and events the run's subscriber
/// recorded, against the model (`crate::trace`).
impl Driver<'_> {
    /// Each caller that finished or left since the last check: a follower that did so after
    /// its flight had its span has exactly one `follows_from` link from its span to the
    /// flight's, and one "a caller joined" event in the flight's span made inside its own; one
    /// that ended before (it joined while the leader was making the span) at most that; a
    /// caller that never followed, none.
    fn check_ended_callers(&mut self) -> Checked {
        let Some(recording) = &self.recording else { return Ok(()) };
        let seen = recording.lock();
        for c in 0..self.model.callers.len() {
            if self.trace_checked[c] || self.model.callers[c].is_live() {
                continue;
            }
            self.trace_checked[c] = true;
            let caller = &self.model.callers[c];
            let cs = seen.caller_span(c).ok_or_else(|| format!("caller {c} has no span"))?;
            let links: Vec<usize> = seen.follows.iter().filter(|(a, _)| *a == cs).map(|&(_, b)| b).collect();
            let joins: Vec<Option<usize>> = seen
                .events
                .iter()
                .filter(|e| e.message == trace::JOINED && e.current == Some(cs))
                .map(|e| e.parent)
                .collect();
            let Some(f) = caller.followed else {
                ensure!(
                    links.is_empty() && joins.is_empty(),
                    "caller {c} never followed a flight, yet its span follows from span(s) {links:?} \
                     and it reported {} join(s)",
                    joins.len()
                );
                continue;
            };
            let flight = &self.model.flights[f];
            let spans = seen.flight_spans_of(flight.leader);
            let &[fs] = &spans[..] else {
                return Err(format!(
                    "flight {f} (key {}, led by caller {}) has {} coalescer.flight span(s), not one",
                    flight.key,
                    flight.leader,
                    spans.len()
                ));
            };
            let when = if caller.joined_early {
                "joined while its leader was inside its join, before the flight had its span"
            } else {
                "joined after the flight had its span"
            };
            ensure!(
                links.iter().all(|&l| l == fs) && joins.iter().all(|&p| p == Some(fs)),
                "caller {c} followed flight {f} ({when}), but its span follows from span(s) \
                 {links:?} and its join events are in {joins:?}; the flight's span is {fs}"
            );
            if caller.ended_watched == Some(true) {
                ensure!(
                    links.len() == 1 && joins.len() == 1,
                    "caller {c} followed flight {f} ({when}) and ended after the flight had its \
                     span, yet its span has {} follows_from link(s) to the flight's span and it \
                     reported {} \"a caller joined\" event(s) in it (expected one of each)",
                    links.len(),
                    joins.len()
                );
                if caller.joined_early {
                    self.summary.early_joins_linked += 1;
                }
            } else {
                ensure!(
                    links.len() <= 1 && joins.len() <= 1,
                    "caller {c} followed flight {f} ({when}), yet its span has {} follows_from \
                     link(s) to the flight's span and {} join event(s)",
                    links.len(),
                    joins.len()
                );
            }
            if caller.joined_early {
                self.summary.early_joins += 1;
            }
            self.summary.links += links.len() as u64;
        }
        Ok(())
    }

    /// After a settle (traced runs): every follower that is being polled and still waits
    /// for a flight that has its span has linked to it, also one that joined while its
    /// leader was making the span (the leader wakes those once the span is there, so that
    /// the link is made while the flight runs, not only when its result is read).
    fn check_settled_links(&self) -> Checked {
        let Some(recording) = &self.recording else { return Ok(()) };
        let seen = recording.lock();
        for c in self.live() {
            let caller = &self.model.callers[c];
            let Some(f) = caller.followed else { continue };
            if caller.stalled || !self.idle(c) || !self.model.flights[f].watched {
                continue;
            }
            let cs = seen.caller_span(c).ok_or_else(|| format!("caller {c} has no span"))?;
            let links = seen.follows.iter().filter(|(a, _)| *a == cs).count();
            ensure!(
                links == 1,
                "after a settle, caller {c} waits for flight {f}, which has its span, but its span \
                 has {links} follows_from link(s) ({}): {}",
                if caller.joined_early {
                    "it joined while the leader was making the span"
                } else {
                    "it joined later"
                },
                if caller.joined_early { "nobody woke it to link" } else { "it did not link at its join" }
            );
        }
        Ok(())
    }

    /// At the end of a traced run: one `coalescer.flight` span per flight that was led (none
    /// for a caller that was refused), a child of its leader's span, with its group's name and
    /// its key; each of the core's events in the span of the flight it happened to, as often
    /// as the model says it happened (`core/src/observe.rs`'s `trace_event`): promotions,
    /// panics, cancellations, forgets (of a flight that had its span; before, it may have
    /// none), one "flight ended" with the callers that got its result; the bound's overflows
    /// in no span.
    fn check_trace(&mut self) -> Checked {
        let Some(recording) = &self.recording else { return Ok(()) };
        let seen = recording.lock();
        let mut span_of = vec![None; self.model.flights.len()];
        for (s, span) in seen.spans.iter().enumerate() {
            if span.name != trace::FLIGHT_SPAN {
                continue;
            }
            let leader = span.parent.and_then(|p| seen.spans[p].caller).ok_or_else(|| {
                format!("flight span {s} is not a child of a caller's span (parent {:?})", span.parent)
            })?;
            let f = self.model.flights.iter().position(|fl| fl.leader == leader).ok_or_else(|| {
                format!("caller {leader} made a coalescer.flight span ({s}) but led no flight")
            })?;
            ensure!(span_of[f].is_none(), "flight {f} has two spans, {:?} and {s}", span_of[f]);
            span_of[f] = Some(s);
            let flight = &self.model.flights[f];
            let group = match flight.mode {
                Mode::Work => "work",
                Mode::Shared => "shared",
            };
            ensure!(
                span.field("group") == Some(group),
                "flight {f}'s span has group {:?}, not {group:?}",
                span.field("group")
            );
            let key = crate::probe::key_name(flight.key);
            ensure!(
                span.field("key") == Some(key.as_str()),
                "flight {f}'s span has key {:?}, not {key:?}",
                span.field("key")
            );
        }
        if let Some(f) = span_of.iter().position(Option::is_none) {
            let flight = &self.model.flights[f];
            return Err(format!(
                "flight {f} (key {}, led by caller {}) has no coalescer.flight span",
                flight.key, flight.leader
            ));
        }
        let flight_of_span = |s: usize| span_of.iter().position(|&x| x == Some(s));
        // Per flight: promotions, panics, cancellations, forgets, ends.
        let mut tally = vec![[0u64; 5]; self.model.flights.len()];
        let mut overflows = 0;
        for event in &seen.events {
            let Some(parent) = event.parent else {
                ensure!(
                    event.message == trace::OVERFLOW,
                    "event {:?} is in no span (only the bound's overflows are)",
                    event.message
                );
                overflows += 1;
                continue;
            };
            let f = flight_of_span(parent)
                .ok_or_else(|| format!("event {:?} is in span {parent}, not a flight's", event.message))?;
            let slot = match event.message.as_str() {
                trace::JOINED => continue, // checked per caller
                trace::PROMOTED => 0,
                trace::PANICKED => 1,
                trace::CANCELLED => 2,
                trace::FORGOTTEN => 3,
                trace::ENDED => {
                    let flight = &self.model.flights[f];
                    let waiters = if flight.end.is_some() { flight.members_at_end } else { 0 };
                    ensure!(
                        event.waiters.as_deref() == Some(waiters.to_string().as_str()),
                        "flight {f} ended ({:?}{}) with {waiters} caller(s) counted, but its \
                         \"flight ended\" event says waiters = {:?}",
                        flight.end,
                        if flight.cancelled { ", cancelled" } else { "" },
                        event.waiters
                    );
                    4
                }
                other => return Err(format!("flight {f}'s span has an unknown event {other:?}")),
            };
            tally[f][slot] += 1;
        }
        ensure!(
            overflows == self.model.counts.overflows,
            "{overflows} overflow event(s); the bound overflowed {} time(s)",
            self.model.counts.overflows
        );
        for (f, flight) in self.model.flights.iter().enumerate() {
            let [promotions, panics, cancellations, forgets, ends] = tally[f];
            let expected = [
                ("promotion", promotions, flight.promotions),
                ("panic", panics, flight.panics),
                ("cancellation", cancellations, u64::from(flight.cancelled)),
                ("end", ends, 1),
            ];
            for (what, seen, expected) in expected {
                ensure!(
                    seen == expected,
                    "flight {f} (key {}, {:?} mode, ended {:?}) has {seen} {what} event(s) in its \
                     span; the model counts {expected}",
                    flight.key,
                    flight.mode,
                    flight.end
                );
            }
            ensure!(
                (flight.forgets..=flight.forgets + flight.forgets_unwatched).contains(&forgets),
                "flight {f} was forgotten {} time(s) after it had its span ({} before), but its \
                 span has {forgets} forget event(s)",
                flight.forgets,
                flight.forgets_unwatched
            );
        }
        Ok(())
    }
}

impl Driver<'_> {
    /// At the end of a traced run: the groups' metrics (both groups' series added up, each
    /// labelled with its group's name alone) count what the model counts, and their histograms
    /// have one value per flight: the callers that got its result (none for a cancelled one).
    fn check_metrics(&self) -> Checked {
        let Some(recorded) = &self.metrics else { return Ok(()) };
        let mut counters = std::collections::HashMap::<&str, u64>::new();
        let mut waiters = Vec::new();
        let mut durations = 0;
        let all = recorded.series();
        for series in all.iter() {
            let name = series.key.name();
            let labels: Vec<_> = series.key.labels().map(|l| (l.key(), l.value())).collect();
            ensure!(
                matches!(labels[..], [("group", "work" | "shared")]),
                "metric {name} has labels {labels:?}: the group's name must be the only one"
            );
            match (name, &series.value) {
                (_, crate::trace::Value::Counter(n)) => {
                    *counters.entry(name).or_default() += n.load(std::sync::atomic::Ordering::Relaxed);
                }
                ("coalescer.flight.waiters", crate::trace::Value::Histogram(values)) => {
                    waiters.extend(values.values());
                }
                ("coalescer.flight.duration", crate::trace::Value::Histogram(values)) => {
                    let values = values.values();
                    ensure!(values.iter().all(|&v| v >= 0.0), "a flight lasted a negative time: {values:?}");
                    durations += values.len();
                }
                (name, _) => return Err(format!("unknown histogram {name}")),
            }
        }
        let counts = self.model.counts;
        let expected = [
            ("coalescer.flights", counts.leaders),
            ("coalescer.joins", counts.followers),
            ("coalescer.promotions", counts.promotions),
            ("coalescer.panics", counts.panics),
            ("coalescer.shutdowns", 0),
            ("coalescer.cancellations", counts.cancellations),
            ("coalescer.forgets", counts.forgets),
            ("coalescer.overflows", counts.overflows),
        ];
        for (name, expected) in expected {
            let seen = counters.get(name).copied().unwrap_or(0);
            ensure!(seen == expected, "metric {name} is {seen}; the model counts {expected}");
        }
        let flights = self.model.flights.len();
        ensure!(
            durations == flights,
            "coalescer.flight.duration has {durations} value(s) for {flights} flight(s)"
        );
        #[allow(clippy::cast_precision_loss)] // a few callers
        let mut expected: Vec<f64> = self
            .model
            .flights
            .iter()
            .map(|f| if f.end.is_some() { f.members_at_end as f64 } else { 0.0 })
            .collect();
        expected.sort_by(f64::total_cmp);
        waiters.sort_by(f64::total_cmp);
        ensure!(
            waiters == expected,
            "coalescer.flight.waiters has {waiters:?}; the flights' callers that got their result: {expected:?}"
        );
        Ok(())
    }
}
