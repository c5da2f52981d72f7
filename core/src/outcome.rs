//! What a caller gets back: the value with its provenance, or a typed error.

use crate::sync::StdArc as Arc;
use crate::timeout::TimedOut;
use core::fmt;

/// A value handed out by a flight, with how this caller came by it.
///
/// Most callers want only the value ([`Outcome::into_value`]); the two flags are Go's `shared`
/// and "was I the one who ran it", for metrics and logs.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let group = coalescer::Group::<u32, u64>::new();
/// let outcome = group.work(&7, || async { 49 }).await?;
/// assert_eq!(*outcome.value(), 49);
/// assert!(outcome.is_leader());   // nobody else asked, so this caller ran the work...
/// assert!(!outcome.is_shared());  // ...and the value went to it alone.
/// # Ok::<(), coalescer::Aborted>(()) }).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Outcome<V> {
    value: V,
    leader: bool,
    shared: bool,
}

impl<V> Outcome<V> {
    pub(crate) fn new(value: V, leader: bool, shared: bool) -> Self {
        Self { value, leader, shared }
    }

    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// Takes the value.
    pub fn into_value(self) -> V {
        self.value
    }

    /// Whether this caller started the work that produced the value: the flight's first caller,
    /// or a follower promoted after the leader was dropped (work mode).
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Whether the value went to more than one caller (Go's `shared`). Always true for a
    /// follower; true for the leader when followers were still waiting as the value was published.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Maps the value, keeping the flags.
    pub fn map<U>(self, f: impl FnOnce(V) -> U) -> Outcome<U> {
        Outcome { value: f(self.value), leader: self.leader, shared: self.shared }
    }
}

/// The flight this caller joined ended without a value: its work panicked in another caller,
/// or (detached work) the runtime shut down before the spawned work finished. Or the call
/// joined no flight at all: its key was new and the group's bound on keys in flight was
/// reached ([`Cause::Full`]).
///
/// Every caller of such a flight is released at once with this error (the caller in which the
/// work panicked sees the panic itself instead), and the key is free again: the next call
/// starts a new flight. A key is never left poisoned.
///
/// # Examples
///
/// ```
/// let group = std::sync::Arc::new(coalescer::Group::<String, u32>::new());
/// let (entered_tx, entered_rx) = std::sync::mpsc::channel();
/// let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
/// let leader = {
///     let group = group.clone();
///     std::thread::spawn(move || {
///         group.work_blocking("k", || {
///             entered_tx.send(()).unwrap();
///             go_rx.recv().unwrap();
///             panic!("database on fire")
///         })
///     })
/// };
/// entered_rx.recv().unwrap();
/// let follower = {
///     let group = group.clone();
///     std::thread::spawn(move || group.work_blocking("k", || 0))
/// };
/// while group.counters().followers == 0 { std::thread::yield_now() }
/// go_tx.send(()).unwrap();
/// assert!(leader.join().is_err()); // the leader's thread panicked
/// let err = follower.join().unwrap().unwrap_err();
/// assert!(err.is_panic());
/// assert_eq!(err.message(), Some("database on fire"));
/// assert_eq!(*group.work_blocking("k", || 7).unwrap().value(), 7); // not poisoned
/// ```
#[derive(Clone)]
pub struct Aborted {
    cause: Cause,
    message: Option<Arc<str>>,
}

/// Why a flight ended without a value.
///
/// # Examples
///
/// ```
/// assert_eq!(coalescer::Aborted::shutdown().cause(), coalescer::Cause::Shutdown);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The work panicked.
    Panic,
    /// The runtime dropped the detached work before it finished (it is shutting down).
    Shutdown,
    /// The call's key had no flight, and the group already had as many keys in flight as its
    /// bound allows ([`Group::max_in_flight`](crate::Group::max_in_flight) with
    /// [`WhenFull::Reject`](crate::WhenFull::Reject)); the call ran nothing.
    Full {
        /// The bound that was reached.
        limit: usize,
    },
    /// This caller gave up waiting at its deadline ([`Timeout`](crate::futures::Timeout));
    /// the flight it left goes on for the others.
    TimedOut,
}

