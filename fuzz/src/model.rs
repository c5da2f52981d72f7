//! The reference model: what ../shared/DESIGN.md and the `Group` docs promise, as plain data.
//!
//! It knows nothing of the crate under test. It says who leads which flight, which
//! executions may be running, which result each caller must get, and what must happen when a
//! caller leaves; the driver observes the real group and asks the model whether each
//! observation is allowed.

use crate::probe::{CallerId, ExecId, Plan};

/// Index of one flight (one entry a key had in the group, from its leader's join on).
pub(crate) type FlightId = usize;

/// How a flight's work runs: fixed by the call that created the flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `Group::work`: the work runs inside the future of the caller that started it.
    Work,
    /// a shared group's `work`: the flight owns the work and any member drives it.
    Shared,
}

/// How a flight ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The execution returned its value.
    Value(ExecId),
    /// The execution (or the closure that would have made it) panicked.
    Panic(ExecId),
}

/// One flight.
#[derive(Debug)]
pub(crate) struct Flight {
    pub(crate) key: u8,
    pub(crate) mode: Mode,
    /// The caller whose join created the flight.
    pub(crate) leader: CallerId,
    /// Callers counted in the flight that have neither got their result nor left.
    pub(crate) members: Vec<CallerId>,
    /// Work mode: the member whose own execution is running. `None` once it left: the flight
    /// is vacant until a member is promoted.
    pub(crate) runner: Option<CallerId>,
    /// The execution in the air, until it is dropped.
    pub(crate) exec: Option<ExecId>,
    /// An execution was started for this flight.
    pub(crate) started: bool,
    /// `forget` detached the flight from its key.
    pub(crate) forgotten: bool,
    /// Set when the flight ended.
    pub(crate) end: Option<End>,
    /// How many callers were counted when it ended: the result went to all of them.
    pub(crate) members_at_end: usize,
    /// It holds a permit of its group's bound on keys in flight.
    pub(crate) permit: bool,
    /// Its leader's join is over, so (in a traced run) the flight has its span: set when the
    /// leader's first poll returns. A leader paused in its key's `Debug` is inside its join.
    pub(crate) watched: bool,
    /// Its events, as the core reports them in its span (`core/src/observe.rs`): promotions,
    /// panics of its work, whether it was cancelled (every caller left), and its forgets
    /// after and before it had its span.
    pub(crate) promotions: u64,
    pub(crate) panics: u64,
    pub(crate) cancelled: bool,
    pub(crate) forgets: u64,
    pub(crate) forgets_unwatched: u64,
}

impl Flight {
    pub(crate) fn is_live(&self) -> bool {
        self.end.is_none() && !self.members.is_empty()
    }
}

/// One execution of the work.
#[derive(Debug)]
pub(crate) struct Exec {
    pub(crate) key: u8,
    pub(crate) flight: FlightId,
    /// The caller whose closure made it.
    pub(crate) caller: CallerId,
    pub(crate) plan: Plan,
    /// Its waker was woken since it was last polled.
    pub(crate) woken: bool,
    /// It returned or panicked.
    pub(crate) ended: bool,
    pub(crate) dropped: bool,
}

/// Where a caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallerState {
    /// Made but never polled: it has not joined anything (futures are lazy).
    Unjoined,
    /// Counted in a flight, waiting for its result (or running the work).
    Member(FlightId),
    /// Got its result, panicked, or was dropped.
    Gone,
}

/// One caller.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) key: u8,
    pub(crate) mode: Mode,
    pub(crate) timed: bool,
    pub(crate) timer_fired: bool,
    pub(crate) stalled: bool,
    pub(crate) state: CallerState,
    /// The flight it joined as a follower (promoted later or not).
    pub(crate) followed: Option<FlightId>,
    /// It joined its flight while the flight's leader was inside its join (no span yet).
    pub(crate) joined_early: bool,
    /// When it finished or left its flight as a follower: whether the flight had its span
    /// then (it must have linked to it by then).
    pub(crate) ended_watched: Option<bool>,
}

impl Caller {
    pub(crate) fn is_live(&self) -> bool {
        self.state != CallerState::Gone
    }
}

