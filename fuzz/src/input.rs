//! What a fuzz input decodes into: a scenario, a list of operations over a few keys.
//!
//! Each target has its own vocabulary (so that the fuzzer spends its bytes on the operations
//! the target is about), and both turn into the same [`Scenario`] for the one driver.

use arbitrary::{Arbitrary, Result, Unstructured};

/// Longer scenarios are cut here: beyond it they only slow the fuzzer down.
pub const MAX_OPS: usize = 128;

/// How a caller's work behaves when the caller starts it. Decoded with weights: most work
/// stays pending (the races are about work in the air), one in eight of each other kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The work is pending until an operation finishes it.
    Pending,
    /// The work returns its value on its first poll.
    Ready,
    /// The work panics on its first poll.
    PanicOnPoll,
    /// The closure panics instead of returning the work.
    PanicInClosure,
}

impl<'a> Arbitrary<'a> for Start {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=7u8)? {
            0 => Self::Ready,
            1 => Self::PanicOnPoll,
            2 => Self::PanicInClosure,
            _ => Self::Pending,
        })
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// Which method the callers use.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modes {
    /// `Group::work` for every caller.
    Work,
    /// a shared group's `work` for every caller.
    Shared,
    /// Each `Join` picks (a flight's mode is its leader's).
    Mixed,
}

impl Modes {
    fn shared(self, pick: bool) -> bool {
        match self {
            Self::Work => false,
            Self::Shared => true,
            Self::Mixed => pick,
        }
    }
}

/// How a scenario ends, after its operations.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every caller is resumed and every execution told to complete until all callers have
    /// their results.
    Drain,
    /// The callers that are left are dropped, oldest first.
    AbandonOldestFirst,
    /// The callers that are left are dropped, newest first.
    AbandonNewestFirst,
}

/// One step of a scenario. Callers and executions are picked by index, modulo the number of
/// candidates, so that every byte string is a valid scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new call for `key` (modulo the key count): shared-mode `work` when `shared`, else `work`;
    /// wrapped in a `Timeout` when `timed`; polled at once when `poll` (else it joins on its
    /// first poll, as futures are lazy).
    Join {
        /// The key, modulo the scenario's key count.
        key: u8,
        /// shared-mode `work` rather than `work`.
        shared: bool,
        /// Wrapped in a `Timeout` whose timer fires on `FireTimer`.
        timed: bool,
        /// Polled at once.
        poll: bool,
        /// What its work does when started.
        start: Start,
    },
    /// Polls a live caller (woken or not: spurious polls are legal) and resumes it if stalled.
    Poll {
        /// Which live caller.
        caller: u8,
    },
    /// Runs like an executor: polls every woken caller that is not stalled until none is.
    Settle,
    /// Stops polling a caller (a `select!` branch that is kept alive but never polled again).
    Stall {
        /// Which live caller.
        caller: u8,
    },
    /// Drops a live caller.
    Drop {
        /// Which live caller.
        caller: u8,
    },
    /// Drops the caller running (work mode) or having started (shared work) `key`'s current
    /// flight's work, if it is still there.
    DropLeader {
        /// The key, modulo the scenario's key count.
        key: u8,
    },
    /// Tells a running execution to return its value, and wakes it.
    Complete {
        /// Which running execution.
        exec: u8,
    },
    /// Tells a running execution to panic, and wakes it.
    Panic {
        /// Which running execution.
        exec: u8,
    },
    /// Wakes a running execution's waker without giving it anything to do.
    Wake {
        /// Which running execution.
        exec: u8,
    },
    /// Makes a running execution yield (wake its own waker and return `Pending`, as
    /// `yield_now` does) on its next `times` pending polls, and wakes it.
    Yield {
        /// Which running execution.
        exec: u8,
        /// How many polls yield (1 to 4).
        times: u8,
    },
    /// Fires a timed caller's timer.
    FireTimer {
        /// Which live timed caller.
        caller: u8,
    },
    /// `Group::forget(key)`.
    Forget {
        /// The key, modulo the scenario's key count.
        key: u8,
    },
    /// Arms a running execution: at the start of its next poll it pauses, and the next `ops`
    /// operations of the scenario run while it is paused, as another thread's would while one
    /// caller is inside the work's poll (holding the shared work, or running a work-mode
    /// leader's work). The caller being polled is left out of them.
    Arm {
        /// Which running execution.
        exec: u8,
        /// How many of the following operations run while it is paused (1 to 4).
        ops: u8,
    },
    /// Makes the next clone of a running execution's value panic (when the value is handed
    /// out to the callers of its flight).
    ClonePanics {
        /// Which running execution.
        exec: u8,
    },
    /// Makes a running execution's `Drop` panic: after it returned its value, or (shared
    /// work) when its last caller leaves and the work is dropped unfinished.
    DropPanics {
        /// Which running execution.
        exec: u8,
    },
    /// Makes the next call of the keys' `what` (on any key) panic.
    KeyPanics {
        /// `Hash`, `Eq` or `Clone`.
        what: KeyFn,
    },
    /// The caller's executor gives it a new waker from its next poll on (the task moved): only
    /// the newest waker counts after that poll.
    NewWaker {
        /// Which live caller.
        caller: u8,
    },
    /// Arms the keys' `Debug` (in a traced run, whose groups trace keys): the next caller that
    /// leads a new flight pauses in it, inside its join (its flight already in the map, the
    /// flight's span not yet given to it), while the next `ops` operations run, as another
    /// thread's would meanwhile. The paused leader is left out of them.
    PauseInDebug {
        /// How many of the following operations run while it is paused (1 to 4).
        ops: u8,
    },
}

