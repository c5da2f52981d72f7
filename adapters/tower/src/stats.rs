//! [`Counters`]: what the layer did with the requests it saw.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a layer's counters, totals over every service the layer made, since the
/// layer was created. One relaxed increment per event.
///
/// `executions + coalesced + retried + passed_through` is the number of requests answered
/// (a request dropped before its answer counts nowhere, unless it led a flight).
///
/// # Examples
///
/// ```
/// let layer = coalescer_tower::CoalesceLayer::new();
/// assert_eq!(layer.counters(), coalescer_tower::Counters::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Flights that called the inner service: one per key per burst.
    pub executions: u64,
    /// Requests served the buffered response (or the error, or the panic response) of a
    /// flight they joined, without calling the inner service: the work saved.
    pub coalesced: u64,
    /// Requests that joined a flight whose response could not be shared with them (too large,
    /// private, or a `Vary` header on which their request differs), and so called the inner
    /// service with their own request after the flight ended.
    pub retried: u64,
    /// Requests whose key function said `None` (by default: not `GET`/`HEAD`, or with a
    /// body): passed to the inner service on their own.
    pub passed_through: u64,
    /// Flights whose response body was larger than the limit (by `Content-Length`, or once
    /// read past it) or a stream (`text/event-stream`): handed unbuffered to the request that
    /// led the flight, not shared.
    pub too_large: u64,
    /// Flights whose buffered response was private: it sets a cookie, says
    /// `Cache-Control: private`, or `Vary: *`. Only the request that led the flight gets it.
    pub private: u64,
    /// Flights on which the inner service returned an error (shared with the flight's
    /// callers), or whose response body failed while it was read (that response goes to the
    /// leader's request, with the error at the point where the body failed).
    pub failed: u64,
    /// Flights on which the inner service panicked.
    pub panics: u64,
}

/// The live counters behind [`Counters`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) executions: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) passed_through: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) private: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panics: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            executions: self.executions.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            retried: self.retried.load(Relaxed),
            passed_through: self.passed_through.load(Relaxed),
            too_large: self.too_large.load(Relaxed),
            private: self.private.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panics: self.panics.load(Relaxed),
        }
    }
}
