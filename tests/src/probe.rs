//! Observable work: [`Probe`] counts its runs, says when it has started, waits for a [`Gate`],
//! and records whether its future was dropped before it finished.

use event_listener::{Event, Listener};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Once};

/// A latch that async and blocking waiters can wait on: once open, it stays open.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicBool,
    event: Event,
}

impl Gate {
    /// Opens the gate and wakes every waiter.
    pub fn open(&self) {
        self.open.store(true, SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.open.load(SeqCst)
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        while !self.is_open() {
            let listener = self.event.listen();
            if self.is_open() {
                break;
            }
            listener.await;
        }
    }

    /// Parks the thread until the gate is open.
    pub fn wait_blocking(&self) {
        while !self.is_open() {
            let listener = self.event.listen();
            if self.is_open() {
                break;
            }
            listener.wait();
        }
    }
}

#[derive(Debug)]
struct State {
    value: u32,
    /// `None`: the work returns at once. `Some`: it waits for the gate to open.
    release: Option<Gate>,
    panic: Option<&'static str>,
    started: Gate,
    runs: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
}

/// The scenarios' work, shared by every caller that might run it; cheap to clone.
///
/// Each run counts itself, opens [`started`](Self::started), waits for
/// [`release`](Self::release) when the probe is gated, then panics or returns its value. A run
/// whose future is dropped before it returned counts in [`dropped`](Self::dropped).
#[derive(Clone, Debug)]
pub struct Probe(Arc<State>);

impl Probe {
    fn with(value: u32, gated: bool, panic: Option<&'static str>) -> Self {
        Self(Arc::new(State {
            value,
            release: gated.then(Gate::default),
            panic,
            started: Gate::default(),
            runs: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }))
    }

    /// Work that returns `value` at once.
    pub fn ready(value: u32) -> Self {
        Self::with(value, false, None)
    }

    /// Work that returns `value` once [`release`](Self::release) is called.
    pub fn gated(value: u32) -> Self {
        Self::with(value, true, None)
    }

    /// Work that panics with `message` once [`release`](Self::release) is called. Its panics
    /// are expected, so they are kept out of the test output (other panics are reported).
    pub fn panicking(message: &'static str) -> Self {
        static QUIET: Once = Once::new();
        QUIET.call_once(|| {
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if info.location().is_none_or(|at| !at.file().ends_with("probe.rs")) {
                    report(info);
                }
            }));
        });
        Self::with(0, true, Some(message))
    }

    /// Lets every run of a gated probe go on, now and later.
    pub fn release(&self) {
        self.0.release.as_ref().expect("only a gated probe is released").open();
    }

    /// Opened by the first run.
    pub fn started(&self) -> &Gate {
        &self.0.started
    }

    /// How many runs started.
    pub fn runs(&self) -> usize {
        self.0.runs.load(SeqCst)
    }

    /// How many runs returned their value (a side effect that outlives every caller).
    pub fn finished(&self) -> usize {
        self.0.finished.load(SeqCst)
    }

    /// How many runs were dropped before they returned.
    pub fn dropped(&self) -> usize {
        self.0.dropped.load(SeqCst)
    }

    /// One run, as a future (for the async API).
    pub fn work(&self) -> impl Future<Output = u32> + Send + 'static {
        let state = self.0.clone();
        async move {
            let run = Run::start(&state);
            if let Some(release) = &state.release {
                release.wait().await;
            }
            run.finish()
        }
    }

    /// One run, on this thread (for the blocking API).
    pub fn run_blocking(&self) -> u32 {
        let run = Run::start(&self.0);
        if let Some(release) = &self.0.release {
            release.wait_blocking();
        }
        run.finish()
    }
}

/// One run in progress; dropped before [`finish`](Self::finish), it counts as dropped.
struct Run<'a>(&'a State, bool);

impl<'a> Run<'a> {
    fn start(state: &'a State) -> Self {
        state.runs.fetch_add(1, SeqCst);
        state.started.open();
        Self(state, false)
    }

    fn finish(mut self) -> u32 {
        if let Some(message) = self.0.panic {
            self.1 = true; // a panic is not a drop
            panic!("{message}");
        }
        self.0.finished.fetch_add(1, SeqCst);
        self.1 = true;
        self.0.value
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, SeqCst);
        }
    }
}