/// Which of the key's trait methods an [`Op::KeyPanics`] makes panic.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFn {
    /// `Hash::hash`.
    Hash,
    /// `PartialEq::eq`.
    Eq,
    /// `Clone::clone`.
    Clone,
}

/// The groups' bound on keys in flight (`Group::max_in_flight`), if any.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// No bound.
    None,
    /// At most `1 + n % 3` keys in flight; a new key beyond is refused (`WhenFull::Reject`).
    Reject(u8),
    /// At most `1 + n % 3` keys in flight; a new key beyond runs alone (`WhenFull::RunAlone`).
    RunAlone(u8),
}

impl Bound {
    /// The limit and whether a call beyond it runs alone.
    pub fn limit(self) -> Option<(usize, bool)> {
        match self {
            Self::None => None,
            Self::Reject(n) => Some((1 + usize::from(n % 3), false)),
            Self::RunAlone(n) => Some((1 + usize::from(n % 3), true)),
        }
    }
}

/// A whole run: the key count, the operations, and how the run ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// How many keys the calls spread over (1 to 4).
    pub keys: u8,
    /// The operations, at most [`MAX_OPS`] of them.
    pub ops: Vec<Op>,
    /// What happens to the callers that are left.
    pub ending: Ending,
    /// Check that the group runs the key's `Hash`, `Eq` and `Clone` only while a caller joins
    /// (its first poll) or in `forget`, never after (the `key_race` target).
    pub check_keys: bool,
    /// Each group's bound on keys in flight.
    pub bound: Bound,
    /// Run under a recording `tracing` subscriber, with named groups that trace keys, and
    /// check the flights' spans, the callers' links and the events against the model (the
    /// `trace_race` target).
    pub trace: bool,
}

/// Decodes operations until the input runs out (or [`MAX_OPS`]), with no length prefix or
/// "one more" flags in between: every byte is part of an operation, so that the fuzzer's
/// mutations change operations rather than cut the list short.
fn ops<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> Result<Vec<T>> {
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        ops.push(u.arbitrary()?);
    }
    Ok(ops)
}

/// The `forget_race` target's input: joins, completions, forgets and joins again over 2 to 4
/// keys, so that many callers meet on one key and old flights overlap new ones.
#[derive(Clone, Debug)]
pub struct ForgetRace {
    /// The key count, as 2 plus this modulo 3.
    pub keys: u8,
    /// Which method the callers use.
    pub modes: Modes,
    /// How the scenario ends.
    pub ending: Ending,
    /// The operations (decoded until the input runs out).
    pub ops: Vec<ForgetOp>,
}

