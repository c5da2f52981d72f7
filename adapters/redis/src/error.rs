//! [`Error`]: every way a call can fail, typed.

use crate::codec::CodecError;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// Why a [`RedisGroup`](crate::RedisGroup) call returned no value.
///
/// Every variant is cheap to clone (it is shared with the call's local followers), and none
/// needs `E: Clone`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// This process ran the work and it returned `Err`. The error is shared with this process's
    /// callers of the flight only (it is not encoded, so it does not cross processes); the lease
    /// is given up, so a waiting process runs the work next.
    Failed(Arc<E>),
    /// The work (or the codec) panicked in this process. The local caller that was driving the
    /// flight gets the panic itself; the other local callers get this.
    Panicked(coalescer::Aborted),
    /// Redis could not be reached when the flight started (connecting, subscribing, or the first
    /// check), and the group's [`Fallback`](crate::Fallback) is `Fail`.
    Unreachable(Arc<redis::RedisError>),
    /// Redis was lost in the middle of the flight (while waiting for another process), and could
    /// not be reached again before the other process's lease expired; the group's
    /// [`Fallback`](crate::Fallback) is `Fail`.
    Disconnected(Arc<redis::RedisError>),
    /// The value another process published (or left lingering) did not decode with this
    /// group's codec: a mismatch of codecs or versions within the fleet, or foreign bytes
    /// under the key.
    Decode(Arc<CodecError>),
}

impl<E> Error<E> {
    /// The work ran here and failed.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// The work panicked here.
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// Redis was not reachable at the start of the flight.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }

    /// Redis was lost mid-flight.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }

    /// Redis could not be used: [`Unreachable`](Self::Unreachable) or
    /// [`Disconnected`](Self::Disconnected).
    pub fn is_redis(&self) -> bool {
        self.is_unreachable() || self.is_disconnected()
    }

    /// The value from another process did not decode.
    pub fn is_decode(&self) -> bool {
        matches!(self, Self::Decode(_))
    }

    /// The work's own error, if it failed here.
    pub fn failure(&self) -> Option<&E> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(e) => Self::Failed(e.clone()),
            Self::Panicked(a) => Self::Panicked(a.clone()),
            Self::Unreachable(e) => Self::Unreachable(e.clone()),
            Self::Disconnected(e) => Self::Disconnected(e.clone()),
            Self::Decode(e) => Self::Decode(e.clone()),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "the coalesced work failed: {e}"),
            Self::Panicked(a) => fmt::Display::fmt(a, f),
            Self::Unreachable(e) => write!(f, "redis was unreachable at the start of the flight: {e}"),
            Self::Disconnected(e) => write!(f, "redis was lost while waiting for another process: {e}"),
            Self::Decode(e) => write!(f, "the value from another process did not decode: {e}"),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Failed(e) => Some(&**e),
            Self::Panicked(a) => Some(a),
            Self::Unreachable(e) | Self::Disconnected(e) => Some(&**e),
            Self::Decode(e) => Some(&**e),
        }
    }
}
