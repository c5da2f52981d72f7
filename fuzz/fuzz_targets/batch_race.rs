//! Batches (`Group::work_batch`) racing single calls (`work`, `work_shared`) over 4 keys:
//! operation sequences of new batch and single calls, polls, drops of callers, and executions
//! (a batch's fetch or a single call's work) that complete (returning some of their keys,
//! leaving the others out), or panic; checked after every step, and after a final drain,
//! against the contract of issue 14:
//!
//! * **one execution of a key at a time**: an execution is never made while another live one
//!   (made, not dropped) holds one of its keys: a key in flight is joined, never fetched twice.
//!   The one exception is documented: a key whose callers all left is freed at once, though the
//!   batch's fetch goes on for the batch's other keys; a new call then fetches it again, and the
//!   old fetch's value for it must never reach anyone;
//! * **what each caller gets, per key**: the value its key's execution returned for it
//!   (`100 * execution + key`), or `None` when that execution left the key out, or `Aborted`
//!   with the planned panic's message when that execution panicked; the panic itself comes out
//!   of the poll of the one caller that drove it, no other;
//! * **nobody is stranded and nothing leaks**: once every execution is let finish and every
//!   caller is polled, every caller has its result, every execution was dropped exactly once,
//!   and no flight is in the air.
//!
//! Futures are polled by hand; an execution's waker is woken when the input completes it, as a
//! real fetch's would be, so a run is deterministic.

#![no_main]

use arbitrary::Arbitrary;
use coalescer::{Aborted, Group, Outcome};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The keys, borrowed by the single calls for as long as their futures live.
static KEY_VALUES: [u8; KEYS as usize] = [0, 1, 2, 3];
const KEYS: u8 = 4;
const MAX_OPS: usize = 64;
const PLANNED: &str = "fuzz: planned panic of an execution";

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Op {
    /// A batch call for the keys of this bit mask (polled once).
    Batch { keys: u8 },
    /// A single `work_shared` call.
    Shared { key: u8 },
    /// A single `work` call (work mode: promotions hand its key to a batch call).
    Work { key: u8 },
    /// Polls a caller.
    Poll { caller: u8 },
    /// A live execution returns, leaving out the keys of the bit mask `omit`.
    Complete { exec: u8, omit: u8 },
    /// A live execution panics when next polled.
    Panic { exec: u8 },
    /// Drops a caller's future.
    Drop { caller: u8 },
}

/// What the registry knows of one execution.
#[derive(Debug, Default)]
struct ExecState {
    keys: Vec<u8>,
    /// Told to return (leaving these keys out), or to panic.
    ready: Option<u8>,
    panic: bool,
    waker: Option<Waker>,
    /// Made and not dropped yet.
    live: bool,
    /// A batch's fetch (not a single call's work).
    batch: bool,
    /// Keys fetched again by a newer execution while this one was live (their callers all left).
    superseded: Vec<u8>,
    returned: bool,
    panicked: bool,
}

type Registry = Arc<Mutex<Vec<ExecState>>>;

/// One execution of some keys (a batch's fetch, or a single call's work).
struct Exec {
    id: usize,
    registry: Registry,
}

impl Exec {
    fn new(registry: &Registry, keys: Vec<u8>, batch: bool) -> Self {
        let mut execs = registry.lock().unwrap();
        for other in execs.iter_mut().filter(|e| e.live) {
            let shared: Vec<u8> = keys.iter().copied().filter(|k| other.keys.contains(k)).collect();
            if shared.is_empty() {
                continue;
            }
            // Only a batch's fetch goes on for keys nobody waits for any more.
            assert!(
                other.batch && other.keys.len() > 1,
                "keys {shared:?} made into a second live execution: fetched twice"
            );
            other.superseded.extend(shared);
        }
        execs.push(ExecState { keys, live: true, batch, ..ExecState::default() });
        Self { id: execs.len() - 1, registry: registry.clone() }
    }
}

impl Future for Exec {
    type Output = Vec<(u8, u32)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut execs = self.registry.lock().unwrap();
        let e = &mut execs[self.id];
        if e.panic {
            e.panicked = true;
            drop(execs);
            std::panic::panic_any(PLANNED);
        }
        let Some(omit) = e.ready else {
            e.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        e.returned = true;
        let id = u32::try_from(self.id).unwrap();
        Poll::Ready(
            e.keys.iter().filter(|&&k| omit & (1 << k) == 0).map(|&k| (k, 100 * id + u32::from(k))).collect(),
        )
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        let mut execs = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(execs[self.id].live, "an execution was dropped twice");
        execs[self.id].live = false;
    }
}

type Results = Vec<Result<Outcome<Option<u32>>, Aborted>>;

struct Caller<'a> {
    keys: Vec<u8>,
    fut: Option<Pin<Box<dyn Future<Output = Results> + 'a>>>,
    done: bool,
}

fn decode(data: &[u8]) -> Vec<Op> {
    let mut u = arbitrary::Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PLANNED) {
                previous(info);
            }
        }));
    });
}

/// Polls caller `c`; checks its results if it finished (or that its panic was a planned one).
fn poll(callers: &mut [Caller<'_>], c: usize, registry: &Registry) {
    let caller = &mut callers[c];
    let Some(fut) = caller.fut.as_mut() else { return };
    let polled =
        catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))));
    match polled {
        Ok(Poll::Pending) => {}
        Ok(Poll::Ready(results)) => {
            caller.fut = None;
            caller.done = true;
            check_results(&caller.keys, &results, registry);
        }
        Err(payload) => {
            assert_eq!(payload.downcast_ref::<&str>(), Some(&PLANNED), "an unplanned panic");
            caller.done = true;
            caller.fut = None; // a task whose poll panicked is dropped
        }
    }
}

