//! Fuzzing the `coalescer` crate's forget and cancellation races against a reference model.
//!
//! A fuzz input decodes (with [`arbitrary`]) into a [`Scenario`]: a list of operations over a
//! few keys (join, poll, settle, stall, drop a leader or a follower, complete, panic, wake,
//! yield, time out, forget, arm). One deterministic [driver](run) executes it against a real
//! `Group`: every future is polled by hand with a counting waker, and every work future is one
//! the driver controls (pending until told to complete or panic; it records when it is started,
//! polled and dropped). An armed work future pauses at the start of its next poll while the
//! following operations run, as another thread's would while one caller is inside the work's
//! poll (holding shared work, or running a work-mode leader's work); that poll runs on a worker
//! thread and the two hand over strictly, so a run stays reproducible. After every step the
//! driver compares what the group did with a plain model of the contract in `shared/DESIGN.md`
//! and the `Group` docs:
//!
//! * who leads which flight (the first caller for a key with no flight; a promoted follower
//!   after a work-mode leader is dropped), and the `counters()` that say so;
//! * which executions may run: a leader's on its first poll, a promoted follower's own; never
//!   two of one key at once unless `forget` separates their flights; work-mode work is dropped
//!   with the caller running it, shared work only with the last caller;
//! * what each finished caller got: the value of the execution that ended its flight, with
//!   `is_leader()` and `is_shared()` as documented, or `Aborted` (`is_panic`, with the message)
//!   for the other callers of a panicked flight, while the panic itself propagates out of the
//!   poll that ran the work;
//! * which wakers were woken: when a flight ends, every caller still waiting; after an
//!   executor's turn ([`Op::Settle`]) nobody who is being polled may be left behind
//!   (a woken shared work was driven, a vacated flight promoted someone, a result was taken);
//!   work that yields is not polled again within the same poll of its caller;
//! * that `in_flight()`/`is_idle()` match the model after every step, and that once every
//!   caller has finished or was dropped the group is idle and no execution, closure or value
//!   is left alive.
//!
//! * user code that panics outside the work's poll (issue 11's contract): a clone of the value
//!   that panics while the result is handed out reaches only the caller whose clone it was,
//!   every other caller still gets the value; the work's `Drop` that panics after the work
//!   returned leaves the flight with its value, resumes the panic in the caller that ran the
//!   work and counts as a panic; abandoned shared work whose `Drop` panics frees the key all
//!   the same, the panic coming out of the last caller's drop; a key's `Hash`, `Eq` or
//!   `Clone` that panics at the join reaches that caller, which joined nothing, and (in
//!   `key_race`) the group runs them only while a caller joins or in `forget`;
//! * wakers that change between polls: only the newest waker of a caller counts.
//!
//! * observability (issue 15; `trace_race`, whose runs install a recording `tracing`
//!   subscriber, scoped to the run and its worker threads, name the groups and trace their
//!   keys): each caller is polled and dropped inside a span of its own; there is one
//!   `coalescer.flight` span per flight that was led (none for a refused caller), a child of
//!   its leader's span, with its group's name and its key; a follower that finished or left
//!   after its flight had its span has exactly one `follows_from` link from its span to the
//!   flight's, and one "a caller joined" event in the flight's span, made inside its own (one
//!   that left before has at most that), and after an executor's turn every follower still
//!   waiting for a flight with a span has linked to it; promotions, panics, cancellations and
//!   forgets are events of the right flight's span as often as the model says they happened
//!   (a forget before the flight has its span may have none), each flight's span has one
//!   "flight ended" event with the callers that got its result, the bound's overflows are
//!   events in no span, and `counters()` count each join once (a leader when its join is
//!   over); the groups' metrics (`metrics` feature, a recorder installed while the groups are
//!   named) count the same, labelled by the group's name alone, with one duration and one
//!   waiters value (the callers that got the result) per flight. A key's `Debug`, which a leader runs to make its flight's span, can pause that
//!   leader inside its join ([`Op::PauseInDebug`]), its flight already in the map, while other
//!   callers join it, poll and leave.
//!
//! A panic of the work (or of armed user code) is an operation, not a failure; only broken
//! promises are. The targets, `forget_race`, `cancellation_race`, `unwind_race`, `key_race`
//! and `trace_race`, differ only in the operations their inputs can express.

pub mod cache_ops;
mod driver;
mod input;
mod model;
mod probe;
mod trace;

pub use driver::{Summary, Violation, run};
pub use input::{
    Bound, CancelOp, CancellationRace, Ending, ForgetOp, ForgetRace, KeyFn, KeyOp, KeyRace, MAX_OPS, Modes,
    Op, Scenario, Start, TraceOp, TraceRace, UnwindOp, UnwindRace,
};

/// Runs `scenario` and panics with the violation, if any: the fuzz targets' body.
pub fn check(scenario: &Scenario) {
    if let Err(violation) = run(scenario) {
        panic!("{violation}");
    }
}

/// Installs (once) a panic hook that stays silent for the work's planned panics and hands
/// every other panic to the hook that was there before (libFuzzer's, which aborts, so that a
/// panic of the group itself is reported as a crash even where the driver catches unwinding).
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if probe::planned_message(info.payload()).is_none() {
                previous(info);
            }
        }));
    });
}

/// `len` pseudo-random bytes from `seed` (xorshift: the same bytes on every machine), for the
/// smoke runs that put random inputs through a decoder without libFuzzer.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
