//! The bursts: many concurrent requests for the same reports, answered in one of five ways.

use crate::cache::{Source, StableLoader};
use crate::db::{Db, QueryError, Report, Ticket};
use coalescer::futures::{TimedOut, Timeout};
use coalescer::{Counters, Outcome, TryGroup};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tracing::Instrument;

/// How long the patient requests of a timeout scenario wait after the impatient ones are let go,
/// so that the first request for every key (the leader) is one that will give up.
const STAGGER: Duration = Duration::from_millis(1);

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
    /// Requests for the same key share one query (`try_work_shared`).
    Coalesced,
    /// `coalescer::cache` (a TTL cache whose loads are flights): the stable loader.
    Cached,
    /// Coalesced in work mode, with some requests (every key's leader among them) giving up at
    /// a deadline.
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
            Self::Coalesced => "coalesced: try_work_shared",
            Self::Cached => "coalescer::cache (TTL)",
            Self::TimeoutWork => "leaders time out: try_work",
            Self::TimeoutShared => "leaders time out: try_work_shared",
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
    /// ones, so every key's first request is among them whenever this is at least the number of
    /// keys.
    pub impatient: usize,
    /// The deadline of the impatient requests.
    pub timeout: Duration,
}

/// How one scenario went, over all its bursts.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// Requests fired.
    pub requests: usize,
    /// Requests that got the report.
    pub values: usize,
    /// Of those, the ones the cache answered.
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
    /// Report queries SQLite started, by its own trace hook.
    pub queries: u64,
    /// The same, per key.
    pub queries_per_key: BTreeMap<i64, u64>,
    /// Wall time of the bursts, from their release to their last answer.
    pub wall: Duration,
    /// Median latency of the requests that got the report.
    pub p50: Option<Duration>,
    /// 99th percentile latency of the requests that got the report.
    pub p99: Option<Duration>,
    /// The group's counters (none for the naive scenario).
    pub counters: Option<Counters>,
}

/// What one request got.
enum Answer {
    /// The report, where it came from, and whether this request ran the query that made it.
    Value(Arc<Report>, Source, bool),
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
    group: TryGroup<i64, Arc<Report>, QueryError>,
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
        while db.running() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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
        _ => Some(state.group.counters()),
    };
    tally(scenario, samples, reference, wall, counters)
        .with_queries(db.log().total() - queries_before, per_key)
}

/// Fires one burst: every request is spawned and parked on a barrier, then all are let go at
/// once. Returns the samples and the wall time from the release to the last answer.
async fn burst(state: &Arc<State>, plan: &Plan) -> (Vec<Sample>, Duration) {
    let barrier = Arc::new(Barrier::new(plan.requests + 1));
    let tasks: Vec<_> = (0..plan.requests)
        .map(|i| {
            let key = plan.keys[i % plan.keys.len()];
            let impatient = state.scenario.has_deadlines() && i < plan.impatient;
            let (state, barrier) = (state.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                if state.scenario.has_deadlines() && !impatient {
                    tokio::time::sleep(STAGGER).await;
                }
                let start = Instant::now();
                // Each request in a span of its own, as a service's request handler would be:
                // a follower's span follows from the flight it joined.
                let span = tracing::info_span!("request", n = i, key);
                let answer = request(&state, key, impatient).instrument(span).await;
                let latency = start.elapsed();
                Sample { key, latency, answer }
            })
        })
        .collect();
    barrier.wait().await;
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

/// One request, answered the scenario's way.
async fn request(state: &State, key: i64, impatient: bool) -> Answer {
    let db = state.db.clone();
    match state.scenario {
        Scenario::Naive => from_query(query(db, key).await),
        // `try_work_shared` rather than `try_work`: the flight owns the query, so a request
        // that is cancelled or times out (the leader included) neither cancels nor restarts
        // the query for the others; it is dropped only when the last waiting request leaves.
        // It needs a `Send + 'static` query, which a spawned blocking query is anyway.
        Scenario::Coalesced => from_flight(state.group.try_work_shared(key, || query(db, key)).await),
        Scenario::Cached => match state.loader.load(key).await {
            Ok((report, source)) => Answer::Value(report, source, false),
            Err(_) => Answer::Failed,
        },
        // Work mode: the query runs inside the leader's future, so when the leader gives up
        // its query is dropped (and interrupted), and a waiting request is promoted to run
        // its own closure: a second query.
        Scenario::TimeoutWork => {
            let call = state.group.try_work(key, || query(db, key));
            with_deadline(call, impatient.then_some(state.timeout)).await
        }
        Scenario::TimeoutShared => {
            let call = state.group.try_work_shared(key, || query(db, key));
            with_deadline(call, impatient.then_some(state.timeout)).await
        }
    }
}

/// Awaits a coalesced call, giving up at `deadline` if there is one.
async fn with_deadline<W>(call: W, deadline: Option<Duration>) -> Answer
where
    W: Future<Output = Result<Outcome<Arc<Report>>, coalescer::Error<QueryError>>>,
{
    match deadline {
        None => from_flight(call.await),
        Some(deadline) => match Timeout::new(call, tokio::time::sleep(deadline)).await {
            Ok(result) => from_flight(result),
            Err(TimedOut { .. }) => Answer::TimedOut,
        },
    }
}

fn from_query(result: Result<Arc<Report>, QueryError>) -> Answer {
    match result {
        Ok(report) => Answer::Value(report, Source::Flight, true),
        Err(_) => Answer::Failed,
    }
}

fn from_flight(result: Result<Outcome<Arc<Report>>, coalescer::Error<QueryError>>) -> Answer {
    match result {
        Ok(outcome) => {
            let led = outcome.is_leader();
            Answer::Value(outcome.into_value(), Source::Flight, led)
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
    let mut answered_leaders = 0;
    for sample in samples {
        match sample.answer {
            Answer::Value(report, source, led) => {
                row.values += 1;
                answered_leaders += u64::from(led);
                row.cache_hits += usize::from(source == Source::Cache);
                row.wrong += usize::from(reference.get(&sample.key) != Some(&report));
                latencies.push(sample.latency);
            }
            Answer::TimedOut => row.timed_out += 1,
            Answer::Failed => row.failed += 1,
        }
    }
    if let Some(c) = counters {
        row.leaders_gave_up = (c.leaders + c.promotions).saturating_sub(answered_leaders);
    }
    latencies.sort_unstable();
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
fn percentile(sorted: &[Duration], pct: usize) -> Option<Duration> {
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
        assert_eq!(percentile(&[], 50), None);
    }
}
