//! [`CoalesceLayer`]: the settings, and the [`Layer`] that applies them.

use crate::flight::Ctx;
use crate::key::{HttpKeyFn, KeyFn};
use crate::panic::{PanicResponder, Panicked, default_responder};
use crate::service::Coalesce;
use crate::stats::{Counters, Stats};
use bytes::Bytes;
use http::header::HeaderName;
use std::fmt;
use std::sync::Arc;
use tower_layer::Layer;

/// The default limit on a response body that is buffered and shared: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// A tower [`Layer`] that coalesces concurrent requests with equal keys: the inner service
/// runs once per key at a time, and its response, buffered, is cloned to every caller.
///
/// By default ([`new`](Self::new)) `GET` and `HEAD` requests without a body coalesce, keyed by
/// method, URI, host, credentials and the conditional and range headers (see [`HttpKeyFn`]);
/// [`with_key`](Self::with_key) takes any key function. Response bodies up to
/// [`max_body`](Self::max_body) bytes are shared; see [`Coalesce`] for readiness, cancellation,
/// panics and errors.
///
/// # Examples
///
/// ```
/// use coalescer_tower::CoalesceLayer;
/// let layer = CoalesceLayer::new()
///     .vary(http::header::ACCEPT_ENCODING) // the response depends on it
///     .max_body(256 * 1024)
///     .on_panic(|_| {
///         http::Response::builder().status(503).body(bytes::Bytes::from("try again")).unwrap()
///     });
/// # let _ = layer;
/// ```
pub struct CoalesceLayer<F = HttpKeyFn> {
    key: Arc<F>,
    max_body: usize,
    on_panic: PanicResponder,
    stats: Arc<Stats>,
}

impl CoalesceLayer<HttpKeyFn> {
    /// The HTTP default: [`HttpKeyFn`], bodies up to [`DEFAULT_MAX_BODY`], a `500` for a
    /// panicked inner service.
    pub fn new() -> Self {
        Self::with_key(HttpKeyFn::new())
    }

    /// Adds a request header to the key: requests that differ in it never share a response
    /// (as a response's `Vary: <name>` asks). Headers that responses name in `Vary` are also
    /// learned on the way (see [`HttpKeyFn`]).
    pub fn vary(mut self, name: HeaderName) -> Self {
        let keys = Arc::make_mut(&mut self.key);
        *keys = std::mem::take(keys).vary(name);
        self
    }
}

impl Default for CoalesceLayer<HttpKeyFn> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: KeyFn> CoalesceLayer<F> {
    /// A layer with this key function: requests coalesce when it gives equal keys, and pass
    /// through when it gives `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// // Coalesce by path and query, ignoring headers: right only for public, anonymous data.
    /// let layer = coalescer_tower::CoalesceLayer::with_key(|head: &http::request::Parts| {
    ///     (head.method == http::Method::GET).then(|| head.uri.to_string())
    /// });
    /// # let _ = layer;
    /// ```
    pub fn with_key(key: F) -> Self {
        Self {
            key: Arc::new(key),
            max_body: DEFAULT_MAX_BODY,
            on_panic: default_responder(),
            stats: Arc::default(),
        }
    }

    /// The largest response body that is buffered and shared, in bytes. A response that
    /// announces more (`Content-Length`), that turns out longer while it is read, or that is an
    /// event stream, goes to the request that led the flight only, unbuffered (the bytes read
    /// so far first, then the rest as it comes); the flight's other callers then run their own
    /// requests (see [`Counters::too_large`] and [`Counters::retried`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The response every caller of a flight gets when the inner service panicked (by default
    /// [`Panicked::into_response`]: a bare `500`). Its body is sent as is.
    pub fn on_panic(
        mut self,
        respond: impl Fn(&Panicked) -> http::Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.on_panic = Arc::new(respond);
        self
    }

    /// The counters of every service this layer made, since it was created.
    pub fn counters(&self) -> Counters {
        self.stats.snapshot()
    }
}

impl<F> Clone for CoalesceLayer<F> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            max_body: self.max_body,
            on_panic: self.on_panic.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<F> fmt::Debug for CoalesceLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer").field("max_body", &self.max_body).finish_non_exhaustive()
    }
}

impl<S, F: KeyFn> Layer<S> for CoalesceLayer<F> {
    type Service = Coalesce<S, F>;

    /// Wraps `inner`; each call starts a new set of flights (clones of the service share it).
    fn layer(&self, inner: S) -> Coalesce<S, F> {
        let ctx = Ctx {
            key: self.key.clone(),
            max_body: self.max_body,
            on_panic: self.on_panic.clone(),
            stats: self.stats.clone(),
            group: coalescer::Group::new().shared(),
        };
        Coalesce::new(inner, ctx)
    }
}
