//! Instrumentation under the driver's control: work futures that finish or panic when told
//! to, timers that fire when told to, and wakers that count their wakes.
//!
//! Everything the code under test does to these objects is written to one event log, which
//! the driver reads after each step and checks against the model.

use crate::input::KeyFn;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Every planned panic's message starts with this; the panic hook stays silent for them.
pub(crate) const PLANNED_PANIC_PREFIX: &str = "coalescer-fuzz: planned panic in ";

/// The message of execution `exec`'s planned panic.
pub(crate) fn work_panic_message(exec: usize) -> String {
    format!("{PLANNED_PANIC_PREFIX}execution {exec}")
}

/// The message of the planned panic of a clone of execution `exec`'s value.
pub(crate) fn clone_panic_message(exec: usize) -> String {
    format!("{PLANNED_PANIC_PREFIX}a clone of execution {exec}'s value")
}

/// The message of the planned panic of execution `exec`'s `Drop`.
pub(crate) fn drop_panic_message(exec: usize) -> String {
    format!("{PLANNED_PANIC_PREFIX}the drop of execution {exec}")
}

/// The message of the planned panic of a key's `Hash`, `Eq` or `Clone`.
pub(crate) fn key_panic_message(what: KeyFn) -> String {
    format!("{PLANNED_PANIC_PREFIX}the key's {what:?}")
}

/// The message of a planned panic, if `payload` is one.
pub(crate) fn planned_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    message.starts_with(PLANNED_PANIC_PREFIX).then_some(message)
}

/// Index of one execution of the work (one call of a caller's closure).
pub(crate) type ExecId = usize;
/// Index of one caller (one `Work` future).
pub(crate) type CallerId = usize;

/// The flight's value: which execution produced it, and a token that counts live clones, so
/// that a result kept alive after everybody left shows up as a leak. Its `Clone` panics when
/// the driver armed it ([`Probe::arm_clone`]).
#[derive(Debug)]
pub(crate) struct Val {
    pub(crate) exec: ExecId,
    live: Arc<()>,
    probe: Arc<Probe>,
}

impl Clone for Val {
    fn clone(&self) -> Self {
        let armed = {
            let mut s = self.probe.lock();
            let armed = std::mem::take(&mut s.execs[self.exec].clone_panics);
            if armed {
                let by = s.current;
                s.events.push(Event::ClonePanicked { exec: self.exec, by });
            }
            armed
        };
        if armed {
            panic!("{}", clone_panic_message(self.exec));
        }
        Self { exec: self.exec, live: self.live.clone(), probe: self.probe.clone() }
    }
}

/// What an execution does when it is next polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Returns `Pending` (and keeps the waker).
    Pending,
    /// Returns its value.
    Complete,
    /// Panics.
    Panic,
}

/// One thing the code under test did to the instrumentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// `caller`'s closure was called and made execution `exec`, which will follow `plan`.
    Started { exec: ExecId, caller: CallerId, plan: Plan },
    /// `caller`'s closure panicked (as planned) instead of returning execution `exec`.
    ClosurePanicked { exec: ExecId, caller: CallerId },
    /// `exec` was polled while the driver was polling or dropping `by`.
    Polled { exec: ExecId, by: Option<CallerId> },
    /// `exec` yielded: woke its own waker and returned `Pending`.
    Yielded { exec: ExecId },
    /// `exec` returned its value.
    Completed { exec: ExecId },
    /// `exec` panicked (as planned).
    Panicked { exec: ExecId },
    /// `exec` was dropped.
    Dropped { exec: ExecId },
    /// A clone of `exec`'s value panicked (as armed) while the driver was polling or dropping
    /// `by`.
    ClonePanicked { exec: ExecId, by: Option<CallerId> },
    /// `exec`'s `Drop` panicked (as armed), right after its `Dropped` event.
    DropPanicked { exec: ExecId },
    /// A key's `what` ran (and `panicked`, as armed) while the driver was polling or dropping
    /// `by` (`None`: in a direct call of the group, such as `forget`).
    KeyUsed { what: KeyFn, by: Option<CallerId>, panicked: bool },
}

