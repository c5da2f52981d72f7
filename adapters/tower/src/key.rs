//! Which requests coalesce: [`KeyFn`], and the HTTP default [`HttpKeyFn`] with its [`HttpKey`].

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Uri};
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

/// Decides whether a request coalesces, and with which others: requests with equal keys share
/// one execution of the inner service and one response. `None` passes the request through to
/// the inner service on its own.
///
/// Implemented for every `Fn(&http::request::Parts) -> Option<K>`, so a closure is a key
/// function. The key must tell apart every two requests that may get different responses:
/// the layer serves one response to all of them. A follower's own request, its body included,
/// is dropped unread when the follower is served the flight's response: a key function that
/// coalesces requests with bodies must put what matters of the body in the key (it cannot
/// read the body) or return `None` for them.
///
/// # Examples
///
/// ```
/// use coalescer_tower::{CoalesceLayer, KeyFn};
/// // Coalesce by path only, for every method: only right if the path alone decides the
/// // response (no credentials, no content negotiation, no side effects).
/// let by_path = |head: &http::request::Parts| Some(head.uri.path().to_owned());
/// let request = http::Request::get("/report?x=1").body(()).unwrap().into_parts().0;
/// assert_eq!(by_path.key(&request), Some("/report".to_owned()));
/// let _layer = CoalesceLayer::with_key(by_path);
/// ```
pub trait KeyFn: Send + Sync + 'static {
    /// The key. Its `Hash` and `Eq` run inside the core's map (see `coalescer::Group`).
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of a request, from its head; `None` passes the request through uncoalesced.
    fn key(&self, head: &Parts) -> Option<Self::Key>;

    /// Called with the header names of a response's `Vary` that some request of the flight
    /// could disagree on, so that a key function can put them in later keys. The default
    /// does nothing. Whatever this does, a follower whose own request differs from the
    /// leader's in a header named by the response's `Vary` never gets that response.
    fn learn_vary(&self, names: &[HeaderName]) {
        let _ = names;
    }
}

impl<F, K> KeyFn for F
where
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn key(&self, head: &Parts) -> Option<K> {
        self(head)
    }
}

/// Request headers that are in every [`HttpKey`]: the credentials (two users are never
/// served one response), the host (virtual hosts), and the headers that make a response
/// conditional or partial (a `304` or a `206` is no answer to a plain `GET`).
pub const KEY_HEADERS: [HeaderName; 10] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// At most this many header names are learned from responses' `Vary` (a bound on what a
/// misbehaving upstream can make the key function carry).
pub const MAX_LEARNED_VARY: usize = 16;

/// The key of [`HttpKeyFn`]: the method, the URI and the values of the request headers that
/// the response may depend on ([`KEY_HEADERS`], the configured `Vary` names and the learned
/// ones), in that order, every value of a repeated header included.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpKey {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpKey {
    /// The request's method (`GET` or `HEAD`).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The header values in the key.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

impl fmt::Debug for HttpKey {
    /// Header values are left out: they hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&HeaderName> = self.headers.iter().map(|(name, _)| name).collect();
        f.debug_struct("HttpKey")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &names)
            .finish()
    }
}

/// The HTTP default key function: `GET` and `HEAD` requests without a body coalesce, keyed by
/// [`HttpKey`]; every other request passes through.
///
/// The key holds the method, the URI, the [`KEY_HEADERS`] (credentials among them, so two
/// users are never served one response), the headers named with
/// [`CoalesceLayer::vary`](crate::CoalesceLayer::vary), and the headers learned from
/// responses' `Vary` (at most [`MAX_LEARNED_VARY`]). Learned names apply to the requests that
/// arrive after the response that named them; until then the layer compares those headers
/// itself and serves a follower that disagrees by its own request.
///
/// # Examples
///
/// ```
/// use coalescer_tower::{HttpKeyFn, KeyFn};
/// let keys = HttpKeyFn::new();
/// let head = |req: http::request::Builder| req.body(()).unwrap().into_parts().0;
/// let alice = keys.key(&head(http::Request::get("/me").header("cookie", "user=alice")));
/// let bob = keys.key(&head(http::Request::get("/me").header("cookie", "user=bob")));
/// assert!(alice.is_some() && alice != bob); // never one response for two users
/// assert!(keys.key(&head(http::Request::post("/me"))).is_none()); // POST passes through
/// ```
#[derive(Clone, Default)]
pub struct HttpKeyFn {
    vary: Vec<HeaderName>,
    learned: Arc<RwLock<Vec<HeaderName>>>,
}