/// An operation of the `forget_race` target.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ForgetOp {
    /// A new call, polled at once or later.
    Join {
        /// The key.
        key: u8,
        /// shared-mode `work` (in mixed mode: a key keeps the mode of its first caller).
        shared: bool,
        /// Polled at once.
        poll: bool,
    },
    /// A poll of one caller.
    Poll {
        /// Which caller.
        caller: u8,
    },
    /// An executor's turn.
    Settle,
    /// An execution completes.
    Complete {
        /// Which execution.
        exec: u8,
    },
    /// `forget(key)`.
    Forget {
        /// The key.
        key: u8,
    },
    /// A caller is dropped.
    Drop {
        /// Which caller.
        caller: u8,
    },
    /// The next operations run while an execution is inside its poll.
    Arm {
        /// Which execution.
        exec: u8,
        /// How many operations (1 + this modulo 4).
        ops: u8,
    },
}

impl ForgetRace {
    /// The scenario this input stands for.
    pub fn scenario(&self) -> Scenario {
        let ops = self.ops.iter().map(|op| match *op {
            ForgetOp::Join { key, shared, poll } => {
                Op::Join { key, shared: self.modes.shared(shared), timed: false, poll, start: Start::Pending }
            }
            ForgetOp::Poll { caller } => Op::Poll { caller },
            ForgetOp::Settle => Op::Settle,
            ForgetOp::Complete { exec } => Op::Complete { exec },
            ForgetOp::Forget { key } => Op::Forget { key },
            ForgetOp::Drop { caller } => Op::Drop { caller },
            ForgetOp::Arm { exec, ops } => Op::Arm { exec, ops: 1 + ops % 4 },
        });
        Scenario {
            keys: 2 + self.keys % 3,
            ops: ops.collect(),
            ending: self.ending,
            check_keys: false,
            bound: Bound::None,
            trace: false,
        }
    }
}

impl<'a> Arbitrary<'a> for ForgetRace {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self { keys: u.arbitrary()?, modes: u.arbitrary()?, ending: u.arbitrary()?, ops: ops(u)? })
    }
}

/// The `cancellation_race` target's input: joins, polls, drops of leaders and followers,
/// stalls, panics, completions and timeouts over one or two keys, in work mode, shared-work
/// mode or both at once.
#[derive(Clone, Debug)]
pub struct CancellationRace {
    /// Two keys rather than one.
    pub two_keys: bool,
    /// Which method the callers use.
    pub modes: Modes,
    /// How the scenario ends.
    pub ending: Ending,
    /// The operations (decoded until the input runs out).
    pub ops: Vec<CancelOp>,
}

/// An operation of the `cancellation_race` target.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum CancelOp {
    /// A new call.
    Join {
        /// The key.
        key: u8,
        /// shared-mode `work` (in mixed mode: a key keeps the mode of its first caller).
        shared: bool,
        /// Wrapped in a `Timeout`.
        timed: bool,
        /// Polled at once.
        poll: bool,
        /// What its work does.
        start: Start,
    },
    /// A poll of one caller.
    Poll {
        /// Which caller.
        caller: u8,
    },
    /// An executor's turn.
    Settle,
    /// A caller stops being polled.
    Stall {
        /// Which caller.
        caller: u8,
    },
    /// A caller is dropped.
    Drop {
        /// Which caller.
        caller: u8,
    },
    /// The leader of a key's flight is dropped.
    DropLeader {
        /// The key.
        key: u8,
    },
    /// An execution completes.
    Complete {
        /// Which execution.
        exec: u8,
    },
    /// An execution panics.
    Panic {
        /// Which execution.
        exec: u8,
    },
    /// An execution's waker fires with nothing to do.
    Wake {
        /// Which execution.
        exec: u8,
    },
    /// A timed caller's timer fires.
    Timeout {
        /// Which timed caller.
        caller: u8,
    },
    /// An execution yields on its next polls.
    Yield {
        /// Which execution.
        exec: u8,
        /// How many polls yield (1 + this modulo 4).
        times: u8,
    },
    /// The next operations run while an execution is inside its poll.
    Arm {
        /// Which execution.
        exec: u8,
        /// How many operations (1 + this modulo 4).
        ops: u8,
    },
}