#[derive(Debug)]
struct Exec {
    plan: Plan,
    waker: Option<Waker>,
    /// How many of its next pending polls yield (wake their own waker) instead of waiting.
    yields: u8,
    /// Made by a shared-mode `work` call (the flight owns it).
    shared: bool,
    /// The next clone of its value panics.
    clone_panics: bool,
    /// Its `Drop` panics, when it runs after the work returned its value, or (shared work)
    /// when the work is dropped unfinished (abandoned). Not after a panic of the work, nor for
    /// a work-mode caller's work dropped with its caller: the contract leaves those open.
    drop_panics: bool,
    /// It returned its value.
    completed: bool,
    /// It panicked.
    panicked: bool,
}

/// What a poll running on a worker thread tells the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The armed execution is paused at the start of its poll, waiting for the driver.
    Paused,
    /// The caller's poll returned (or panicked).
    Done,
}

/// Where a [`Gate`] pauses the thread that reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateAt {
    /// At the start of this execution's next poll.
    Exec(ExecId),
    /// In the next call of a key's `Debug` (a leader formats its key for its flight's span,
    /// inside its join, after its flight is in the map).
    KeyDebug,
}

/// Pauses one execution at the start of its next poll, or the next key's `Debug` (see
/// [`Probe::arm`]).
#[derive(Debug)]
struct Gate {
    at: GateAt,
    to_driver: Sender<Signal>,
    resume: Receiver<()>,
}

#[derive(Debug, Default)]
struct State {
    execs: Vec<Exec>,
    events: Vec<Event>,
    /// The caller the driver is polling or dropping right now.
    current: Option<CallerId>,
    /// Whether a closure planned to panic may do so now; if not, its work panics on its first
    /// poll instead.
    closure_panics_allowed: bool,
    /// The execution to pause at its next poll, if any.
    gate: Option<Gate>,
    /// The keys record their `Hash`/`Eq`/`Clone` calls.
    key_checks: bool,
    /// The next call of this key method panics.
    key_armed: Option<KeyFn>,
}

/// The shared instrumentation of one run.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    state: Mutex<State>,
    live: Arc<()>,
}

/// A caller's closure, boxed so that every call has the same type.
pub(crate) type StartFn = Box<dyn FnOnce() -> ExecFuture + Send>;

impl Probe {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `caller`'s closure: makes a new execution with `plan`, or panics when `closure_panics`
    /// (and the driver allows it at the time of the call).
    pub(crate) fn closure(
        self: &Arc<Self>,
        caller: CallerId,
        plan: Plan,
        closure_panics: bool,
        shared: bool,
    ) -> StartFn {
        let probe = self.clone();
        Box::new(move || {
            let (exec, panics) = {
                let mut s = probe.lock();
                let exec = s.execs.len();
                let panics = closure_panics && s.closure_panics_allowed;
                let plan = if closure_panics { Plan::Panic } else { plan };
                s.execs.push(Exec {
                    plan,
                    waker: None,
                    yields: 0,
                    shared,
                    clone_panics: false,
                    drop_panics: false,
                    completed: false,
                    panicked: false,
                });
                if panics {
                    s.events.push(Event::ClosurePanicked { exec, caller });
                } else {
                    s.events.push(Event::Started { exec, caller, plan });
                }
                (exec, panics)
            };
            if panics {
                panic!("{}", work_panic_message(exec));
            }
            ExecFuture { exec, probe }
        })
    }

    /// Records which caller the driver is about to poll or drop, and whether a closure that
    /// is planned to panic may.
    pub(crate) fn set_current(&self, caller: Option<CallerId>, closure_panics_allowed: bool) {
        let mut s = self.lock();
        s.current = caller;
        s.closure_panics_allowed = closure_panics_allowed;
    }

