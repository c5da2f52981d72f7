//! The blocking API: the same flights, for plain threads. Waiting parks the thread on the
//! flight's `event-listener` event; async and blocking callers can share one flight.

use crate::flight::Mode;
use crate::handle::{Driven, Handle, NotJoined};
use crate::outcome::{Aborted, Outcome};
use crate::table::Table;
use alloc::borrow::ToOwned;
use core::borrow::Borrow;
use core::hash::Hash;
use event_listener::{EventListener, Listener};

/// Joins `key`'s flight on this thread: runs `work` as the leader (or when promoted), or waits.
pub(crate) fn run<G, Q>(
    table: &G,
    key: &Q,
    work: impl FnOnce() -> G::Value,
) -> Result<Outcome<G::Value>, Aborted>
where
    G: Table,
    G::Value: Clone,
    G::Key: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    let mut handle = join(table, key)?;
    if !handle.is_leader() {
        match wait(&mut handle) {
            Waited::Finished(result) => return result,
            Waited::Promoted => {}
        }
    }
    // `catch` returns on a panic too, so the mark is always cleared.
    handle.flight().run_blocking_on_this_thread(true);
    let result = handle.flight().obs().in_span(|| crate::sync::catch(work));
    handle.flight().run_blocking_on_this_thread(false);
    match result {
        Ok(value) => handle.finish(Ok(value)),
        Err(payload) => handle.fail(payload),
    }
}

/// Joins `key`'s flight, first waiting out a closing one; refused when the group is full.
fn join<'a, G, Q>(table: &'a G, key: &Q) -> Result<Handle<G, &'a G>, Aborted>
where
    G: Table,
    G::Key: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToOwned<Owned = G::Key>,
{
    loop {
        match Handle::join(table, key, Mode::Work) {
            Ok(handle) => return Ok(handle),
            Err(NotJoined::Full(aborted)) => return Err(aborted),
            Err(NotJoined::Closing(flight)) => {
                let mut listener: Option<EventListener> = None;
                while flight.load().is_closing() {
                    match listener.take() {
                        // Listen first, then check again (never check-then-listen).
                        None => listener = Some(flight.listen()),
                        Some(l) => l.wait(),
                    }
                }
            }
        }
    }
}

enum Waited<V> {
    Finished(Result<Outcome<V>, Aborted>),
    Promoted,
}

/// Parks until the flight finishes, this caller is promoted, or (shared work) it can drive.
fn wait<G: Table>(handle: &mut Handle<G, &G>) -> Waited<G::Value>
where
    G::Value: Clone,
{
    let mut listener: Option<EventListener> = None;
    loop {
        if let Some(result) = handle.finished_result() {
            return Waited::Finished(result);
        }
        if handle.try_promote() {
            return Waited::Promoted;
        }
        assert!(
            !handle.flight().is_run_by_this_thread(),
            "coalescer: re-entrant `work_blocking` for a key whose work this thread is running; \
             it would wait on itself forever"
        );
        if handle.flight().is_shared() {
            match handle.drive() {
                Driven::Finished(result) => return Waited::Finished(result),
                Driven::Yielded => {
                    std::thread::yield_now();
                    continue;
                }
                Driven::Idle => {}
            }
        }
        match listener.take() {
            // Listen first, then check the state again (never check-then-listen).
            None => listener = Some(handle.flight().listen()),
            Some(l) => l.wait(),
        }
    }
}