/// The counters the group must report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) leaders: u64,
    pub(crate) followers: u64,
    pub(crate) promotions: u64,
    pub(crate) panics: u64,
    /// Flights every caller left before they ended.
    pub(crate) cancellations: u64,
    pub(crate) forgets: u64,
    /// Calls for a new key beyond the bound (refused, or run alone).
    pub(crate) overflows: u64,
}

/// What leaving a flight must do to its execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaveEffect {
    /// Nothing may happen to any execution.
    None,
    /// This execution must be dropped (cancelled) by the leave.
    Cancel(ExecId),
}

/// The whole model of one group.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) callers: Vec<Caller>,
    pub(crate) flights: Vec<Flight>,
    pub(crate) execs: Vec<Exec>,
    /// Each key's current flight: the one a new caller joins.
    pub(crate) current: [Option<FlightId>; 4],
    pub(crate) counts: Counts,
    /// Each group's bound on keys in flight (one group per mode): the limit, and whether a call
    /// beyond it runs alone (else it is refused).
    pub(crate) bound: Option<(usize, bool)>,
}

impl Model {
    /// A new, unjoined caller.
    pub(crate) fn add_caller(&mut self, key: u8, mode: Mode, timed: bool) -> CallerId {
        self.callers.push(Caller {
            key,
            mode,
            timed,
            timer_fired: false,
            stalled: false,
            state: CallerState::Unjoined,
            followed: None,
            joined_early: false,
            ended_watched: None,
        });
        self.callers.len() - 1
    }

    /// The number of keys with a flight in the group.
    pub(crate) fn in_flight(&self) -> usize {
        self.current.iter().flatten().count()
    }

    /// The flight `c` is counted in.
    pub(crate) fn flight_of(&self, c: CallerId) -> Option<FlightId> {
        match self.callers[c].state {
            CallerState::Member(f) => Some(f),
            CallerState::Unjoined | CallerState::Gone => None,
        }
    }

    /// How many permits of the bound the flights of `mode`'s group hold: from their first
    /// caller until they end, forgotten or not (an abandoned flight gives its permit back once
    /// its work is gone).
    pub(crate) fn permits_held(&self, mode: Mode) -> usize {
        let held = |f: &&Flight| {
            let abandoned = f.members.is_empty() && f.exec.is_none_or(|e| self.execs[e].dropped);
            f.mode == mode && f.permit && f.end.is_none() && !abandoned
        };
        self.flights.iter().filter(held).count()
    }

    /// `c`'s first poll: it follows its key's current flight, or leads a new one (which runs
    /// alone, never joined, when its group is at its bound and says so). `None`: the group is
    /// at its bound and refuses the new key; the caller joined nothing and is gone.
    pub(crate) fn join(&mut self, c: CallerId) -> Option<FlightId> {
        let caller = &self.callers[c];
        let (key, mode) = (caller.key, caller.mode);
        let f = match self.current[usize::from(key)] {
            Some(f) => {
                self.flights[f].members.push(c);
                self.counts.followers += 1;
                self.callers[c].followed = Some(f);
                self.callers[c].joined_early = !self.flights[f].watched;
                f
            }
            None => {
                let full = self.bound.filter(|&(limit, _)| self.permits_held(mode) >= limit);
                if full.is_some() {
                    self.counts.overflows += 1;
                }
                if let Some((_, false)) = full {
                    self.callers[c].state = CallerState::Gone;
                    return None;
                }
                let alone = full.is_some();
                self.flights.push(Flight {
                    key,
                    mode,
                    leader: c,
                    members: vec![c],
                    runner: None,
                    exec: None,
                    started: false,
                    // A flight that runs alone is never its key's current one: like a
                    // forgotten one, it may overlap the key's other flights.
                    forgotten: alone,
                    end: None,
                    members_at_end: 0,
                    permit: self.bound.is_some() && !alone,
                    watched: false,
                    promotions: 0,
                    panics: 0,
                    cancelled: false,
                    forgets: 0,
                    forgets_unwatched: 0,
                });
                self.counts.leaders += 1;
                let f = self.flights.len() - 1;
                if !alone {
                    self.current[usize::from(key)] = Some(f);
                }
                f
            }
        };
        self.callers[c].state = CallerState::Member(f);
        Some(f)
    }

