//! The layer around a `tower-test` mock (requests answered by hand) or a hand-written inner
//! service, on a multi-threaded tokio runtime: real tasks, real drops. Events are ordered with
//! the core's counters and channels, never with sleeps; each test runs under a watchdog.

use bytes::Bytes;
use coalescer_tower::{Coalesce, CoalesceLayer, Panicked};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::Poll;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Body = BoxBody<Bytes, Infallible>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The mock's boxed error is not `Clone`: wrapped in an `Arc` below the layer, as the docs say.
type Inner = ArcErr<mock::Mock<Request<()>, Response<Body>>>;
type Handle = mock::Handle<Request<()>, Response<Body>>;

/// The mock with its error in an `Arc` (what `.map_err(Arc::new)` does; a named type keeps
/// the futures' `Send` inference simple).
#[derive(Clone)]
struct ArcErr<S>(S);

impl<S: Service<Request<()>, Error = BoxError>> Service<Request<()>> for ArcErr<S>
where
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Arc<BoxError>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Arc<BoxError>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Arc<BoxError>>> {
        self.0.poll_ready(cx).map_err(Arc::new)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move { fut.await.map_err(Arc::new) })
    }
}

/// Runs `test` on a 4-worker runtime, failing it if it has not finished in 30 s.
fn watchdog<F: Future<Output = ()> + Send + 'static>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), tokio::spawn(test))
            .await
            .expect("watchdog: the test hung")
            .unwrap();
    });
}

fn mocked(layer: &CoalesceLayer) -> (Coalesce<Inner>, Handle) {
    let (mock, handle) = mock::pair::<Request<()>, Response<Body>>();
    (layer.layer(ArcErr(mock)), handle)
}

fn body(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed()
}

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

/// Spawns a call of `svc` for `req`; resolves to the status and the body.
fn call<S>(
    svc: &S,
    req: http::request::Builder,
) -> tokio::task::JoinHandle<Result<(StatusCode, Bytes), S::Error>>
where
    S: Service<Request<()>, Response = Response<coalescer_tower::CoalescedBody<Body>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Send,
{
    let (svc, req) = (svc.clone(), req.body(()).unwrap());
    tokio::spawn(async move {
        let response = svc.oneshot(req).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await.unwrap().to_bytes()))
    })
}

/// Waits (yielding, never sleeping) until `svc`'s flights have had `n` followers.
async fn followers<S>(svc: &Coalesce<S>, n: u64) {
    while svc.flights().followers < n {
        tokio::task::yield_now().await;
    }
}

async fn ok(
    call: tokio::task::JoinHandle<Result<(StatusCode, Bytes), Arc<BoxError>>>,
) -> (StatusCode, Bytes) {
    call.await.unwrap().unwrap()
}

#[test]
fn identical_gets_share_one_call_and_one_body() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        let calls: Vec<_> = (0..8).map(|_| call(&svc, get("/report"))).collect();
        let (req, respond) = handle.next_request().await.unwrap();
        assert_eq!(req.uri(), "/report");
        followers(&svc, 7).await;
        respond.send_response(Response::new(body("the report")));
        for c in calls {
            assert_eq!(ok(c).await, (StatusCode::OK, Bytes::from("the report")));
        }
        let counters = layer.counters();
        assert_eq!((counters.executions, counters.coalesced, counters.retried), (1, 7, 0));
        assert_eq!(svc.in_flight(), 0); // not a cache
        // The next burst calls the inner service again.
        let again = call(&svc, get("/report"));
        handle.next_request().await.unwrap().1.send_response(Response::new(body("fresh")));
        assert_eq!(ok(again).await.1, "fresh");
    });
}