impl<'a> Arbitrary<'a> for CancellationRace {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self { two_keys: u.arbitrary()?, modes: u.arbitrary()?, ending: u.arbitrary()?, ops: ops(u)? })
    }
}

impl CancellationRace {
    /// The scenario this input stands for.
    pub fn scenario(&self) -> Scenario {
        let ops = self.ops.iter().map(|op| match *op {
            CancelOp::Join { key, shared, timed, poll, start } => {
                Op::Join { key, shared: self.modes.shared(shared), timed, poll, start }
            }
            CancelOp::Poll { caller } => Op::Poll { caller },
            CancelOp::Settle => Op::Settle,
            CancelOp::Stall { caller } => Op::Stall { caller },
            CancelOp::Drop { caller } => Op::Drop { caller },
            CancelOp::DropLeader { key } => Op::DropLeader { key },
            CancelOp::Complete { exec } => Op::Complete { exec },
            CancelOp::Panic { exec } => Op::Panic { exec },
            CancelOp::Wake { exec } => Op::Wake { exec },
            CancelOp::Timeout { caller } => Op::FireTimer { caller },
            CancelOp::Arm { exec, ops } => Op::Arm { exec, ops: 1 + ops % 4 },
            CancelOp::Yield { exec, times } => Op::Yield { exec, times: 1 + times % 4 },
        });
        Scenario {
            keys: 1 + u8::from(self.two_keys),
            ops: ops.collect(),
            ending: self.ending,
            check_keys: false,
            bound: Bound::None,
            trace: false,
        }
    }
}

/// The `unwind_race` target's input: the cancellation race's operations plus user code that
/// panics outside the work's poll (a value's `Clone` while the result is handed out, the work's
/// `Drop` after it returned or when it is abandoned) and wakers that change between polls.
#[derive(Clone, Debug)]
pub struct UnwindRace {
    /// Two keys rather than one.
    pub two_keys: bool,
    /// Which method the callers use.
    pub modes: Modes,
    /// How the scenario ends.
    pub ending: Ending,
    /// The operations (decoded until the input runs out).
    pub ops: Vec<UnwindOp>,
}

/// An operation of the `unwind_race` target.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum UnwindOp {
    /// A new call.
    Join {
        /// The key.
        key: u8,
        /// shared-mode `work` (in mixed mode: a key keeps the mode of its first caller).
        shared: bool,
        /// Wrapped in a `Timeout`.
        timed: bool,
        /// Polled at once.
        poll: bool,
        /// What its work does.
        start: Start,
    },
    /// A poll of one caller.
    Poll {
        /// Which caller.
        caller: u8,
    },
    /// An executor's turn.
    Settle,
    /// A caller stops being polled.
    Stall {
        /// Which caller.
        caller: u8,
    },
    /// A caller is dropped.
    Drop {
        /// Which caller.
        caller: u8,
    },
    /// The leader of a key's flight is dropped.
    DropLeader {
        /// The key.
        key: u8,
    },
    /// An execution completes.
    Complete {
        /// Which execution.
        exec: u8,
    },
    /// An execution panics.
    Panic {
        /// Which execution.
        exec: u8,
    },
    /// An execution yields on its next polls.
    Yield {
        /// Which execution.
        exec: u8,
        /// How many polls yield (1 + this modulo 4).
        times: u8,
    },
    /// The next operations run while an execution is inside its poll.
    Arm {
        /// Which execution.
        exec: u8,
        /// How many operations (1 + this modulo 4).
        ops: u8,
    },
    /// The next clone of an execution's value panics.
    ClonePanics {
        /// Which execution.
        exec: u8,
    },
    /// An execution's `Drop` panics.
    DropPanics {
        /// Which execution.
        exec: u8,
    },
    /// A caller gets a new waker.
    NewWaker {
        /// Which caller.
        caller: u8,
    },
    /// A timed caller's timer fires.
    Timeout {
        /// Which timed caller.
        caller: u8,
    },
}

impl<'a> Arbitrary<'a> for UnwindRace {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self { two_keys: u.arbitrary()?, modes: u.arbitrary()?, ending: u.arbitrary()?, ops: ops(u)? })
    }
}