impl Aborted {
    /// A panic, with the payload's message when it is a string (as `panic!("...")` makes it).
    pub fn panic(payload: &(dyn core::any::Any + Send)) -> Self {
        let message: Option<&str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            payload.downcast_ref::<alloc::string::String>().map(|s| s.as_str())
        };
        Self { cause: Cause::Panic, message: message.map(Arc::from) }
    }

    /// The runtime dropped the detached work before it finished. For [`Spawn`](crate::Spawn)
    /// implementations.
    pub fn shutdown() -> Self {
        Self { cause: Cause::Shutdown, message: None }
    }

    /// The group's bound on keys in flight (`limit`) was reached and the call's key was new. For
    /// the group itself and for tests.
    pub fn full(limit: usize) -> Self {
        Self { cause: Cause::Full { limit }, message: None }
    }

    /// This caller gave up at its deadline (made from [`TimedOut`] by `?` or `into`).
    pub fn timed_out() -> Self {
        Self { cause: Cause::TimedOut, message: None }
    }

    /// Why the flight ended without a value.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// Whether the work panicked.
    pub fn is_panic(&self) -> bool {
        self.cause == Cause::Panic
    }

    /// Whether the runtime dropped the detached work (it is shutting down).
    pub fn is_shutdown(&self) -> bool {
        self.cause == Cause::Shutdown
    }

    /// Whether the call was refused because the group's bound on keys in flight was reached
    /// (nothing ran; retry later, or shed the request).
    pub fn is_full(&self) -> bool {
        matches!(self.cause, Cause::Full { .. })
    }

    /// Whether this caller gave up at its deadline (the flight went on without it).
    pub fn is_timed_out(&self) -> bool {
        self.cause == Cause::TimedOut
    }

    /// The panic's message, when its payload was a string.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Debug for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aborted").field("cause", &self.cause).field("message", &self.message()).finish()
    }
}

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.cause, self.message()) {
            (Cause::Panic, Some(message)) => write!(f, "the coalesced work panicked: {message}"),
            (Cause::Panic, None) => f.write_str("the coalesced work panicked"),
            (Cause::Shutdown, _) => f.write_str("the runtime shut down before the detached work finished"),
            (Cause::Full { limit }, _) => {
                write!(f, "refused: the group already has {limit} keys in flight, its bound")
            }
            (Cause::TimedOut, _) => f.write_str("gave up waiting for the coalesced work at the deadline"),
        }
    }
}

impl core::error::Error for Aborted {}

/// A caller that gave up at its deadline is one more way for a call to end without a value, so
/// that `?` works through a [`Timeout`](crate::futures::Timeout) (which converts by itself).
impl From<TimedOut> for Aborted {
    fn from(_: TimedOut) -> Self {
        Self::timed_out()
    }
}

/// Why a fallible call ([`Group::try_work`](crate::Group::try_work) and its twins) has no value.
///
/// The work's error is shared with every concurrent caller of the flight behind an [`Arc`], so
/// `E` needs no `Clone`. It is never retained: the next call after the flight starts anew.
///
/// # Examples
///
/// ```
/// use coalescer::{Error, TryGroup};
/// let group = TryGroup::<String, u32, std::num::ParseIntError>::new();
/// match group.try_work_blocking("n", || "x".parse::<u32>()) {
///     Err(Error::Failed(e)) => assert_eq!(e.to_string(), "invalid digit found in string"),
///     Err(Error::Aborted(a)) => panic!("the work panicked: {a}"),
///     Ok(v) => panic!("parsed {}", v.value()),
///     Err(_) => unreachable!("non-exhaustive"),
/// }
/// ```
///
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The work returned this error (to the caller that ran it and to every follower).
    Failed(Arc<E>),
    /// The call ended without a value: the flight's work panicked, its runtime shut down, the
    /// group was full, or this caller gave up at its deadline (see [`Cause`]).
    Aborted(Aborted),
}

impl<E> Error<E> {
    /// Whether the work returned an error.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Whether the flight ended without a value (see [`Aborted`]).
    pub fn is_aborted(&self) -> bool {
        matches!(self, Self::Aborted(_))
    }

    /// Whether this caller gave up at its deadline (see [`Aborted::is_timed_out`]).
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Self::Aborted(a) if a.is_timed_out())
    }

    /// The [`Aborted`], if the call ended without a value.
    pub fn aborted(&self) -> Option<&Aborted> {
        match self {
            Self::Failed(_) => None,
            Self::Aborted(a) => Some(a),
        }
    }

    /// The work's error, if it returned one.
    pub fn failure(&self) -> Option<&E> {
        match self {
            Self::Failed(e) => Some(e),
            Self::Aborted(_) => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(e) => Self::Failed(e.clone()),
            Self::Aborted(a) => Self::Aborted(a.clone()),
        }
    }
}

impl<E> From<Aborted> for Error<E> {
    fn from(a: Aborted) -> Self {
        Self::Aborted(a)
    }
}

/// So that `?` works through a [`Timeout`](crate::futures::Timeout) around a fallible call.
impl<E> From<TimedOut> for Error<E> {
    fn from(t: TimedOut) -> Self {
        Self::Aborted(t.into())
    }
}

/// Says which of the two it is; the cause itself is the [`source`](core::error::Error::source)
/// (the work's error, or the [`Aborted`]), so that a report that walks the chain prints each
/// once. [`failure`](Self::failure) gives the work's error directly.
impl<E> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(_) => f.write_str("the coalesced work failed"),
            Self::Aborted(_) => f.write_str("the coalesced work ended without a value"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(&**e),
            Self::Aborted(a) => Some(a),
        }
    }
}

/// Splits a fallible flight's result into the caller-facing form.
pub(crate) fn split_try<T, E>(
    result: Result<Outcome<Result<T, Arc<E>>>, Aborted>,
) -> Result<Outcome<T>, Error<E>> {
    let outcome = result?;
    let (leader, shared) = (outcome.leader, outcome.shared);
    match outcome.value {
        Ok(value) => Ok(Outcome { value, leader, shared }),
        Err(e) => Err(Error::Failed(e)),
    }
}