#[test]
fn credentials_split_keys_so_users_never_share_a_response() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        let mut calls = Vec::new();
        for user in ["alice", "bob", "alice", "bob"] {
            calls.push((user, call(&svc, get("/me").header("cookie", format!("user={user}")))));
        }
        calls.push(("token", call(&svc, get("/me").header("authorization", "Bearer t"))));
        followers(&svc, 2).await;
        for _ in 0..3 {
            let (req, respond) = handle.next_request().await.unwrap();
            let who = match (req.headers().get("cookie"), req.headers().get("authorization")) {
                (Some(cookie), _) => cookie.to_str().unwrap().trim_start_matches("user=").to_owned(),
                (None, Some(_)) => "token".to_owned(),
                (None, None) => panic!("a request without credentials"),
            };
            respond.send_response(Response::new(body(who)));
        }
        for (user, c) in calls {
            assert_eq!(ok(c).await.1, user);
        }
        assert_eq!(layer.counters().executions, 3);
    });
}

#[test]
fn configured_vary_headers_split_keys() {
    watchdog(async {
        let layer = CoalesceLayer::new().vary(http::header::ACCEPT_LANGUAGE);
        let (svc, mut handle) = mocked(&layer);
        let de = [
            call(&svc, get("/a").header("accept-language", "de")),
            call(&svc, get("/a").header("accept-language", "de")),
        ];
        let fr = call(&svc, get("/a").header("accept-language", "fr"));
        followers(&svc, 1).await;
        for _ in 0..2 {
            let (req, respond) = handle.next_request().await.unwrap();
            let lang = req.headers()["accept-language"].to_str().unwrap().to_owned();
            respond.send_response(Response::new(body(lang)));
        }
        for c in de {
            assert_eq!(ok(c).await.1, "de");
        }
        assert_eq!(ok(fr).await.1, "fr");
        assert_eq!(layer.counters().executions, 2);
    });
}

#[test]
fn a_response_vary_header_keeps_it_from_followers_that_differ_and_is_learned() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        // Same key (Accept is not in it yet): one flight.
        let json = call(&svc, get("/a").header("accept", "application/json"));
        let (req, respond) = handle.next_request().await.unwrap();
        let json_too = call(&svc, get("/a").header("accept", "application/json"));
        let html = call(&svc, get("/a").header("accept", "text/html"));
        followers(&svc, 2).await;
        let reply = |accept: &http::HeaderValue| {
            Response::builder().header("vary", "Accept").body(body(accept.as_bytes().to_vec())).unwrap()
        };
        respond.send_response(reply(&req.headers()["accept"]));
        assert_eq!(ok(json).await.1, "application/json");
        assert_eq!(ok(json_too).await.1, "application/json");
        // The HTML follower runs its own request once the flight is over.
        let (req, respond) = handle.next_request().await.unwrap();
        assert_eq!(req.headers()["accept"], "text/html");
        respond.send_response(reply(&req.headers()["accept"]));
        assert_eq!(ok(html).await.1, "text/html");
        let counters = layer.counters();
        assert_eq!((counters.executions, counters.coalesced, counters.retried), (1, 1, 1));
        // Learned: Accept is now in the key, so two types make two flights from the start.
        let a = call(&svc, get("/a").header("accept", "a/a"));
        let b = call(&svc, get("/a").header("accept", "b/b"));
        for _ in 0..2 {
            let (req, respond) = handle.next_request().await.unwrap();
            respond.send_response(reply(&req.headers()["accept"]));
        }
        assert_eq!((ok(a).await.1, ok(b).await.1), (Bytes::from("a/a"), Bytes::from("b/b")));
        assert_eq!(layer.counters().retried, 1);
        assert_eq!(svc.flights().followers, 2);
    });
}

#[test]
fn a_dropped_leader_request_still_answers_the_followers() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        let leader = call(&svc, get("/slow"));
        let (_req, respond) = handle.next_request().await.unwrap();
        let calls: Vec<_> = (0..4).map(|_| call(&svc, get("/slow"))).collect();
        followers(&svc, 4).await;
        leader.abort(); // the leader's client hung up
        assert!(leader.await.unwrap_err().is_cancelled());
        respond.send_response(Response::new(body("still here")));
        for c in calls {
            assert_eq!(ok(c).await.1, "still here");
        }
        let counters = layer.counters();
        assert_eq!((counters.executions, counters.coalesced), (1, 4));
        assert_eq!(svc.flights().cancellations, 0);
    });
}