impl UnwindRace {
    /// The scenario this input stands for.
    pub fn scenario(&self) -> Scenario {
        let ops = self.ops.iter().map(|op| match *op {
            UnwindOp::Join { key, shared, timed, poll, start } => {
                Op::Join { key, shared: self.modes.shared(shared), timed, poll, start }
            }
            UnwindOp::Poll { caller } => Op::Poll { caller },
            UnwindOp::Settle => Op::Settle,
            UnwindOp::Stall { caller } => Op::Stall { caller },
            UnwindOp::Drop { caller } => Op::Drop { caller },
            UnwindOp::DropLeader { key } => Op::DropLeader { key },
            UnwindOp::Complete { exec } => Op::Complete { exec },
            UnwindOp::Panic { exec } => Op::Panic { exec },
            UnwindOp::Yield { exec, times } => Op::Yield { exec, times: 1 + times % 4 },
            UnwindOp::Arm { exec, ops } => Op::Arm { exec, ops: 1 + ops % 4 },
            UnwindOp::ClonePanics { exec } => Op::ClonePanics { exec },
            UnwindOp::DropPanics { exec } => Op::DropPanics { exec },
            UnwindOp::NewWaker { caller } => Op::NewWaker { caller },
            UnwindOp::Timeout { caller } => Op::FireTimer { caller },
        });
        Scenario {
            keys: 1 + u8::from(self.two_keys),
            ops: ops.collect(),
            ending: self.ending,
            check_keys: false,
            bound: Bound::None,
            trace: false,
        }
    }
}

/// The `key_race` target's input: joins, leaves, completions and forgets over 2 to 4 keys
/// whose `Hash`, `Eq` or `Clone` panic when armed; the group must run them only while a caller
/// joins (or in `forget`), never once a caller is in a flight.
#[derive(Clone, Debug)]
pub struct KeyRace {
    /// The key count, as 2 plus this modulo 3.
    pub keys: u8,
    /// Which method the callers use.
    pub modes: Modes,
    /// How the scenario ends.
    pub ending: Ending,
    /// The groups' bound on keys in flight: a leader clones its key before it takes a permit,
    /// so a panicking `Clone` must leave none taken.
    pub bound: Bound,
    /// The operations (decoded until the input runs out).
    pub ops: Vec<KeyOp>,
}

/// An operation of the `key_race` target.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum KeyOp {
    /// A new call, polled at once or later.
    Join {
        /// The key.
        key: u8,
        /// shared-mode `work` (in mixed mode: a key keeps the mode of its first caller).
        shared: bool,
        /// Polled at once.
        poll: bool,
    },
    /// A poll of one caller.
    Poll {
        /// Which caller.
        caller: u8,
    },
    /// An executor's turn.
    Settle,
    /// A caller is dropped.
    Drop {
        /// Which caller.
        caller: u8,
    },
    /// The leader of a key's flight is dropped.
    DropLeader {
        /// The key.
        key: u8,
    },
    /// An execution completes.
    Complete {
        /// Which execution.
        exec: u8,
    },
    /// `forget(key)`.
    Forget {
        /// The key.
        key: u8,
    },
    /// The next call of the keys' `what` panics.
    KeyPanics {
        /// Which method.
        what: KeyFn,
    },
}

impl<'a> Arbitrary<'a> for KeyRace {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self {
            keys: u.arbitrary()?,
            modes: u.arbitrary()?,
            ending: u.arbitrary()?,
            bound: u.arbitrary()?,
            ops: ops(u)?,
        })
    }
}

impl KeyRace {
    /// The scenario this input stands for.
    pub fn scenario(&self) -> Scenario {
        let ops = self.ops.iter().map(|op| match *op {
            KeyOp::Join { key, shared, poll } => {
                Op::Join { key, shared: self.modes.shared(shared), timed: false, poll, start: Start::Pending }
            }
            KeyOp::Poll { caller } => Op::Poll { caller },
            KeyOp::Settle => Op::Settle,
            KeyOp::Drop { caller } => Op::Drop { caller },
            KeyOp::DropLeader { key } => Op::DropLeader { key },
            KeyOp::Complete { exec } => Op::Complete { exec },
            KeyOp::Forget { key } => Op::Forget { key },
            KeyOp::KeyPanics { what } => Op::KeyPanics { what },
        });
        Scenario {
            keys: 2 + self.keys % 3,
            ops: ops.collect(),
            ending: self.ending,
            check_keys: true,
            bound: self.bound,
            trace: false,
        }
    }
}

