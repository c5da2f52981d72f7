//! [`Coalesce`]: the service, and its [`ResponseFuture`].

use crate::body::CoalescedBody;
use crate::flight::{Ctx, Done, alone, execute, lock, panic_response};
use crate::key::{HttpKeyFn, KeyFn};
use crate::panic::Panicked;
use crate::stats::{Counters, Stats};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower_service::Service;

/// The service made by [`CoalesceLayer`](crate::CoalesceLayer): requests with equal keys share
/// one call of the inner service and one buffered response.
///
/// Clones share their flights (one `coalescer::Group` per [`Layer::layer`](tower_layer::Layer::layer)
/// call) and the layer's counters.
///
/// # Readiness
///
/// `poll_ready` is always ready. Each call works on its own clone of the inner service, made
/// in `call`, and a flight's leader waits for that clone's `poll_ready` inside the flight
/// before it calls it (as `tower::util::Oneshot` does). A follower never touches the inner
/// service: it reserves no capacity (no `ConcurrencyLimit` permit, no `Buffer` slot) while it
/// waits, so an inner limit counts executions, not requests, and a follower is not held behind
/// the very request it is waiting for. An error from the inner `poll_ready` is the flight's
/// error, shared like an error from `call`. The cost: the layer passes no back-pressure out;
/// a saturated inner service shows as a slower flight. (The usual alternative, forwarding
/// `poll_ready` and taking the ready service with `mem::replace` in `call`, would make each
/// follower hold a ready inner service it never calls, and with a limit of one admit a follower
/// only after the leader's response: no coalescing at all.)
///
/// # Cancel safety
///
/// The flight owns the inner call (a `coalescer::SharedGroup`): dropping a response
/// future (a client that hung up, a timeout) leaves the flight, and the callers still waiting
/// keep driving the same inner call; no caller is failed or restarted by it. A future that is
/// polled once and then never again does not hold the others up either. The inner call is
/// dropped (cancelled) only when every caller of its flight has left. A request that passes
/// through is its caller's alone, as without the layer.
///
/// # Unwind safety
///
/// A panic of the inner service (its `poll_ready`, `call`, response future or body) inside a
/// flight is caught: every caller of the flight gets the layer's panic response (see
/// [`Panicked`]), and the key is free again. A panic in code that runs for one caller only,
/// outside a flight (the key function, the inner service's `Clone`, a passed-through call,
/// the panic responder, an error's `Clone`) unwinds into that caller's task, as it would
/// without the layer, and leaves the others alone. A panic in [`KeyFn::learn_vary`] (which
/// runs in the flight, after the response) or in dropping the inner future after a caught
/// panic ends the flight the core's way: the caller that was driving it unwinds, the others
/// get the panic response.
///
/// # Errors
///
/// The inner service's error is the service's error. A flight's error is cloned to each of
/// its callers, so it must be `Clone`: `Infallible` (axum, tonic) costs nothing; wrap an error
/// that is not `Clone` in an `Arc` below the layer (`.map_err(Arc::new)`, as the tests do with
/// `tower-test`'s boxed errors).
///
/// # Examples
///
/// ```
/// use coalescer_tower::CoalesceLayer;
/// use tower::{Layer, ServiceExt};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let inner = tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::from("hello")))
/// });
/// let service = CoalesceLayer::new().layer(inner);
/// let response = service.clone().oneshot(http::Request::get("/").body(()).unwrap()).await.unwrap();
/// assert_eq!(response.status(), 200);
/// assert_eq!(service.counters().executions, 1);
/// # });
/// ```
pub struct Coalesce<S, F: KeyFn = HttpKeyFn> {
    inner: S,
    ctx: Arc<Ctx<F>>,
}

impl<S, F: KeyFn> Coalesce<S, F> {
    pub(crate) fn new(inner: S, ctx: Ctx<F>) -> Self {
        Self { inner, ctx: Arc::new(ctx) }
    }

    /// The layer's counters (shared with every service the layer made).
    pub fn counters(&self) -> Counters {
        self.ctx.stats.snapshot()
    }

    /// The counters of the flights of this service and its clones (the core's: leaders,
    /// followers, cancellations, ...).
    pub fn flights(&self) -> coalescer::Counters {
        self.ctx.group.counters()
    }