/// Sends on `dropped` when dropped: put in the inner response future, it tells when that
/// future is gone.
struct DropSignal(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn the_inner_call_is_cancelled_when_every_caller_has_left() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (mock, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel();
        let inner = ArcErr(mock).map_future(move |fut| {
            let signal = DropSignal(dropped_tx.clone());
            async move {
                let _signal = signal;
                fut.await
            }
        });
        let svc = layer.layer(inner);
        let calls: Vec<_> = (0..3).map(|_| call(&svc, get("/x"))).collect();
        let (_req, _respond) = handle.next_request().await.unwrap();
        followers(&svc, 2).await;
        let mut left = calls.into_iter();
        for c in left.by_ref().take(2) {
            c.abort();
            let _ = c.await;
        }
        assert!(dropped.try_recv().is_err(), "the inner call was dropped while a caller was left");
        let last = left.next().unwrap();
        last.abort();
        let _ = last.await;
        dropped.recv().await.unwrap(); // the inner response future is gone
        assert_eq!(svc.flights().cancellations, 1);
        assert_eq!(svc.in_flight(), 0);
    });
}

/// Polls a future once; resolves to whether it was pending.
struct PollOnce<'a, F>(&'a mut Pin<Box<F>>);

impl<F: Future> Future for PollOnce<'_, F> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        Poll::Ready(self.0.as_mut().poll(cx).is_pending())
    }
}

#[test]
fn a_stalled_leader_does_not_hold_up_the_followers() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        // Polled once (it joins and starts the inner call), then held and never polled again.
        let mut stalled = Box::pin(svc.clone().oneshot(get("/s").body(()).unwrap()));
        assert!(PollOnce(&mut stalled).await, "the stalled leader finished at once");
        let (_req, respond) = handle.next_request().await.unwrap();
        let calls: Vec<_> = (0..3).map(|_| call(&svc, get("/s"))).collect();
        followers(&svc, 3).await;
        respond.send_response(Response::new(body("done")));
        for c in calls {
            assert_eq!(ok(c).await.1, "done");
        }
        // The stalled leader gets the same response when it is polled at last.
        let response = stalled.await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "done");
    });
}

/// A body of chunks with no announced size, read chunk by chunk.
fn chunked(chunks: &[&'static str]) -> Body {
    use futures_util_shim::ChunkBody;
    ChunkBody(chunks.iter().map(|c| Bytes::from_static(c.as_bytes())).collect()).boxed()
}

mod futures_util_shim {
    use bytes::Bytes;
    use http_body::{Body, Frame};
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(super) struct ChunkBody(pub(super) VecDeque<Bytes>);

    impl Body for ChunkBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }
}

#[test]
fn a_body_over_the_limit_goes_to_the_leader_and_the_followers_run_their_own() {
    for (announced, reply) in [(true, body("0123456789")), (false, chunked(&["0123", "4567", "89"]))] {
        watchdog(async move {
            let layer = CoalesceLayer::new().max_body(5);
            let (svc, mut handle) = mocked(&layer);
            let leader = call(&svc, get("/big"));
            let (_req, respond) = handle.next_request().await.unwrap();
            let calls: Vec<_> = (0..2).map(|_| call(&svc, get("/big"))).collect();
            followers(&svc, 2).await;
            respond.send_response(Response::new(reply));
            assert_eq!(ok(leader).await.1, "0123456789", "announced: {announced}");
            for _ in 0..2 {
                let (_req, respond) = handle.next_request().await.unwrap();
                respond.send_response(Response::new(body("0123456789")));
            }
            for c in calls {
                assert_eq!(ok(c).await.1, "0123456789");
            }
            let counters = layer.counters();
            assert_eq!((counters.executions, counters.too_large, counters.retried), (1, 1, 2));
        });
    }
}