/// The `trace_race` target's input: the cancellation race's joins, polls, drops, completions,
/// panics, timeouts and pauses inside the work, plus forgets, a bound on keys in flight, and
/// leaders paused in their key's `Debug` (inside their join, before their flight has its span)
/// while other callers join, poll and leave; run under a recording `tracing` subscriber, whose
/// spans, links and events are checked against the model.
#[derive(Clone, Debug)]
pub struct TraceRace {
    /// Two keys rather than one.
    pub two_keys: bool,
    /// Which method the callers use.
    pub modes: Modes,
    /// How the scenario ends.
    pub ending: Ending,
    /// The groups' bound on keys in flight.
    pub bound: Bound,
    /// The operations (decoded until the input runs out).
    pub ops: Vec<TraceOp>,
}

/// An operation of the `trace_race` target.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum TraceOp {
    /// A new call.
    Join {
        /// The key.
        key: u8,
        /// shared-mode `work` (in mixed mode: a key keeps the mode of its first caller).
        shared: bool,
        /// Wrapped in a `Timeout`.
        timed: bool,
        /// Polled at once.
        poll: bool,
        /// What its work does.
        start: Start,
    },
    /// A poll of one caller.
    Poll {
        /// Which caller.
        caller: u8,
    },
    /// An executor's turn.
    Settle,
    /// A caller is dropped.
    Drop {
        /// Which caller.
        caller: u8,
    },
    /// The leader of a key's flight is dropped.
    DropLeader {
        /// The key.
        key: u8,
    },
    /// An execution completes.
    Complete {
        /// Which execution.
        exec: u8,
    },
    /// An execution panics.
    Panic {
        /// Which execution.
        exec: u8,
    },
    /// A timed caller's timer fires.
    Timeout {
        /// Which timed caller.
        caller: u8,
    },
    /// `forget(key)`.
    Forget {
        /// The key.
        key: u8,
    },
    /// The next operations run while an execution is inside its poll.
    Arm {
        /// Which execution.
        exec: u8,
        /// How many operations (1 + this modulo 4).
        ops: u8,
    },
    /// The next operations run while the next new flight's leader is inside its key's `Debug`.
    PauseInDebug {
        /// How many operations (1 + this modulo 4).
        ops: u8,
    },
}

impl<'a> Arbitrary<'a> for TraceRace {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self {
            two_keys: u.arbitrary()?,
            modes: u.arbitrary()?,
            ending: u.arbitrary()?,
            bound: u.arbitrary()?,
            ops: ops(u)?,
        })
    }
}

impl TraceRace {
    /// The scenario this input stands for.
    pub fn scenario(&self) -> Scenario {
        let ops = self.ops.iter().map(|op| match *op {
            TraceOp::Join { key, shared, timed, poll, start } => {
                Op::Join { key, shared: self.modes.shared(shared), timed, poll, start }
            }
            TraceOp::Poll { caller } => Op::Poll { caller },
            TraceOp::Settle => Op::Settle,
            TraceOp::Drop { caller } => Op::Drop { caller },
            TraceOp::DropLeader { key } => Op::DropLeader { key },
            TraceOp::Complete { exec } => Op::Complete { exec },
            TraceOp::Panic { exec } => Op::Panic { exec },
            TraceOp::Timeout { caller } => Op::FireTimer { caller },
            TraceOp::Forget { key } => Op::Forget { key },
            TraceOp::Arm { exec, ops } => Op::Arm { exec, ops: 1 + ops % 4 },
            TraceOp::PauseInDebug { ops } => Op::PauseInDebug { ops: 1 + ops % 4 },
        });
        Scenario {
            keys: 1 + u8::from(self.two_keys),
            ops: ops.collect(),
            ending: self.ending,
            check_keys: false,
            bound: self.bound,
            trace: true,
        }
    }
}
