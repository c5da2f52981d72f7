//! The bursts: many concurrent requests for the same reports, answered in one of five ways.

use crate::cache::StableLoader;
use crate::db::{Db, QueryError, Report, Ticket};
use crate::latch::Latch;
use coalescer::futures::Timeout;
use coalescer::{Counters, Outcome, SharedGroup, TryGroup};
use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tracing::Instrument;

/// The report query as a future. It runs on tokio's blocking pool (rusqlite is synchronous),
/// on a connection of its own; dropping the future interrupts the query in SQLite, so that a
/// cancelled request does not leave a full table scan running behind it.
///
/// # Panics
///
/// When the query panics, the panic is resumed here.
pub async fn query(db: Arc<Db>, category: i64) -> Result<Arc<Report>, QueryError> {
    let ticket = Arc::new(Ticket::default());
    let _interrupt_when_dropped = CancelOnDrop(ticket.clone());
    let report = tokio::task::spawn_blocking(move || db.report(category, &ticket)).await;
    match report {
        Ok(report) => Ok(Arc::new(report?)),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Cancels a ticket when dropped; after the query finished, cancelling does nothing.
struct CancelOnDrop(Arc<Ticket>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One way of answering the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every request runs the query: the stampede.
    Naive,
    /// Requests for the same key share one query (a shared-mode group's `try_work`).
    Coalesced,
    /// `coalescer::cache` (a TTL cache whose loads are flights): the stable loader.
    Cached,
    /// Coalesced in work mode, with some requests (every key's leader among them) giving up at
    /// a deadline, once their flight's query is running and every request has joined.
    TimeoutWork,
    /// Coalesced in shared-work mode, with the same impatient requests.
    TimeoutShared,
}

impl Scenario {
    /// The scenarios that run without deadlines.
    pub const BASIC: [Self; 3] = [Self::Naive, Self::Coalesced, Self::Cached];
    /// The leader-cancellation scenarios.
    pub const TIMEOUTS: [Self; 2] = [Self::TimeoutWork, Self::TimeoutShared];

    /// A short name, for the group's metrics label and span field.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Coalesced => "coalesced",
            Self::Cached => "cached",
            Self::TimeoutWork => "timeout-work",
            Self::TimeoutShared => "timeout-shared",
        }
    }

    /// A short name for the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Naive => "naive: every request queries",
            Self::Coalesced => "coalesced: shared group",
            Self::Cached => "coalescer::cache (TTL)",
            Self::TimeoutWork => "leaders time out: work group",
            Self::TimeoutShared => "leaders time out: shared group",
        }
    }

    /// Whether some requests of this scenario have a deadline.
    pub fn has_deadlines(self) -> bool {
        matches!(self, Self::TimeoutWork | Self::TimeoutShared)
    }
}

/// What the bursts of one scenario look like.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Concurrent requests in each burst.
    pub requests: usize,
    /// The keys (categories) the requests are spread over, round-robin.
    pub keys: Vec<i64>,
    /// Bursts, fired one after the other.
    pub bursts: usize,
    /// How long a cached report stays fresh.
    pub ttl: Duration,
    /// Requests per burst that give up at the deadline, in the timeout scenarios: the first
    /// ones, and always the first request for each key, which leads its key's flight (the others
    /// are let go only once SQLite has started the leaders' queries).
    pub impatient: usize,
    /// The deadline of the impatient requests, from the burst's release; it never falls before
    /// every request of the burst has joined its flight, so that a leader that gives up always
    /// leaves followers behind. (A leader whose query lands before its deadline, which a long
    /// deadline allows, just gets its report: the table then says that no leader gave up.)
    pub timeout: Duration,
}