#[test]
fn a_body_within_the_limit_read_in_chunks_is_shared() {
    watchdog(async {
        let layer = CoalesceLayer::new().max_body(10);
        let (svc, mut handle) = mocked(&layer);
        let calls: Vec<_> = (0..3).map(|_| call(&svc, get("/c"))).collect();
        let (_req, respond) = handle.next_request().await.unwrap();
        followers(&svc, 2).await;
        respond.send_response(Response::new(chunked(&["0123", "4567", "89"])));
        for c in calls {
            assert_eq!(ok(c).await.1, "0123456789");
        }
        assert_eq!(layer.counters().too_large, 0);
    });
}

#[test]
fn a_private_response_is_not_shared() {
    for header in [("set-cookie", "session=abc"), ("cache-control", "private, max-age=5"), ("vary", "*")] {
        watchdog(async move {
            let layer = CoalesceLayer::new();
            let (svc, mut handle) = mocked(&layer);
            let leader = call(&svc, get("/login"));
            let (_req, respond) = handle.next_request().await.unwrap();
            let follower = call(&svc, get("/login"));
            followers(&svc, 1).await;
            respond.send_response(Response::builder().header(header.0, header.1).body(body("mine")).unwrap());
            assert_eq!(ok(leader).await.1, "mine");
            let (_req, respond) = handle.next_request().await.unwrap(); // the follower's own
            respond.send_response(Response::new(body("yours")));
            assert_eq!(ok(follower).await.1, "yours", "{header:?}");
            assert_eq!((layer.counters().private, layer.counters().retried), (1, 1));
        });
    }
}

#[test]
fn an_inner_error_is_shared_with_every_caller() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        let calls: Vec<_> = (0..4).map(|_| call(&svc, get("/e"))).collect();
        let (_req, respond) = handle.next_request().await.unwrap();
        followers(&svc, 3).await;
        respond.send_error("backend down");
        let mut errors = Vec::new();
        for c in calls {
            errors.push(c.await.unwrap().unwrap_err());
        }
        assert_eq!(errors[0].to_string(), "backend down");
        assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])), "one error, shared");
        assert_eq!((layer.counters().failed, layer.counters().executions), (1, 1));
        // Not retained: the next call runs anew.
        let next = call(&svc, get("/e"));
        handle.next_request().await.unwrap().1.send_response(Response::new(body("up")));
        assert_eq!(ok(next).await.1, "up");
    });
}

#[test]
fn an_inner_readiness_error_is_the_flights_error() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        handle.send_error("not ready");
        let c = call(&svc, get("/r"));
        assert_eq!(c.await.unwrap().unwrap_err().to_string(), "not ready");
    });
}

/// An inner service that signals when it is called, waits for `go`, then panics.
fn panicking(
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    go: Arc<tokio::sync::Notify>,
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone + Send {
    tower::service_fn(move |_req: Request<()>| {
        let (entered, go, calls) = (entered.clone(), go.clone(), calls.clone());
        async move {
            if calls.fetch_add(1, SeqCst) == 0 {
                entered.send(()).unwrap();
                go.notified().await;
                panic!("handler exploded");
            }
            Ok::<_, Infallible>(Response::new(body("recovered")))
        }
    })
}

#[test]
fn a_panicking_inner_service_answers_every_caller_with_a_typed_500_and_frees_the_key() {
    watchdog(async {
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let (go, calls) = (Arc::new(tokio::sync::Notify::new()), Arc::new(AtomicUsize::new(0)));
        let layer = CoalesceLayer::new();
        let svc = layer.layer(panicking(entered_tx, go.clone(), calls.clone()));
        let responses: Vec<_> = (0..4)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(svc.oneshot(get("/p").body(()).unwrap()))
            })
            .collect();
        entered.recv().await.unwrap();
        followers(&svc, 3).await;
        go.notify_one();
        for r in responses {
            let response = r.await.unwrap().unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let panicked = response.extensions().get::<Panicked>().expect("a typed Panicked");
            assert_eq!(panicked.message(), Some("handler exploded"));
            let text = response.into_body().collect().await.unwrap().to_bytes();
            assert!(
                !String::from_utf8_lossy(&text).contains("exploded"),
                "the message is not sent to clients"
            );
        }
        assert_eq!((layer.counters().panics, layer.counters().coalesced), (1, 3));
        let after = svc.clone().oneshot(get("/p").body(()).unwrap()).await.unwrap();
        assert_eq!(after.into_body().collect().await.unwrap().to_bytes(), "recovered");
        assert_eq!(calls.load(SeqCst), 2);
    });
}

