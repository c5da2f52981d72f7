//! The conformance suite of `coalescer`: one set of behavioural scenarios, written once against
//! a small [`Runtime`] trait and run on every runtime (tokio multi-thread and current-thread,
//! async-std, smol) and on plain threads with the blocking API ([`Threads`]).
//!
//! `tests/conformance.rs` instantiates each scenario of [`scenarios`] on every runtime it applies
//! to, as `<runtime>::<scenario>`; `tests/send_sync.rs` asserts the auto traits of every public
//! future; `tests/adapters.rs` covers each adapter's own entry points.

mod probe;
mod runtime;
mod runtimes;
pub mod scenarios;

pub use probe::{Gate, Probe};
pub use runtime::{
    AsyncRuntime, Call, Runtime, Shutdown, Task, TestGroup, Watchdog, join_all, spawn_thread, until,
};
pub use runtimes::{AsyncStd, Smol, Threads, TokioCurrent, TokioMulti};