impl HttpKeyFn {
    /// The default: [`KEY_HEADERS`] and nothing configured.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a request header to every key (as a response's `Vary` would).
    pub fn vary(mut self, name: HeaderName) -> Self {
        if !KEY_HEADERS.contains(&name) && !self.vary.contains(&name) {
            self.vary.push(name);
        }
        self
    }

    /// The header names learned from responses' `Vary` so far.
    pub fn learned(&self) -> Vec<HeaderName> {
        self.learned.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl fmt::Debug for HttpKeyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpKeyFn").field("vary", &self.vary).field("learned", &self.learned()).finish()
    }
}

impl KeyFn for HttpKeyFn {
    type Key = HttpKey;

    fn key(&self, head: &Parts) -> Option<HttpKey> {
        if !(head.method == Method::GET || head.method == Method::HEAD) || has_body(&head.headers) {
            return None;
        }
        let mut headers = Vec::new();
        let mut add = |name: &HeaderName| {
            headers.extend(head.headers.get_all(name).iter().map(|value| (name.clone(), value.clone())));
        };
        KEY_HEADERS.iter().chain(&self.vary).for_each(&mut add);
        self.learned.read().unwrap_or_else(PoisonError::into_inner).iter().for_each(&mut add);
        Some(HttpKey { method: head.method.clone(), uri: head.uri.clone(), headers })
    }

    fn learn_vary(&self, names: &[HeaderName]) {
        let known = |name: &HeaderName, learned: &[HeaderName]| {
            KEY_HEADERS.contains(name) || self.vary.contains(name) || learned.contains(name)
        };
        let learned = self.learned.read().unwrap_or_else(PoisonError::into_inner);
        if names.iter().all(|name| known(name, &learned)) {
            return;
        }
        drop(learned);
        let mut learned = self.learned.write().unwrap_or_else(PoisonError::into_inner);
        for name in names {
            if learned.len() < MAX_LEARNED_VARY && !known(name, &learned) {
                learned.push(name.clone());
            }
        }
    }
}

/// Whether a request announces a body (a `GET` with a body is not keyed by its body, so it
/// does not coalesce).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|length| length.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn keys_differ_by_method_uri_credentials_and_host() {
        let keys = HttpKeyFn::new();
        let base = keys.key(&head(http::Request::get("/a"))).unwrap();
        for other in [
            http::Request::head("/a"),
            http::Request::get("/a?x"),
            http::Request::get("/a").header("authorization", "Bearer t"),
            http::Request::get("/a").header("host", "other.example"),
            http::Request::get("/a").header("if-none-match", "\"v1\""),
            http::Request::get("/a").header("range", "bytes=0-1"),
        ] {
            assert_ne!(keys.key(&head(other)).unwrap(), base);
        }
        assert_eq!(keys.key(&head(http::Request::get("/a").header("accept", "x/y"))).unwrap(), base);
    }

    #[test]
    fn unsafe_methods_and_bodies_pass_through() {
        let keys = HttpKeyFn::new();
        for req in [
            http::Request::post("/a"),
            http::Request::delete("/a"),
            http::Request::get("/a").header("content-length", "3"),
            http::Request::get("/a").header("transfer-encoding", "chunked"),
        ] {
            assert!(keys.key(&head(req)).is_none());
        }
        assert!(keys.key(&head(http::Request::get("/a").header("content-length", "0"))).is_some());
    }

    #[test]
    fn configured_and_learned_vary_names_split_keys() {
        let keys = HttpKeyFn::new().vary(header::ACCEPT_LANGUAGE);
        let de = head(http::Request::get("/a").header("accept-language", "de").header("accept", "a/b"));
        let fr = head(http::Request::get("/a").header("accept-language", "fr").header("accept", "c/d"));
        assert_ne!(keys.key(&de), keys.key(&fr));
        let fr_ab = head(http::Request::get("/a").header("accept-language", "de").header("accept", "c/d"));
        assert_eq!(keys.key(&de), keys.key(&fr_ab));
        keys.learn_vary(&[header::ACCEPT, header::COOKIE]);
        assert_eq!(keys.learned(), vec![header::ACCEPT]);
        assert_ne!(keys.key(&de), keys.key(&fr_ab));
    }

    #[test]
    fn learning_is_bounded() {
        let keys = HttpKeyFn::new();
        let names: Vec<HeaderName> =
            (0..40).map(|i| HeaderName::try_from(format!("x-h{i}")).unwrap()).collect();
        keys.learn_vary(&names);
        assert_eq!(keys.learned().len(), MAX_LEARNED_VARY);
    }

    #[test]
    fn debug_hides_header_values() {
        let keys = HttpKeyFn::new();
        let key = keys.key(&head(http::Request::get("/a").header("cookie", "secret=1"))).unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }
}