/// How one scenario went, over all its bursts.
///
/// Each request is counted once: `ran + joined + cache_hits + timed_out + failed == requests`.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// Requests fired.
    pub requests: usize,
    /// Requests that got the report (`ran + joined + cache_hits`).
    pub values: usize,
    /// Of those, the ones that ran the report query themselves: every naive request, a
    /// flight's leader, a follower promoted after its leader gave up.
    pub ran: usize,
    /// Of those, the ones that joined a flight and waited for another request's query.
    pub joined: usize,
    /// Of those, the ones the cache answered without waiting for a query.
    pub cache_hits: usize,
    /// Requests that gave up at their deadline.
    pub timed_out: usize,
    /// Requests that got an error.
    pub failed: usize,
    /// Reports that differ from the reference run (always 0 unless something is broken).
    pub wrong: usize,
    /// Requests that started a query through the group (first callers and promoted ones) and
    /// then gave up before it finished.
    pub leaders_gave_up: u64,
    /// Report queries SQLite started, by its own trace hook (interrupted ones included).
    pub queries: u64,
    /// The same, per key.
    pub queries_per_key: BTreeMap<i64, u64>,
    /// Wall time of the bursts, from their release to their last answer.
    pub wall: Duration,
    /// Median latency of the requests that got the report, timed from the burst's release.
    pub p50: Option<Latency>,
    /// 99th percentile latency of the requests that got the report, timed the same way.
    pub p99: Option<Latency>,
    /// The group's counters (none for the naive scenario, nor for the cache, whose group is
    /// its own).
    pub counters: Option<Counters>,
}

/// How a request that got the report got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// It ran the report query: a naive request, a flight's leader, a promoted follower.
    Ran,
    /// It joined a flight and waited for another request's query.
    Joined,
    /// The cache had the report: no query, no wait.
    Cache,
}

/// One request's latency, and how it got its report: a percentile of a [`Row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// From the burst's release to the report.
    pub time: Duration,
    /// How the request got the report (a few microseconds is a cache hit).
    pub how: How,
}

/// What one request got.
enum Answer {
    Value(Arc<Report>, How),
    TimedOut,
    Failed,
}

struct Sample {
    key: i64,
    latency: Duration,
    answer: Answer,
}

/// What the requests of one scenario share.
struct State {
    db: Arc<Db>,
    scenario: Scenario,
    timeout: Duration,
    /// Work mode (`TimeoutWork`).
    group: TryGroup<i64, Arc<Report>, QueryError>,
    /// Shared-work mode (`Coalesced`, `TimeoutShared`).
    shared: SharedGroup<i64, Result<Arc<Report>, Arc<QueryError>>>,
    loader: StableLoader,
}

/// Runs `plan`'s bursts the way `scenario` says, and checks every report against `reference`.
pub async fn run(
    db: &Arc<Db>,
    scenario: Scenario,
    plan: &Plan,
    reference: &HashMap<i64, Arc<Report>>,
) -> Row {
    let state = Arc::new(State {
        db: db.clone(),
        scenario,
        timeout: plan.timeout,
        // The group's name: the `group` label of its metrics and field of its flights' spans.
        group: TryGroup::new().named(scenario.slug()),
        shared: TryGroup::new().named(scenario.slug()).shared(),
        loader: StableLoader::new(db.clone(), plan.ttl),
    });
    let (queries_before, per_key_before) = (db.log().total(), db.log().per_key());
    let mut samples = Vec::with_capacity(plan.requests * plan.bursts);
    let mut wall = Duration::ZERO;
    for _ in 0..plan.bursts {
        let (burst_samples, burst_wall) =
            if scenario == Scenario::Coalesced && crate::observe::wants_a_trace() {
                let (result, trace) = crate::observe::trace_burst(burst(&state, plan)).await;
                println!("--trace: the flight spans of one burst of \"{}\"\n{trace}", scenario.label());
                result
            } else {
                burst(&state, plan).await
            };
        samples.extend(burst_samples);
        wall += burst_wall;
        // A query whose callers all left may still be unwinding on the blocking pool.
        db.idle().await;
    }
    let mut per_key = db.log().per_key();
    for (key, before) in per_key_before {
        *per_key.entry(key).or_default() -= before;
    }
    per_key.retain(|_, n| *n > 0);
    let counters = match scenario {
        Scenario::Naive => None,
        // The cache's own loads are not counted as a group's leaders and followers.
        Scenario::Cached => None,
        Scenario::TimeoutWork => Some(state.group.counters()),
        Scenario::Coalesced | Scenario::TimeoutShared => Some(state.shared.counters()),
    };
    tally(scenario, samples, reference, wall, counters)
        .with_queries(db.log().total() - queries_before, per_key)
}