#[test]
fn the_panic_response_can_be_chosen() {
    watchdog(async {
        let (entered_tx, _entered) = tokio::sync::mpsc::unbounded_channel();
        let go = Arc::new(tokio::sync::Notify::new());
        go.notify_one(); // a permit: the first call panics at once
        let layer = CoalesceLayer::new().on_panic(|p| {
            Response::builder()
                .status(503)
                .body(Bytes::from(format!("busy ({})", p.message().unwrap())))
                .unwrap()
        });
        let svc = layer.layer(panicking(entered_tx, go, Arc::default()));
        let response = svc.oneshot(get("/p").body(()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "busy (handler exploded)");
    });
}

#[test]
fn unsafe_methods_and_custom_key_nones_pass_through() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        let posts: Vec<_> = (0..3).map(|_| call(&svc, Request::post("/order"))).collect();
        for _ in 0..3 {
            handle.next_request().await.unwrap().1.send_response(Response::new(body("ok")));
        }
        for p in posts {
            assert_eq!(ok(p).await.1, "ok");
        }
        assert_eq!((layer.counters().passed_through, layer.counters().executions), (3, 0));
        assert_eq!(svc.flights().leaders, 0);
    });
}

#[test]
fn a_custom_key_function_decides_what_coalesces() {
    watchdog(async {
        // Every method, by path only: the query is ignored.
        let layer = CoalesceLayer::with_key(|head: &http::request::Parts| Some(head.uri.path().to_owned()));
        let (mock, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let svc = layer.layer(ArcErr(mock));
        let a = call(&svc, Request::post("/k?a"));
        let (_req, respond) = handle.next_request().await.unwrap();
        let b = call(&svc, get("/k?b"));
        while svc.flights().followers < 1 {
            tokio::task::yield_now().await;
        }
        respond.send_response(Response::new(body("k")));
        assert_eq!((ok(a).await.1, ok(b).await.1), (Bytes::from("k"), Bytes::from("k")));
    });
}

#[test]
fn followers_hold_no_inner_capacity() {
    watchdog(async {
        // A concurrency limit of one *inside* the layer: with the usual forwarded readiness a
        // follower would wait for the leader's permit, i.e. for the very response it joins.
        let layer = CoalesceLayer::new();
        let (mock, mut handle) = mock::pair::<Request<()>, Response<Body>>();
        let limited = tower::limit::ConcurrencyLimit::new(ArcErr(mock), 1);
        let svc = layer.layer(limited);
        let calls: Vec<_> = (0..5).map(|_| call(&svc, get("/l"))).collect();
        let (_req, respond) = handle.next_request().await.unwrap();
        while svc.flights().followers < 4 {
            tokio::task::yield_now().await;
        }
        respond.send_response(Response::new(body("one")));
        for c in calls {
            assert_eq!(ok(c).await.1, "one");
        }
        assert_eq!(layer.counters().executions, 1);
    });
}

#[test]
fn head_and_get_do_not_share() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let (svc, mut handle) = mocked(&layer);
        let g = call(&svc, get("/h"));
        let h = call(&svc, Request::head("/h"));
        for _ in 0..2 {
            let (req, respond) = handle.next_request().await.unwrap();
            let reply = if req.method() == http::Method::HEAD { body("") } else { body("body") };
            respond.send_response(Response::new(reply));
        }
        assert_eq!((ok(g).await.1, ok(h).await.1), (Bytes::from("body"), Bytes::new()));
    });
}