    /// How many keys have a flight in the air on this service and its clones.
    pub fn in_flight(&self) -> usize {
        self.ctx.group.in_flight()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, F: KeyFn> Clone for Coalesce<S, F> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), ctx: self.ctx.clone() }
    }
}

impl<S: fmt::Debug, F: KeyFn> fmt::Debug for Coalesce<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("max_body", &self.ctx.max_body)
            .field("in_flight", &self.ctx.group.in_flight())
            .finish_non_exhaustive()
    }
}

impl<S, F, ReqB, ResB> Service<Request<ReqB>> for Coalesce<S, F>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Clone + Send + Sync + 'static,
    F: KeyFn,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send + 'static,
{
    type Response = Response<CoalescedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    /// Always ready: see [`Coalesce`]'s `# Readiness`.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (head, body) = req.into_parts();
        let key = self.ctx.key.key(&head);
        let req = Request::from_parts(head, body);
        let svc = self.inner.clone();
        match key {
            None => {
                Stats::bump(&self.ctx.stats.passed_through);
                ResponseFuture::new(alone(svc, req))
            }
            Some(key) => ResponseFuture::new(coalesce(self.ctx.clone(), key, svc, req)),
        }
    }
}

/// One coalesced call: join the key's flight (leading it, or following), then serve what it
/// ended with, or this caller's own request when that cannot be shared with it.
async fn coalesce<S, F, ReqB, ResB>(
    ctx: Arc<Ctx<F>>,
    key: F::Key,
    svc: S,
    req: Request<ReqB>,
) -> Result<Response<CoalescedBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Clone + Send + Sync + 'static,
    F: KeyFn,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send + 'static,
{
    // The request stays here unless this caller leads: the flight's work takes it then. A
    // follower still has it when the flight ends, to run it on its own if need be.
    let own = Arc::new(Mutex::new(Some((svc, req))));
    let work = {
        let (own, ctx) = (own.clone(), ctx.clone());
        move || {
            let (svc, req) = lock(&own).take().expect("the work of a flight is started once, by its leader");
            execute(svc, req, ctx)
        }
    };
    let (leader, done) = match ctx.group.work(&key, work).await {
        Ok(outcome) => (outcome.is_leader(), outcome.into_value()),
        // The work catches the inner service's panics itself; this is a panic in dropping
        // the inner future after one, or in the core.
        Err(aborted) => (false, Done::Panicked(Panicked::from_aborted(&aborted))),
    };
    match done {
        Done::Panicked(panicked) => {
            if !leader {
                Stats::bump(&ctx.stats.coalesced);
            }
            return Ok(panic_response(&ctx.on_panic, &panicked));
        }
        Done::Buffered(buffered) => {
            if leader {
                return Ok(buffered.response());
            }
            if lock(&own).as_ref().is_some_and(|(_, req)| buffered.serves(req.headers())) {
                Stats::bump(&ctx.stats.coalesced);
                return Ok(buffered.response());
            }
        }
        Done::Unbuffered(response) if leader => {
            let response = lock(&response).take().and_then(|any| any.downcast().ok());
            return Ok(*response.expect("a leader takes its own unbuffered response, once"));
        }
        Done::Unbuffered(_) => {}
        Done::Failed(error) => {
            // Another request body type on the same service has another error type: retry.
            if let Some(error) = error.downcast_ref::<S::Error>() {
                if !leader {
                    Stats::bump(&ctx.stats.coalesced);
                }
                return Err(error.clone());
            }
        }
    }
    let (svc, req) = lock(&own).take().expect("a follower keeps its own request");
    Stats::bump(&ctx.stats.retried);
    // Boxed: the rare path, kept out of the size of every call's future.
    Box::pin(alone(svc, req)).await
}

type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CoalescedBody<B>>, E>> + Send>>;

/// The future of [`Coalesce`]'s `call`: the response, buffered and shared or the caller's own.
///
/// Dropping it leaves its flight; see [`Coalesce`]'s `# Cancel safety`.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ResponseFuture<B: Body, E> {
    inner: BoxFuture<B, E>,
}

impl<B: Body, E> ResponseFuture<B, E> {
    fn new(fut: impl Future<Output = Result<Response<CoalescedBody<B>>, E>> + Send + 'static) -> Self {
        Self { inner: Box::pin(fut) }
    }
}

impl<B: Body, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CoalescedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B: Body, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
