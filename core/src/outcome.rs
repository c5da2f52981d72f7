//! What a caller gets back: the value with its provenance, or a typed error.

use alloc::sync::Arc;
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
/// let outcome = group.work(7, || async { 49 }).await?;
/// assert_eq!(*outcome.value(), 49);
/// assert!(outcome.is_leader());   // nobody else asked, so this caller ran the work...
/// assert!(!outcome.is_shared());  // ...and the value went to it alone.
/// # Ok::<(), coalescer::Panicked>(()) }).unwrap();
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
        Self {
            value,
            leader,
            shared,
        }
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
        Outcome {
            value: f(self.value),
            leader: self.leader,
            shared: self.shared,
        }
    }
}

/// The work of the flight this caller joined panicked while another caller was running it.
///
/// The caller that was running the work sees the panic itself (it is resumed in that caller);
/// every other caller of the flight gets this error at once, and the key is free again: the next
/// call starts a new flight.
///
/// # Examples
///
/// ```
/// let group = std::sync::Arc::new(coalescer::Group::<&str, u32>::new());
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
/// assert_eq!(err.message(), Some("database on fire"));
/// ```
#[derive(Clone)]
pub struct Panicked {
    message: Option<Arc<str>>,
}

impl Panicked {
    #[cfg(feature = "std")]
    pub(crate) fn from_payload(payload: &(dyn core::any::Any + Send)) -> Self {
        let message: Option<&str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            payload
                .downcast_ref::<alloc::string::String>()
                .map(|s| s.as_str())
        };
        Self {
            message: message.map(Arc::from),
        }
    }

    /// The panic's message, when its payload was a string (as `panic!("...")` makes it).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Debug for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panicked")
            .field("message", &self.message())
            .finish()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(message) => write!(
                f,
                "the work of this flight panicked in another caller: {message}"
            ),
            None => f.write_str("the work of this flight panicked in another caller"),
        }
    }
}

impl core::error::Error for Panicked {}

/// Why a fallible call ([`Group::try_work`](crate::Group::try_work) and its twins) has no value.
///
/// The work's error is shared with every concurrent caller of the flight behind an [`Arc`], so
/// `E` needs no `Clone`. It is never retained: the next call after the flight starts anew.
///
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The work returned this error (to the caller that ran it and to every follower).
    Failed(Arc<E>),
    /// The work panicked in another caller.
    Panicked(Panicked),
}

impl<E> Error<E> {
    /// Whether the work returned an error.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Whether the work panicked in another caller.
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// The work's error, if it returned one.
    pub fn failure(&self) -> Option<&E> {
        match self {
            Self::Failed(e) => Some(e),
            Self::Panicked(_) => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(e) => Self::Failed(e.clone()),
            Self::Panicked(p) => Self::Panicked(p.clone()),
        }
    }
}

impl<E> From<Panicked> for Error<E> {
    fn from(p: Panicked) -> Self {
        Self::Panicked(p)
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "the coalesced work failed: {e}"),
            Self::Panicked(p) => fmt::Display::fmt(p, f),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(&**e),
            Self::Panicked(p) => Some(p),
        }
    }
}

/// Splits a fallible flight's result into the caller-facing form.
pub(crate) fn split_try<T, E>(
    result: Result<Outcome<Result<T, Arc<E>>>, Panicked>,
) -> Result<Outcome<T>, Error<E>> {
    let outcome = result?;
    let (leader, shared) = (outcome.leader, outcome.shared);
    match outcome.value {
        Ok(value) => Ok(Outcome {
            value,
            leader,
            shared,
        }),
        Err(e) => Err(Error::Failed(e)),
    }
}

/// The payload type of a caught panic.
#[cfg(feature = "std")]
pub(crate) type Payload = alloc::boxed::Box<dyn core::any::Any + Send>;