    /// Takes the events recorded since the last call.
    pub(crate) fn drain(&self) -> Vec<Event> {
        std::mem::take(&mut self.lock().events)
    }

    /// Gives `exec` a new plan; returns the waker its last `Pending` poll left, to be woken by
    /// the caller once the lock is released.
    pub(crate) fn command(&self, exec: ExecId, plan: Plan) -> Option<Waker> {
        let mut s = self.lock();
        let slot = &mut s.execs[exec];
        slot.plan = plan;
        slot.waker.take()
    }

    /// The waker `exec`'s last `Pending` poll left (for a spurious wake).
    pub(crate) fn waker(&self, exec: ExecId) -> Option<Waker> {
        self.lock().execs[exec].waker.clone()
    }

    /// Makes `exec`'s next `times` pending polls yield; returns its waker, to be woken so
    /// that it is polled.
    pub(crate) fn yields(&self, exec: ExecId, times: u8) -> Option<Waker> {
        let mut s = self.lock();
        s.execs[exec].yields = times;
        s.execs[exec].waker.clone()
    }

    /// Makes the next thread that reaches `at` (an execution's poll, or a key's `Debug`) send
    /// [`Signal::Paused`] to the driver and wait for `resume` before it does anything else
    /// (the caller's poll runs on a worker thread meanwhile).
    pub(crate) fn arm(&self, at: GateAt, to_driver: Sender<Signal>, resume: Receiver<()>) {
        self.lock().gate = Some(Gate { at, to_driver, resume });
    }

    /// Pauses here if the gate is set at `at` (see [`Probe::arm`]).
    fn gate(&self, at: GateAt) {
        let gate = self.lock().gate.take_if(|gate| gate.at == at);
        if let Some(gate) = gate {
            // Paused: the driver acts meanwhile, like another thread.
            if gate.to_driver.send(Signal::Paused).is_ok() {
                let _ = gate.resume.recv();
            }
        }
    }

    /// Makes the next clone of `exec`'s value panic.
    pub(crate) fn arm_clone(&self, exec: ExecId) {
        self.lock().execs[exec].clone_panics = true;
    }

    /// Makes `exec`'s `Drop` panic (see [`Exec::drop_panics`] for when).
    pub(crate) fn arm_drop(&self, exec: ExecId) {
        self.lock().execs[exec].drop_panics = true;
    }

    /// Removes a gate that did not trigger.
    pub(crate) fn disarm(&self) {
        self.lock().gate = None;
    }

    /// How many values are alive outside the probe.
    pub(crate) fn live_values(&self) -> usize {
        Arc::strong_count(&self.live) - 1
    }
}

/// One execution of the work: pending until the driver gives it another plan.
#[derive(Debug)]
pub(crate) struct ExecFuture {
    exec: ExecId,
    probe: Arc<Probe>,
}

impl Future for ExecFuture {
    type Output = Val;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Val> {
        let exec = self.exec;
        {
            let mut s = self.probe.lock();
            let by = s.current;
            s.events.push(Event::Polled { exec, by });
        }
        // Paused inside the work's poll, if armed: the driver acts meanwhile.
        self.probe.gate(GateAt::Exec(exec));
        let stale = {
            let mut s = self.probe.lock();
            match s.execs[exec].plan {
                Plan::Pending if s.execs[exec].yields > 0 => {
                    s.execs[exec].yields -= 1;
                    s.events.push(Event::Yielded { exec });
                    drop(s);
                    cx.waker().wake_by_ref(); // a cooperative yield, as `yield_now` does
                    return Poll::Pending;
                }
                Plan::Pending => s.execs[exec].waker.replace(cx.waker().clone()),
                Plan::Complete => {
                    s.events.push(Event::Completed { exec });
                    s.execs[exec].completed = true;
                    let (live, probe) = (self.probe.live.clone(), self.probe.clone());
                    return Poll::Ready(Val { exec, live, probe });
                }
                Plan::Panic => {
                    s.events.push(Event::Panicked { exec });
                    s.execs[exec].panicked = true;
                    drop(s);
                    panic!("{}", work_panic_message(exec));
                }
            }
        };
        drop(stale); // a waker may own the last reference to a flight: drop it unlocked
        Poll::Pending
    }
}

