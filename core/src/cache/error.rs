//! [`Error`]: why a read of the cache has no value.

use crate::Aborted;
use std::fmt;
use std::sync::Arc;

/// Why a read of the [`Cache`](super::Cache) has no value.
///
/// A failed load's error is shared with every caller of that load behind an [`Arc`] (so `E`
/// needs no `Clone`) and is never cached, unless negative caching was asked for
/// ([`CacheBuilder::negative_ttl`](super::CacheBuilder::negative_ttl)); then the callers that
/// come within that time get [`Error::Negative`] without a load.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// use coalescer::cache::Cache;
/// let cache = Cache::<u8, u8, String>::builder().build();
/// let err = cache.try_get_with(1, || async { Err("down".to_string()) }).await.unwrap_err();
/// assert!(err.is_failed());
/// assert_eq!(err.failure().map(String::as_str), Some("down"));
/// assert_eq!(err.to_string(), "the load failed: down");
/// # });
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The load returned this error (to every caller of that load), and no value within
    /// `max_stale` was there to serve instead.
    Failed(Arc<E>),
    /// A load failed with this error recently, and negative caching keeps it for its own TTL:
    /// no load was started.
    Negative(Arc<E>),
    /// The load ended without a value: the loader panicked (in another caller; the caller that
    /// was polling it sees the panic itself), or the runtime shut down under a spawned refresh.
    Aborted(Aborted),
    /// The load outlasted the hard timeout. It goes on for its other callers, and fills the
    /// cache if it finishes.
    TimedOut,
}

impl<E> Error<E> {
    /// Whether a load returned an error just now.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Whether the error was served from the negative cache.
    pub fn is_negative(&self) -> bool {
        matches!(self, Self::Negative(_))
    }

    /// Whether the load ended without a value (see [`Aborted`]).
    pub fn is_aborted(&self) -> bool {
        matches!(self, Self::Aborted(_))
    }

    /// Whether the hard timeout fired.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Self::TimedOut)
    }

    /// The loader's error, fresh or negatively cached.
    pub fn failure(&self) -> Option<&E> {
        match self {
            Self::Failed(e) | Self::Negative(e) => Some(e),
            Self::Aborted(_) | Self::TimedOut => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(e) => Self::Failed(e.clone()),
            Self::Negative(e) => Self::Negative(e.clone()),
            Self::Aborted(a) => Self::Aborted(a.clone()),
            Self::TimedOut => Self::TimedOut,
        }
    }
}

impl<E> From<Aborted> for Error<E> {
    fn from(a: Aborted) -> Self {
        Self::Aborted(a)
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => write!(f, "the load failed: {e}"),
            Self::Negative(e) => write!(f, "the load failed recently (negatively cached): {e}"),
            Self::Aborted(a) => fmt::Display::fmt(a, f),
            Self::TimedOut => f.write_str("the load outlasted the cache's hard timeout"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(e) | Self::Negative(e) => Some(&**e),
            Self::Aborted(a) => Some(a),
            Self::TimedOut => None,
        }
    }
}
