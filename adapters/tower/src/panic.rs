//! [`Panicked`]: what every caller of a flight gets when the inner service panicked.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// The inner service panicked (in `poll_ready`, `call`, its response future or while its body
/// was read) while it served a flight.
///
/// The layer catches the panic where the flight runs it, so that no caller of the flight, the
/// one whose task happened to drive it included, is left without an answer: each gets the
/// response made by the layer's panic responder ([`CoalesceLayer::on_panic`]; by default
/// [`Panicked::into_response`], a bare `500`). That response carries the `Panicked` in its
/// extensions, so an outer layer can find it and map it; the key is free again at once, so
/// the next request runs the inner service anew.
///
/// [`CoalesceLayer::on_panic`]: crate::CoalesceLayer::on_panic
///
/// # Examples
///
/// ```
/// let response = coalescer_tower::Panicked::new(Some("db gone")).into_response();
/// assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
/// let panicked = response.extensions().get::<coalescer_tower::Panicked>().unwrap();
/// assert_eq!(panicked.message(), Some("db gone"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Panicked {
    message: Option<Arc<str>>,
}

impl Panicked {
    /// A panic with this message (for tests and custom responders).
    pub fn new(message: Option<&str>) -> Self {
        Self { message: message.map(Arc::from) }
    }

    /// From a caught panic's payload: its message, when the payload is a string.
    pub(crate) fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&'static str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        Self::new(message)
    }

    /// From the core's typed outcome of a flight that ended without a value.
    pub(crate) fn from_aborted(aborted: &coalescer::Aborted) -> Self {
        Self::new(aborted.message())
    }

    /// The panic's message, when its payload was a string. It is for logs: the default
    /// response does not show it to the client.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The default response: `500 Internal Server Error`, a short plain-text body that does not
    /// reveal the panic's message, and this `Panicked` in the extensions.
    pub fn into_response(self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from_static(b"internal server error\n"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response.extensions_mut().insert(self);
        response
    }
}

impl fmt::Debug for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panicked").field("message", &self.message()).finish()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(message) => write!(f, "the coalesced inner service panicked: {message}"),
            None => f.write_str("the coalesced inner service panicked"),
        }
    }
}

impl std::error::Error for Panicked {}

/// Makes the response for a [`Panicked`] flight (see [`CoalesceLayer::on_panic`](crate::CoalesceLayer::on_panic)).
pub(crate) type PanicResponder = Arc<dyn Fn(&Panicked) -> Response<Bytes> + Send + Sync>;

/// The default responder.
pub(crate) fn default_responder() -> PanicResponder {
    Arc::new(|panicked: &Panicked| panicked.clone().into_response())
}
