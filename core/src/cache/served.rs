//! [`Read`] and [`Served`]: a value read from the cache, and how the read was served.

/// How a read was served.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// use coalescer::cache::{Cache, Served};
/// let cache = Cache::<u8, u8>::builder().build();
/// let first = cache.get_with(1, || async { 10 }).await.unwrap();
/// assert_eq!(first.served(), Served::Loaded);
/// let second = cache.get_with(1, || async { 11 }).await.unwrap();
/// assert_eq!((second.served(), *second.value()), (Served::Fresh, 10));
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Served {
    /// A cached value before its refresh point: no load was started or waited for.
    Fresh,
    /// A cached value past its refresh point (`refresh_after`, or an early refresh chosen by
    /// chance): returned at once while a background refresh of the key is in the air (or,
    /// after a failed refresh, until `retry_after` allows the next one).
    Refreshing,
    /// A cached value past its expiry, within `max_stale`: the load failed (now, or recently
    /// enough that the next attempt is still throttled).
    StaleOnFailure,
    /// A cached value past its expiry, within `max_stale`: the load outlasted the soft timeout.
    /// The load goes on and fills the cache.
    StaleOnTimeout,
    /// This call started the load and waited for it.
    Loaded,
    /// This call joined a load already in the air (a miss, a refresh or another caller's load)
    /// and waited for it.
    Joined,
}

impl Served {
    /// Whether the value came from the cache without waiting for a load (fresh, refreshing,
    /// or stale).
    pub fn is_cached(self) -> bool {
        !matches!(self, Self::Loaded | Self::Joined)
    }

    /// Whether the value is past its refresh point or its expiry.
    pub fn is_stale(self) -> bool {
        matches!(self, Self::Refreshing | Self::StaleOnFailure | Self::StaleOnTimeout)
    }

    /// Whether the caller waited for a load.
    pub fn is_loaded(self) -> bool {
        !self.is_cached()
    }
}

/// A value read from the cache, with how it was [`Served`].
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let cache = coalescer::cache::Cache::<&str, String>::builder().build();
/// let read = cache.get_with("k", || async { "v".to_string() }).await.unwrap();
/// assert!(read.served().is_loaded());
/// assert_eq!(read.into_value(), "v");
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Read<V> {
    value: V,
    served: Served,
}

impl<V> Read<V> {
    pub(crate) fn new(value: V, served: Served) -> Self {
        Self { value, served }
    }

    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// Takes the value.
    pub fn into_value(self) -> V {
        self.value
    }

    /// How the read was served.
    pub fn served(&self) -> Served {
        self.served
    }
}
