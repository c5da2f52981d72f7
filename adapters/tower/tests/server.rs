//! A real server: axum on a loopback socket (port 0), real HTTP/1.1 clients (hyper-util's
//! pooled client, and hyper's own connections for clients that hang up), a slow handler held
//! at a gate. Events are ordered with channels and the core's counters, never with sleeps;
//! each test runs under a watchdog.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use coalescer_tower::{Coalesce, CoalesceLayer};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tower::{Layer, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `test` on a 4-worker runtime, failing it if it has not finished in 60 s.
fn watchdog<F: Future<Output = ()> + Send + 'static>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), tokio::spawn(test))
            .await
            .expect("watchdog: the test hung")
            .unwrap();
    });
}

/// The slow endpoint's state: how often it ran, a signal when it is entered, and a gate it
/// waits at (opened by the test).
#[derive(Clone)]
struct Slow {
    executions: Arc<AtomicUsize>,
    entered: mpsc::UnboundedSender<()>,
    gate: watch::Receiver<u64>,
}

/// The handler: counts itself, says it is in, waits until the gate lets its burst through.
async fn report(State(slow): State<Slow>) -> String {
    let run = slow.executions.fetch_add(1, SeqCst) as u64 + 1;
    slow.entered.send(()).unwrap();
    let mut gate = slow.gate.clone();
    gate.wait_for(|opened| *opened >= run).await.unwrap();
    format!("report #{run}")
}

struct Server {
    addr: SocketAddr,
    coalesce: Coalesce<axum::routing::MethodRouter>,
    executions: Arc<AtomicUsize>,
    entered: mpsc::UnboundedReceiver<()>,
    gate: watch::Sender<u64>,
    /// One message per response future dropped before it finished (a client that hung up).
    left: mpsc::UnboundedReceiver<()>,
}

/// Sends on drop unless the response future it sits in finished.
struct LeftGuard(Option<mpsc::UnboundedSender<()>>);

impl LeftGuard {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for LeftGuard {
    fn drop(&mut self) {
        if let Some(left) = self.0.take() {
            let _ = left.send(());
        }
    }
}

/// Serves `/report` (the slow handler behind the layer, routed with `route_service` so that
/// the test keeps a clone of the layered service and reads its flight counters) on loopback.
async fn serve() -> Server {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let (gate, gate_rx) = watch::channel(0);
    let (left_tx, left) = mpsc::unbounded_channel();
    let executions = Arc::new(AtomicUsize::new(0));
    let slow = Slow { executions: executions.clone(), entered: entered_tx, gate: gate_rx };
    let coalesce = CoalesceLayer::new().layer(get(report).with_state(slow));
    let watched = ServiceExt::<Request<axum::body::Body>>::map_future(coalesce.clone(), move |response| {
        let guard = LeftGuard(Some(left_tx.clone()));
        async move {
            let response = response.await;
            guard.finished();
            response
        }
    });
    let app = Router::new().route_service("/report", watched);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, coalesce, executions, entered, gate, left }
}

impl Server {
    /// Waits until the handler is in and `followers` more requests have joined its flight.
    async fn burst_joined(&mut self, followers: u64) {
        self.entered.recv().await.unwrap();
        while self.coalesce.flights().followers < followers {
            tokio::task::yield_now().await;
        }
    }
}

/// A GET on one connection of its own, driven in this task: aborting the task closes the
/// socket (a client that hangs up).
async fn get_alone(addr: SocketAddr) -> Result<(StatusCode, Bytes), BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let exchange = async {
        let request = Request::get("/report").header("host", addr.to_string()).body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        Ok::<_, BoxError>((status, response.into_body().collect().await?.to_bytes()))
    };
    tokio::select! {
        result = exchange => result,
        ended = conn => Err(format!("the connection ended before the response: {ended:?}").into()),
    }
}

#[test]
fn a_burst_of_identical_requests_runs_the_handler_once_per_burst() {
    watchdog(async {
        let mut server = serve().await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("http://{}/report", server.addr).parse().unwrap();
        let mut followers = 0;
        for burst in 1..=2u64 {
            let requests: Vec<_> = (0..32)
                .map(|_| {
                    let (client, uri) = (client.clone(), uri.clone());
                    tokio::spawn(async move {
                        let response = client.get(uri).await.unwrap();
                        let status = response.status();
                        (status, response.into_body().collect().await.unwrap().to_bytes())
                    })
                })
                .collect();
            followers += 31;
            server.burst_joined(followers).await;
            server.gate.send(burst).unwrap();
            for request in requests {
                let (status, body) = request.await.unwrap();
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, format!("report #{burst}"));
            }
            assert_eq!(server.executions.load(SeqCst) as u64, burst, "one execution per burst");
        }
        let counters = server.coalesce.counters();
        assert_eq!((counters.executions, counters.coalesced, counters.retried), (2, 62, 0));
    });
}

#[test]
fn clients_that_hang_up_mid_request_cancel_nothing_for_the_others() {
    watchdog(async {
        let mut server = serve().await;
        let addr = server.addr;
        let leader = tokio::spawn(get_alone(addr));
        server.entered.recv().await.unwrap();
        let followers: Vec<_> = (0..11).map(|_| tokio::spawn(get_alone(addr))).collect();
        while server.coalesce.flights().followers < 11 {
            tokio::task::yield_now().await;
        }
        // The leader's client and four followers' hang up while the handler runs.
        leader.abort();
        followers[..4].iter().for_each(|client| client.abort());
        for _ in 0..5 {
            server.left.recv().await.unwrap(); // the server dropped that request's future
        }
        server.gate.send(1).unwrap();
        for client in followers.into_iter().skip(4) {
            let (status, body) = client.await.unwrap().unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, "report #1");
        }
        assert_eq!(server.executions.load(SeqCst), 1, "the handler ran once, and was not restarted");
        assert_eq!(server.coalesce.flights().cancellations, 0);
        assert_eq!(server.coalesce.counters().coalesced, 7);
    });
}

#[test]
fn the_layer_applies_with_router_layer_alone() {
    watchdog(async {
        let layer = CoalesceLayer::new();
        let app = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/who", axum::routing::post(|| async { "posted" }))
            .layer(layer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let response = client.get(format!("http://{addr}/hello").parse().unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hello");
        let post = Request::post(format!("http://{addr}/who")).body(Empty::new()).unwrap();
        let response = client.request(post).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "posted");
        let counters = layer.counters();
        assert_eq!((counters.executions, counters.passed_through), (1, 1));
    });
}