    /// A refused caller's poll panicked in the key's `Hash`, `Eq` or `Clone` instead, before
    /// the group looked at its bound: it was not an overflow.
    pub(crate) fn unrefuse(&mut self) {
        self.counts.overflows -= 1;
    }

    /// `c`'s closure made execution `e` while `c` was polled for the first time (`first`) or
    /// again. Allowed for the leader of a new flight on its first poll, and for a member of a
    /// vacant work-mode flight (a promotion); never while another execution of the same flight
    /// is alive, nor while one of another flight of the same key is, unless one of the two
    /// flights was forgotten.
    pub(crate) fn start(&mut self, c: CallerId, e: ExecId, first: bool) -> Result<(), String> {
        let f = self.flight_of(c).ok_or("a caller that is not in a flight started work")?;
        let flight = &self.flights[f];
        if flight.end.is_some() {
            return Err(format!("caller {c} started work for flight {f}, which has ended"));
        }
        let leading = first && flight.leader == c && !flight.started;
        let promoted = flight.mode == Mode::Work && flight.started && flight.runner.is_none();
        if !leading && !promoted {
            return Err(format!(
                "caller {c} started work for flight {f} (leader {}, runner {:?}, mode {:?}): \
                 only a new flight's leader or a follower of a vacated work-mode flight may",
                flight.leader, flight.runner, flight.mode
            ));
        }
        let key = flight.key;
        for (other, x) in self.execs.iter().enumerate() {
            if x.dropped || x.key != key {
                continue;
            }
            let forgotten = self.flights[x.flight].forgotten || self.flights[f].forgotten;
            if x.flight == f || !forgotten {
                return Err(format!(
                    "execution {e} of flight {f} started while execution {other} of flight {} \
                     (same key {key}) is alive, and no forget separates them",
                    x.flight
                ));
            }
        }
        if promoted {
            self.counts.promotions += 1;
            self.flights[f].promotions += 1;
        }
        let flight = &mut self.flights[f];
        flight.started = true;
        flight.exec = Some(e);
        if flight.mode == Mode::Work {
            flight.runner = Some(c);
        }
        debug_assert_eq!(self.execs.len(), e, "executions are numbered in order");
        self.execs.push(Exec {
            key,
            flight: f,
            caller: c,
            plan: Plan::Pending,
            woken: false,
            ended: false,
            dropped: false,
        });
        Ok(())
    }

    /// Execution `e` was polled while the driver was polling `by`. Work-mode work is polled
    /// only by its runner; shared work by any member.
    pub(crate) fn polled(&mut self, e: ExecId, by: Option<CallerId>) -> Result<(), String> {
        let x = &self.execs[e];
        let flight = &self.flights[x.flight];
        if x.dropped || x.ended {
            return Err(format!("execution {e} was polled after it ended or was dropped"));
        }
        let allowed = match (flight.mode, by) {
            (Mode::Work, Some(c)) => flight.runner == Some(c),
            (Mode::Shared, Some(c)) => flight.members.contains(&c),
            (_, None) => false,
        };
        if !allowed {
            return Err(format!(
                "execution {e} of flight {} ({:?} mode) was polled by {by:?}, which does not \
                 run it (runner {:?}, members {:?})",
                x.flight, flight.mode, flight.runner, flight.members
            ));
        }
        self.execs[e].woken = false;
        Ok(())
    }

    /// Ends flight `f`: it leaves its key, and its members are owed `end`.
    pub(crate) fn end(&mut self, f: FlightId, end: End) {
        let flight = &mut self.flights[f];
        debug_assert!(flight.end.is_none());
        flight.end = Some(end);
        flight.members_at_end = flight.members.len();
        let key = usize::from(flight.key);
        if self.current[key] == Some(f) {
            self.current[key] = None;
        }
        let (End::Value(e) | End::Panic(e)) = end;
        self.execs[e].ended = true;
        if matches!(end, End::Panic(_)) {
            self.counts.panics += 1;
            self.flights[f].panics += 1;
        }
    }

