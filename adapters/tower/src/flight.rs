//! One execution of the inner service for a flight: readiness, the call, the body read up to
//! the limit, and what the flight's callers get from it ([`Done`]).

use crate::body::CoalescedBody;
use crate::key::KeyFn;
use crate::panic::{PanicResponder, Panicked};
use crate::stats::Stats;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, response};
use http_body::Body;
use http_body_util::BodyExt;
use std::any::Any;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use tower_service::Service;

/// A service's shared state, one `Arc` for it and its clones (one reference count to touch
/// per call): the layer's settings and counters, and the service's flights.
pub(crate) struct Ctx<F: KeyFn> {
    pub(crate) key: Arc<F>,
    pub(crate) max_body: usize,
    pub(crate) on_panic: PanicResponder,
    pub(crate) stats: Arc<Stats>,
    pub(crate) group: coalescer::SharedGroup<F::Key, Done>,
}

/// The value of a flight, cloned to each of its callers (every variant is a few `Arc`s).
///
/// It names no type of the inner service, so that one group serves a service whatever its
/// request body: the leader's unshared response and the inner error are type-erased, and a
/// caller that cannot take them as its own types calls the inner service itself.
#[derive(Clone)]
pub(crate) enum Done {
    /// The response, buffered.
    Buffered(Arc<Buffered>),
    /// A response that was not buffered (too large, a stream, or its body failed mid-read):
    /// for the flight's leader only, taken out once.
    Unbuffered(Arc<Mutex<Option<Box<dyn Any + Send>>>>),
    /// The inner service's error (a `S::Error`), shared.
    Failed(Arc<dyn Any + Send + Sync>),
    /// The inner service panicked.
    Panicked(Panicked),
}

/// A response read whole, with what decides whom it may be served to.
pub(crate) struct Buffered {
    head: response::Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
    /// Sets a cookie, says `Cache-Control: private`, or `Vary: *`: the leader's alone.
    private: bool,
    /// The leader's values of the request headers named by the response's `Vary`.
    vary: Vec<(HeaderName, Vec<HeaderValue>)>,
}

impl Buffered {
    /// Whether a follower with these request headers may be served this response.
    pub(crate) fn serves(&self, request: &HeaderMap) -> bool {
        !self.private && self.vary.iter().all(|(name, values)| request.get_all(name).iter().eq(values))
    }

    /// A copy for one caller (the body is a clone of one `Bytes`).
    pub(crate) fn response<B: Body>(&self) -> Response<CoalescedBody<B>> {
        Response::from_parts(
            self.head.clone(),
            CoalescedBody::buffered(self.data.clone(), self.trailers.clone()),
        )
    }
}

/// Locks a mutex that nothing panics under (a poisoned one is as good).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The response for a panicked flight.
pub(crate) fn panic_response<B: Body>(
    on_panic: &PanicResponder,
    panicked: &Panicked,
) -> Response<CoalescedBody<B>> {
    on_panic(panicked).map(CoalescedBody::full)
}

/// Calls `svc` for `req` on its own: readiness first, then the call; the body passes through.
pub(crate) async fn alone<S, ReqB, ResB>(
    svc: S,
    req: Request<ReqB>,
) -> Result<Response<CoalescedBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    Ok(oneshot(svc, req).await?.map(CoalescedBody::own))
}

/// Waits for `svc` to be ready, then calls it.
async fn oneshot<S: Service<R>, R>(mut svc: S, req: R) -> Result<S::Response, S::Error> {
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// The work of a flight: runs the leader's request and turns the outcome into a [`Done`].
/// Every panic of the inner service on the way is caught here and becomes
/// [`Done::Panicked`], so that the core sees work that completes.
///
/// A named future around one `async fn` rather than nested `async` blocks: each nesting level
/// would store the request and the service again, and the whole future is moved into the
/// flight's box once per execution.
pub(crate) fn execute<S, ReqB, ResB, F>(
    svc: S,
    req: Request<ReqB>,
    ctx: Arc<Ctx<F>>,
) -> Execute<impl Future<Output = Result<Read<ResB>, S::Error>>, F>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
    F: KeyFn,
{
    Stats::bump(&ctx.stats.executions);
    let request_headers = req.headers().clone();
    let run = run(svc, req, ctx.max_body);
    Execute { run, request_headers, ctx }
}

pin_project_lite::pin_project! {
    /// The future of [`execute`].
    pub(crate) struct Execute<Fut, F: KeyFn> {
        #[pin]
        run: Fut,
        request_headers: HeaderMap,
        ctx: Arc<Ctx<F>>,
    }
}

impl<Fut, F, B, E> Future for Execute<Fut, F>
where
    Fut: Future<Output = Result<Read<B>, E>>,
    F: KeyFn,
    B: Body + Send + 'static,
    B::Error: Send + 'static,
    E: Send + Sync + 'static,
{
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        let this = self.project();
        let caught = match std::panic::catch_unwind(AssertUnwindSafe(|| this.run.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(payload),
        };
        let stats = &this.ctx.stats;
        Poll::Ready(match caught {
            Err(payload) => {
                Stats::bump(&stats.panics);
                Done::Panicked(Panicked::from_payload(&*payload))
            }
            Ok(Err(error)) => {
                Stats::bump(&stats.failed);
                Done::Failed(Arc::new(error))
            }
            Ok(Ok(Read::Whole { head, data, trailers })) => {
                let buffered = classify(head, data, trailers, this.request_headers, &*this.ctx.key);
                if buffered.private {
                    Stats::bump(&stats.private);
                }
                Done::Buffered(Arc::new(buffered))
            }
            Ok(Ok(Read::Unbuffered { response, failed })) => {
                Stats::bump(if failed { &stats.failed } else { &stats.too_large });
                let response: Box<dyn Any + Send> = Box::new(response);
                Done::Unbuffered(Arc::new(Mutex::new(Some(response))))
            }
        })
    }
}

/// The leader's request: readiness, the call, the body read up to `max`.
async fn run<S, ReqB, ResB>(mut svc: S, req: Request<ReqB>, max: usize) -> Result<Read<ResB>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    let response = svc.call(req).await?;
    Ok(read(response, max).await)
}

