//! A tower [`Layer`](tower_layer::Layer) that coalesces identical HTTP requests, on
//! [`coalescer`]'s shared-work flights.
//!
//! A hot endpoint's cache entry expires and a thousand clients ask for it in the same
//! millisecond. With [`CoalesceLayer`], the first request for a key (the *leader*) runs the
//! inner service; every identical request that arrives while it runs (a *follower*) waits for
//! it and gets a clone of its response, buffered once as [`Bytes`](bytes::Bytes). When the
//! response is out, the key is free again: this deduplicates requests in flight, it is not a
//! cache.
//!
//! - **Which requests coalesce.** By default `GET` and `HEAD` without a body, keyed by method,
//!   URI, host, the credentials (`Authorization`, `Cookie`: two users are never served one
//!   response), the conditional and range headers, and the headers named by
//!   [`CoalesceLayer::vary`] or learned from responses' `Vary` ([`HttpKeyFn`]). Or any key
//!   function ([`CoalesceLayer::with_key`]).
//! - **Which responses are shared.** Bodies up to a limit ([`CoalesceLayer::max_body`]).
//!   A larger or streaming body goes to the leader's request only, unbuffered; so does a
//!   private one (`Set-Cookie`, `Cache-Control: private`, `Vary: *`), and a follower whose
//!   request differs from the leader's in a header the response's `Vary` names does not get
//!   it. Such followers run their own request once the flight has ended: they are served
//!   correctly, late, and counted ([`Counters::retried`]).
//! - **Cancellation.** The flight owns the inner call: a client that hangs up (its request
//!   future dropped) cancels nothing for the others, and a stalled one holds nobody up. The
//!   call is cancelled only when every caller of its flight has left.
//! - **Errors and panics.** An inner error is cloned to every caller of the flight; a panic in
//!   the inner service is caught and every caller gets a `500` (or your
//!   [`CoalesceLayer::on_panic`] response) carrying a [`Panicked`] in its extensions.
//!
//! # With axum
//!
//! Nothing beyond `.layer(...)`: the layer keeps the router's error type (`Infallible`) and
//! its response body implements `http_body::Body`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use coalescer_tower::CoalesceLayer;
//! use tower::ServiceExt;
//!
//! async fn report() -> &'static str {
//!     "an expensive report" // the slow query, once per burst
//! }
//!
//! let layer = CoalesceLayer::new();
//! let app = Router::new().route("/report", get(report)).layer(layer.clone());
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let request = http::Request::get("/report").body(axum::body::Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(layer.counters().executions, 1);
//! # });
//! ```
//!
//! Served on a socket:
//!
//! ```no_run
//! # use axum::{Router, routing::get};
//! # async fn report() -> &'static str { "" }
//! # async fn serve() -> std::io::Result<()> {
//! let app = Router::new().route("/report", get(report)).layer(coalescer_tower::CoalesceLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Where to put it: inside the layers that answer per client (authentication, rate limits,
//! compression, which sets `Vary` and would make bodies differ), outside the handler and the
//! limits you want to count executions rather than requests.
//!
//! # Cancel safety
//!
//! Dropping a response future leaves its flight and affects no other caller; the inner call
//! is dropped when the last caller of its flight leaves. See [`Coalesce`].
//!
//! # Unwind safety
//!
//! A panic of the inner service inside a flight becomes a [`Panicked`] response for every
//! caller of the flight, and the key is freed. See [`Coalesce`].
//!
//! # Errors
//!
//! The service's error is the inner service's error, cloned to each caller of a flight
//! (`Clone` is required; `Infallible` qualifies). See [`Coalesce`].

mod body;
mod flight;
mod key;
mod layer;
mod panic;
mod service;
mod stats;

pub use body::CoalescedBody;
pub use key::{HttpKey, HttpKeyFn, KEY_HEADERS, KeyFn, MAX_LEARNED_VARY};
pub use layer::{CoalesceLayer, DEFAULT_MAX_BODY};
pub use panic::Panicked;
pub use service::{Coalesce, ResponseFuture};
pub use stats::Counters;