impl Drop for ExecFuture {
    fn drop(&mut self) {
        let exec = self.exec;
        let (waker, panics) = {
            let mut s = self.probe.lock();
            s.events.push(Event::Dropped { exec });
            let x = &mut s.execs[exec];
            let panics = x.drop_panics && !x.panicked && (x.completed || x.shared);
            // Never while unwinding: that would abort the process, which no contract covers.
            let panics = panics && !std::thread::panicking();
            if panics {
                s.events.push(Event::DropPanicked { exec });
            }
            (s.execs[exec].waker.take(), panics)
        };
        drop(waker);
        if panics {
            panic!("{}", drop_panic_message(exec));
        }
    }
}

/// A waker that counts its wakes.
#[derive(Debug, Default)]
pub(crate) struct CountingWaker(AtomicUsize);

impl CountingWaker {
    /// How often it was woken.
    pub(crate) fn wakes(&self) -> usize {
        self.0.load(Relaxed)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

#[derive(Debug, Default)]
struct TimerState {
    fired: bool,
    waker: Option<Waker>,
}

/// A timer that fires when the driver says so.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timer(Arc<Mutex<TimerState>>);

impl Timer {
    /// Fires the timer and wakes whoever polled it last.
    pub(crate) fn fire(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.fired = true;
            s.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if s.fired {
            Poll::Ready(())
        } else {
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// The group's key: a small id whose `Hash`, `Eq` and `Clone` tell the probe that they ran
/// (when the run checks key use, see [`Probe::check_keys`]) and panic when armed
/// ([`Probe::arm_key`]), and whose `Debug` (`key0`, `key1`, ...; a leader formats its key for
/// its flight's span when the group traces keys) pauses when armed ([`GateAt::KeyDebug`]).
pub(crate) struct Key {
    pub(crate) id: u8,
    probe: Arc<Probe>,
}

impl Key {
    pub(crate) fn new(id: u8, probe: &Arc<Probe>) -> Self {
        Self { id, probe: probe.clone() }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.probe.gate(GateAt::KeyDebug);
        write!(f, "{}", key_name(self.id))
    }
}

/// How key `id` is formatted (its `Debug`).
pub(crate) fn key_name(id: u8) -> String {
    format!("key{id}")
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.probe.key_used(KeyFn::Hash);
        self.id.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.probe.key_used(KeyFn::Eq);
        self.id == other.id
    }
}

impl Eq for Key {}

impl Clone for Key {
    fn clone(&self) -> Self {
        self.probe.key_used(KeyFn::Clone);
        Self { id: self.id, probe: self.probe.clone() }
    }
}

impl Probe {
    /// Records the keys' `Hash`/`Eq`/`Clone` calls as [`Event::KeyUsed`] from now on.
    pub(crate) fn check_keys(&self) {
        self.lock().key_checks = true;
    }

    /// Makes the next call of `what` on any key panic.
    pub(crate) fn arm_key(&self, what: KeyFn) {
        self.lock().key_armed = Some(what);
    }

    fn key_used(&self, what: KeyFn) {
        let panics = {
            let mut s = self.lock();
            let panics = s.key_armed == Some(what);
            if panics {
                s.key_armed = None;
            }
            if s.key_checks || panics {
                let by = s.current;
                s.events.push(Event::KeyUsed { what, by, panicked: panics });
            }
            panics
        };
        if panics {
            panic!("{}", key_panic_message(what));
        }
    }
}