#[test]
fn responses_are_send_and_the_service_is_send_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let (svc, _handle) = mocked(&CoalesceLayer::new());
    send_sync(&svc);
    let fut = pin!(svc.clone().oneshot(get("/").body(()).unwrap()));
    send(&fut);
}

/// A body that yields its chunks, then fails (an error, or a panic).
struct BrokenBody {
    chunks: std::collections::VecDeque<Bytes>,
    panics: bool,
}

impl http_body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        if self.panics {
            panic!("body exploded");
        }
        Poll::Ready(Some(Err(std::io::Error::other("connection reset by upstream"))))
    }
}

/// An inner service whose first call answers with a broken body once `go` is notified, and
/// whose later calls answer "fine".
fn broken(
    panics: bool,
    go: Arc<tokio::sync::Notify>,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<()>,
    Response = Response<http_body_util::Either<BrokenBody, Full<Bytes>>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send {
    tower::service_fn(move |_req: Request<()>| {
        let (go, calls) = (go.clone(), calls.clone());
        async move {
            if calls.fetch_add(1, SeqCst) == 0 {
                go.notified().await;
                let body = BrokenBody { chunks: [Bytes::from_static(b"par")].into(), panics };
                return Ok(Response::new(http_body_util::Either::Left(body)));
            }
            Ok::<_, Infallible>(Response::new(http_body_util::Either::Right(Full::from("fine"))))
        }
    })
}

#[test]
fn a_body_that_fails_mid_read_goes_to_the_leader_with_its_error_and_the_followers_retry() {
    watchdog(async {
        let (go, calls) = (Arc::new(tokio::sync::Notify::new()), Arc::new(AtomicUsize::new(0)));
        let layer = CoalesceLayer::new();
        let svc = layer.layer(broken(false, go.clone(), calls.clone()));
        let spawn = |svc: &Coalesce<_>| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let response = svc.oneshot(get("/b").body(()).unwrap()).await.unwrap();
                let mut body = response.into_body();
                let mut got = Vec::new();
                while let Some(frame) = body.frame().await {
                    let frame: Result<http_body::Frame<Bytes>, BoxError> = frame;
                    match frame {
                        Ok(frame) => got.extend_from_slice(&frame.into_data().unwrap()),
                        Err(e) => return (got, Some(e.to_string())),
                    }
                }
                (got, None)
            })
        };
        let leader = spawn(&svc);
        while calls.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let followers: Vec<_> = (0..2).map(|_| spawn(&svc)).collect();
        while svc.flights().followers < 2 {
            tokio::task::yield_now().await;
        }
        go.notify_one();
        let (got, error) = leader.await.unwrap();
        assert_eq!((got.as_slice(), error.as_deref()), (&b"par"[..], Some("connection reset by upstream")));
        for follower in followers {
            assert_eq!(follower.await.unwrap(), (b"fine".to_vec(), None));
        }
        let counters = layer.counters();
        assert_eq!((counters.executions, counters.failed, counters.retried), (1, 1, 2));
    });
}

#[test]
fn a_body_that_panics_while_it_is_read_answers_every_caller_with_a_500() {
    watchdog(async {
        let (go, calls) = (Arc::new(tokio::sync::Notify::new()), Arc::new(AtomicUsize::new(0)));
        let layer = CoalesceLayer::new();
        let svc = layer.layer(broken(true, go.clone(), calls.clone()));
        let responses: Vec<_> =
            (0..3).map(|_| tokio::spawn(svc.clone().oneshot(get("/b").body(()).unwrap()))).collect();
        while svc.flights().followers < 2 || calls.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        go.notify_one();
        for response in responses {
            let response = response.await.unwrap().unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(response.extensions().get::<Panicked>().unwrap().message(), Some("body exploded"));
        }
        assert_eq!((layer.counters().panics, svc.in_flight()), (1, 0));
    });
}