/// What orders the requests of one burst.
struct Gates {
    /// Every request is spawned and parked here, then all are let go at once.
    release: Barrier,
    /// Timeout scenarios: the first request for each key leads its flight; the others wait
    /// until SQLite has started this many report statements (the leaders' queries) in all...
    leaders_started: u64,
    /// ...or until every leader's call has ended (should a leader fail before its query runs).
    leaders_done: Latch,
    /// Timeout scenarios: opens once every request that is not a leader has joined a flight
    /// (been polled once); no deadline falls before it.
    joined: Latch,
}

/// Fires one burst: every request is spawned and parked on a barrier, then all are let go at
/// once; each is timed from that release. Returns the samples and the wall time from the
/// release to the last answer.
///
/// In the timeout scenarios, the requests are ordered by latches, not by sleeping: the first
/// request for each key is let go first and leads its key's flight; the others go once SQLite
/// has started the leaders' queries, so they join those flights; an impatient request gives
/// up at its deadline, but never before every request has joined. So every leader that gives
/// up leaves a running query and waiting followers behind.
async fn burst(state: &Arc<State>, plan: &Plan) -> (Vec<Sample>, Duration) {
    let ordered = state.scenario.has_deadlines();
    let leaders = if ordered { plan.keys.len().min(plan.requests) } else { 0 };
    let gates = Arc::new(Gates {
        release: Barrier::new(plan.requests + 1),
        leaders_started: state.db.log().total() + leaders as u64,
        leaders_done: Latch::new(leaders),
        joined: Latch::new(plan.requests - leaders),
    });
    let tasks: Vec<_> = (0..plan.requests)
        .map(|i| {
            let key = plan.keys[i % plan.keys.len()];
            let role = match (ordered, i < leaders, i < plan.impatient) {
                (false, ..) => Role::Plain,
                (true, true, _) => Role::Leader,
                (true, false, impatient) => Role::Follower { impatient },
            };
            let (state, gates) = (state.clone(), gates.clone());
            tokio::spawn(async move {
                gates.release.wait().await;
                let released = Instant::now();
                // Each request in a span of its own, as a service's request handler would be:
                // a follower's span follows from the flight it joined.
                let span = tracing::info_span!("request", n = i, key);
                let answer = request(&state, &gates, key, role, released).instrument(span).await;
                Sample { key, latency: released.elapsed(), answer }
            })
        })
        .collect();
    gates.release.wait().await;
    let released = Instant::now();
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(sample) => samples.push(sample),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    (samples, released.elapsed())
}

/// A request's part in a burst.
#[derive(Clone, Copy)]
enum Role {
    /// A scenario without deadlines: every request goes at the release.
    Plain,
    /// The first request for its key in a timeout scenario: it goes first, so it leads the
    /// key's flight, and it is impatient.
    Leader,
    /// Any other request of a timeout scenario: it goes once the leaders' queries run.
    Follower { impatient: bool },
}

/// One request, answered the scenario's way.
async fn request(state: &State, gates: &Gates, key: i64, role: Role, released: Instant) -> Answer {
    let db = state.db.clone();
    match state.scenario {
        Scenario::Naive => from_query(query(db, key).await),
        // A shared-mode group rather than a work-mode one: the flight owns the query, so a request
        // that is cancelled or times out (the leader included) neither cancels nor restarts
        // the query for the others; it is dropped only when the last waiting request leaves.
        // It needs a `Send + 'static` query, which a spawned blocking query is anyway.
        Scenario::Coalesced => from_flight(state.shared.try_work(&key, || query(db, key)).await),
        Scenario::Cached => match state.loader.load(key).await {
            Ok((report, served)) if served.is_cached() => Answer::Value(report, How::Cache),
            Ok((report, coalescer::cache::Served::Loaded)) => Answer::Value(report, How::Ran),
            Ok((report, _)) => Answer::Value(report, How::Joined),
            Err(_) => Answer::Failed,
        },
        // Work mode: the query runs inside the leader's future, so when the leader gives up
        // its query is dropped (and interrupted), and a waiting request is promoted to run
        // its own closure: a second query.
        Scenario::TimeoutWork => {
            let call = state.group.try_work(&key, || query(db, key));
            with_deadline(call, state, gates, role, released).await
        }
        Scenario::TimeoutShared => {
            let call = state.shared.try_work(&key, || query(db, key));
            with_deadline(call, state, gates, role, released).await
        }
    }
}