fn check_results(keys: &[u8], results: &Results, registry: &Registry) {
    assert_eq!(keys.len(), results.len(), "one result per key, in order");
    let execs = registry.lock().unwrap();
    for (&key, result) in keys.iter().zip(results) {
        match result {
            Ok(outcome) => match *outcome.value() {
                Some(v) => {
                    let (id, k) = ((v / 100) as usize, (v % 100) as u8);
                    assert_eq!(k, key, "the value of another key");
                    let e = &execs[id];
                    assert!(e.returned && e.keys.contains(&key), "a value no execution of the key returned");
                    assert_eq!(e.ready.unwrap() & (1 << key), 0, "a value for a key its execution left out");
                    assert!(
                        !e.superseded.contains(&key),
                        "a value of key {key} from a fetch whose callers of it had all left"
                    );
                }
                None => assert!(
                    execs
                        .iter()
                        .any(|e| e.returned && e.keys.contains(&key) && e.ready.unwrap() & (1 << key) != 0),
                    "`None` for key {key}, which no execution left out"
                ),
            },
            Err(aborted) => {
                assert!(aborted.is_panic() && aborted.message() == Some(PLANNED), "unexpected {aborted:?}");
                assert!(
                    execs.iter().any(|e| e.panicked && e.keys.contains(&key)),
                    "`Aborted` for key {key}, whose executions never panicked"
                );
            }
        }
    }
}

fn run(ops: &[Op]) {
    install_panic_hook();
    let registry: Registry = Arc::default();
    let group = Group::<u8, Option<u32>>::with_capacity(8);
    let mut callers: Vec<Caller<'_>> = Vec::new();
    let fetch = {
        let registry = registry.clone();
        move |keys: Vec<u8>| Exec::new(&registry, keys, true)
    };
    let single = |key: u8| {
        let registry = registry.clone();
        move || {
            let exec = Exec::new(&registry, vec![key], false);
            async move { exec.await.first().map(|&(_, v)| v) }
        }
    };
    for &op in ops {
        match op {
            Op::Batch { keys } => {
                let keys: Vec<u8> = (0..KEYS).filter(|k| keys & (1 << k) != 0).collect();
                let keys = if keys.is_empty() { vec![0] } else { keys };
                let fut = Box::pin(group.work_batch(keys.clone(), fetch.clone()));
                callers.push(Caller { keys, fut: Some(fut), done: false });
                let last = callers.len() - 1;
                poll(&mut callers, last, &registry);
            }
            Op::Shared { key } | Op::Work { key } => {
                let key = key % KEYS;
                // A group's mode is its type: the batch's group is an inline one, so both kinds
                // of single call are its `work` (a batch's own flights are shared work).
                let call = group.work(&KEY_VALUES[usize::from(key)], single(key));
                let call: Pin<Box<dyn Future<Output = Results>>> = Box::pin(async move { vec![call.await] });
                callers.push(Caller { keys: vec![key], fut: Some(call), done: false });
                let last = callers.len() - 1;
                poll(&mut callers, last, &registry);
            }
            Op::Poll { caller } if !callers.is_empty() => {
                let c = usize::from(caller) % callers.len();
                poll(&mut callers, c, &registry);
            }
            Op::Drop { caller } if !callers.is_empty() => {
                let c = usize::from(caller) % callers.len();
                let fut = callers[c].fut.take();
                drop(fut);
            }
            Op::Complete { exec, omit } => tell(&registry, exec, Some(omit)),
            Op::Panic { exec } => tell(&registry, exec, None),
            Op::Poll { .. } | Op::Drop { .. } => {}
        }
    }
    drain(&group, &mut callers, &registry);
}

/// Tells a live execution that has not been told yet to return, leaving out the keys of `omit`
/// (or, `None`, to panic), and wakes it.
fn tell(registry: &Registry, exec: u8, omit: Option<u8>) {
    let waker = {
        let mut execs = registry.lock().unwrap();
        let untold: Vec<usize> = (0..execs.len())
            .filter(|&i| execs[i].live && execs[i].ready.is_none() && !execs[i].panic)
            .collect();
        if untold.is_empty() {
            return;
        }
        let e = &mut execs[untold[usize::from(exec) % untold.len()]];
        match omit {
            Some(omit) => e.ready = Some(omit),
            None => e.panic = true,
        }
        e.waker.take()
    };
    if let Some(waker) = waker {
        waker.wake(); // outside the registry's lock
    }
}

/// Lets every execution return and polls every caller until all have their results.
fn drain(group: &Group<u8, Option<u32>>, callers: &mut [Caller<'_>], registry: &Registry) {
    for _round in 0..64 {
        let wakers: Vec<Waker> = {
            let mut execs = registry.lock().unwrap();
            execs
                .iter_mut()
                .filter(|e| e.live && e.ready.is_none() && !e.panic)
                .filter_map(|e| {
                    e.ready = Some(0);
                    e.waker.take()
                })
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        for c in 0..callers.len() {
            poll(callers, c, registry);
        }
        if callers.iter().all(|c| c.fut.is_none()) {
            break;
        }
    }
    let stranded: Vec<&[u8]> = callers.iter().filter(|c| c.fut.is_some()).map(|c| &*c.keys).collect();
    assert!(stranded.is_empty(), "callers stranded after every execution returned: {stranded:?}");
    let execs = registry.lock().unwrap();
    assert!(execs.iter().all(|e| !e.live), "an execution was leaked: {execs:?}");
    assert!(group.is_idle(), "a flight was left in the air: {group:?}");
}

fuzz_target!(|data: &[u8]| {
    let ops = decode(data);
    if std::env::var_os("BATCH_RACE_PRINT").is_some() {
        eprintln!("{ops:?}");
    }
    run(&ops);
});