/// A response read as far as the limit allows.
pub(crate) enum Read<B: Body> {
    /// Read to its end.
    Whole { head: response::Parts, data: Bytes, trailers: Option<HeaderMap> },
    /// Too large, a stream, or failed mid-read: the bytes read so far, then the rest.
    Unbuffered { response: Response<CoalescedBody<B>>, failed: bool },
}

/// Reads the body of `response` if it fits in `max` bytes.
async fn read<B>(response: Response<B>, max: usize) -> Read<B>
where
    B: Body<Data = Bytes>,
{
    let (head, body) = response.into_parts();
    if unbufferable(&head.headers, &body.size_hint(), max) {
        let response = Response::from_parts(head, CoalescedBody::own(body));
        return Read::Unbuffered { response, failed: false };
    }
    let mut body = Box::pin(body);
    let (mut chunks, mut len, mut trailers) = (VecDeque::new(), 0, None::<HeaderMap>);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                let response = Response::from_parts(head, CoalescedBody::failed(chunks, error));
                return Read::Unbuffered { response, failed: true };
            }
        };
        match frame.into_data() {
            Ok(data) => {
                len += data.len();
                chunks.push_back(data);
                if len > max {
                    let response = Response::from_parts(head, CoalescedBody::resumed(chunks, body));
                    return Read::Unbuffered { response, failed: false };
                }
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(more);
                }
            }
        }
    }
    Read::Whole { head, data: concat(chunks, len), trailers }
}

/// Whether a response is not to be read: its announced length is over the limit, or it is an
/// event stream (which may never end).
fn unbufferable(headers: &HeaderMap, hint: &http_body::SizeHint, max: usize) -> bool {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().to_ascii_lowercase().starts_with(b"text/event-stream"));
    announced.max(hint.lower()) > max as u64 || stream
}

/// The chunks as one `Bytes` (no copy for a body of one chunk).
fn concat(mut chunks: VecDeque<Bytes>, len: usize) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop_front().unwrap_or_default();
    }
    let mut all = BytesMut::with_capacity(len);
    chunks.iter().for_each(|chunk| all.extend_from_slice(chunk));
    all.freeze()
}

/// Decides whom a whole response may be served to, and tells the key function what it varies on.
fn classify(
    head: response::Parts,
    data: Bytes,
    trailers: Option<HeaderMap>,
    request: &HeaderMap,
    keys: &impl KeyFn,
) -> Buffered {
    let (names, star) = vary(&head.headers);
    if !names.is_empty() {
        keys.learn_vary(&names);
    }
    let private = star || head.headers.contains_key(header::SET_COOKIE) || says_private(&head.headers);
    let vary = names
        .into_iter()
        .map(|name| {
            let values = request.get_all(&name).iter().cloned().collect();
            (name, values)
        })
        .collect();
    Buffered { head, data, trailers, private, vary }
}

/// The header names of a response's `Vary`, and whether it says `*`.
fn vary(headers: &HeaderMap) -> (Vec<HeaderName>, bool) {
    let (mut names, mut star) = (Vec::new(), false);
    for token in tokens(headers, &header::VARY) {
        if token == "*" {
            star = true;
        } else if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    (names, star)
}

/// Whether `Cache-Control` says `private` (meant for one user).
fn says_private(headers: &HeaderMap) -> bool {
    tokens(headers, &header::CACHE_CONTROL).any(|directive| {
        directive.split('=').next().is_some_and(|name| name.trim().eq_ignore_ascii_case("private"))
    })
}

/// The comma-separated tokens of every value of a header.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn vary_names_are_parsed_and_star_is_seen() {
        let (names, star) = vary(&headers(&[("vary", "Accept-Encoding, accept"), ("vary", "X-A")]));
        assert_eq!(names, ["accept-encoding", "accept", "x-a"]);
        assert!(!star);
        assert!(vary(&headers(&[("vary", "accept, *")])).1);
    }

    #[test]
    fn private_directives_are_found() {
        assert!(says_private(&headers(&[("cache-control", "max-age=3, Private")])));
        assert!(says_private(&headers(&[("cache-control", "private=\"x\"")])));
        assert!(!says_private(&headers(&[("cache-control", "public, max-age=3")])));
    }

    #[test]
    fn a_large_announced_length_or_an_event_stream_is_not_read() {
        let hint = http_body::SizeHint::default();
        assert!(unbufferable(&headers(&[("content-length", "11")]), &hint, 10));
        assert!(!unbufferable(&headers(&[("content-length", "10")]), &hint, 10));
        assert!(unbufferable(&headers(&[("content-type", "text/event-stream")]), &hint, 10));
        assert!(unbufferable(&HeaderMap::new(), &http_body::SizeHint::with_exact(11), 10));
    }

    #[test]
    fn chunks_are_joined() {
        let chunks = VecDeque::from([Bytes::from_static(b"ab"), Bytes::from_static(b"c")]);
        assert_eq!(concat(chunks, 3), "abc");
        assert_eq!(concat(VecDeque::new(), 0), "");
    }
}