/// Awaits a coalesced call of a timeout scenario in its `role`: a follower waits for the
/// leaders' queries to run before it calls, and counts itself joined after its first poll (a
/// call joins its flight when first polled); an impatient request gives up at the deadline,
/// but not before every request has joined.
async fn with_deadline<W>(call: W, state: &State, gates: &Gates, role: Role, released: Instant) -> Answer
where
    W: Future<Output = Result<Outcome<Arc<Report>>, coalescer::Error<QueryError>>>,
{
    let impatient = match role {
        Role::Plain => return from_flight(call.await),
        Role::Leader => true,
        Role::Follower { impatient } => {
            tokio::select! {
                () = state.db.log().started(gates.leaders_started) => {}
                () = gates.leaders_done.wait() => {}
            }
            impatient
        }
    };
    let _leader_done = matches!(role, Role::Leader).then(|| Arrive(&gates.leaders_done));
    let mut call = pin!(call);
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    if !matches!(role, Role::Leader) {
        gates.joined.arrive();
    }
    if let Poll::Ready(result) = first {
        return from_flight(result);
    }
    if !impatient {
        return from_flight(call.await);
    }
    let deadline = async {
        gates.joined.wait().await;
        tokio::time::sleep_until((released + state.timeout).into()).await;
    };
    match Timeout::new(call, deadline).await {
        Err(e) if e.is_timed_out() => Answer::TimedOut,
        result => from_flight(result),
    }
}

/// Arrives at its latch when dropped: however the call it guards ends.
struct Arrive<'a>(&'a Latch);

impl Drop for Arrive<'_> {
    fn drop(&mut self) {
        self.0.arrive();
    }
}

fn from_query(result: Result<Arc<Report>, QueryError>) -> Answer {
    match result {
        Ok(report) => Answer::Value(report, How::Ran),
        Err(_) => Answer::Failed,
    }
}

fn from_flight(result: Result<Outcome<Arc<Report>>, coalescer::Error<QueryError>>) -> Answer {
    match result {
        Ok(outcome) => {
            let how = if outcome.is_leader() { How::Ran } else { How::Joined };
            Answer::Value(outcome.into_value(), how)
        }
        Err(_) => Answer::Failed,
    }
}

fn tally(
    scenario: Scenario,
    samples: Vec<Sample>,
    reference: &HashMap<i64, Arc<Report>>,
    wall: Duration,
    counters: Option<Counters>,
) -> Row {
    let mut row = Row {
        scenario,
        requests: samples.len(),
        values: 0,
        ran: 0,
        joined: 0,
        cache_hits: 0,
        timed_out: 0,
        failed: 0,
        wrong: 0,
        leaders_gave_up: 0,
        queries: 0,
        queries_per_key: BTreeMap::new(),
        wall,
        p50: None,
        p99: None,
        counters,
    };
    let mut latencies = Vec::with_capacity(samples.len());
    for sample in samples {
        match sample.answer {
            Answer::Value(report, how) => {
                row.values += 1;
                *match how {
                    How::Ran => &mut row.ran,
                    How::Joined => &mut row.joined,
                    How::Cache => &mut row.cache_hits,
                } += 1;
                row.wrong += usize::from(reference.get(&sample.key) != Some(&report));
                latencies.push(Latency { time: sample.latency, how });
            }
            Answer::TimedOut => row.timed_out += 1,
            Answer::Failed => row.failed += 1,
        }
    }
    if let Some(c) = counters {
        row.leaders_gave_up = (c.leaders + c.promotions).saturating_sub(row.ran as u64);
    }
    latencies.sort_unstable_by_key(|l| l.time);
    row.p50 = percentile(&latencies, 50);
    row.p99 = percentile(&latencies, 99);
    row
}

impl Row {
    fn with_queries(mut self, queries: u64, per_key: BTreeMap<i64, u64>) -> Self {
        self.queries = queries;
        self.queries_per_key = per_key;
        self
    }
}

/// The nearest-rank percentile of sorted samples.
pub(crate) fn percentile<T: Copy>(sorted: &[T], pct: usize) -> Option<T> {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&ms, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&ms[..1], 99), Some(Duration::from_millis(1)));
        assert_eq!(percentile::<Duration>(&[], 50), None);
    }
}