    /// Execution `e`'s `Drop` panicked after it returned its value: a panic of its flight.
    pub(crate) fn drop_panicked(&mut self, e: ExecId) {
        self.counts.panics += 1;
        self.flights[self.execs[e].flight].panics += 1;
    }

    /// `c` finished or left its flight: a follower notes whether the flight had its span.
    fn ended(&mut self, c: CallerId) {
        if let Some(f) = self.callers[c].followed {
            self.callers[c].ended_watched = Some(self.flights[f].watched);
        }
    }

    /// Execution `e` was dropped.
    pub(crate) fn dropped(&mut self, e: ExecId) {
        let x = &mut self.execs[e];
        x.dropped = true;
        let flight = &mut self.flights[x.flight];
        if flight.exec == Some(e) {
            flight.exec = None;
        }
    }

    /// `c`'s join (its first poll) panicked in the key's `Hash`, `Eq` or `Clone`: it joined
    /// nothing and the group is as it was before ([`Model::join`] is undone).
    pub(crate) fn unjoin(&mut self, c: CallerId, f: FlightId) {
        self.callers[c].state = CallerState::Gone;
        let flight = &self.flights[f];
        if flight.leader == c && flight.members == [c] && !flight.started && f + 1 == self.flights.len() {
            let key = usize::from(flight.key);
            if flight.forgotten {
                // A flight that was to run alone (its group at its bound): the key's panic came
                // first, so the call was no overflow either.
                self.counts.overflows -= 1;
            }
            self.flights.pop();
            if self.current[key] == Some(f) {
                self.current[key] = None;
            }
            self.counts.leaders -= 1;
        } else {
            self.flights[f].members.retain(|&m| m != c);
            self.counts.followers -= 1;
            self.callers[c].followed = None;
        }
    }

    /// `c` got its result (or its poll re-raised the work's panic).
    pub(crate) fn finished(&mut self, c: CallerId) {
        self.ended(c);
        if let Some(f) = self.flight_of(c) {
            self.flights[f].members.retain(|&m| m != c);
        }
        self.callers[c].state = CallerState::Gone;
    }

    /// `c` was dropped. Returns what must happen to the flight's execution: a work-mode
    /// runner's own execution goes with it (the flight is vacated, for a promotion); shared
    /// work goes with the last member. A flight nobody is left in leaves its key.
    pub(crate) fn leave(&mut self, c: CallerId) -> LeaveEffect {
        let Some(f) = self.flight_of(c) else {
            self.callers[c].state = CallerState::Gone;
            return LeaveEffect::None;
        };
        self.ended(c);
        self.callers[c].state = CallerState::Gone;
        let flight = &mut self.flights[f];
        flight.members.retain(|&m| m != c);
        if flight.end.is_some() {
            return LeaveEffect::None;
        }
        let mut effect = LeaveEffect::None;
        if flight.mode == Mode::Work && flight.runner == Some(c) {
            flight.runner = None;
            effect = LeaveEffect::Cancel(flight.exec.expect("a runner runs an execution"));
        }
        if flight.members.is_empty() {
            self.counts.cancellations += 1;
            flight.cancelled = true;
            if flight.mode == Mode::Shared {
                effect = LeaveEffect::Cancel(flight.exec.expect("a started shared flight has work"));
            }
            let key = usize::from(flight.key);
            if self.current[key] == Some(f) {
                self.current[key] = None;
            }
        }
        effect
    }

    /// `forget(key)`: detaches the key's current flight; returns whether there was one.
    pub(crate) fn forget(&mut self, key: u8) -> bool {
        match self.current[usize::from(key)].take() {
            Some(f) => {
                let flight = &mut self.flights[f];
                flight.forgotten = true;
                if flight.watched {
                    flight.forgets += 1;
                } else {
                    flight.forgets_unwatched += 1;
                }
                self.counts.forgets += 1;
                true
            }
            None => false,
        }
    }

    /// The executions still alive, in order.
    pub(crate) fn running(&self) -> impl Iterator<Item = ExecId> + '_ {
        self.execs.iter().enumerate().filter(|(_, x)| !x.dropped && !x.ended).map(|(e, _)| e)
    }
}
