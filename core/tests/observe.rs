//! Observability (features `tracing` and `metrics`): a span per flight, each follower's span
//! following from it, the work polled inside it, events for what happens to a flight; metrics
//! counted per group with the group's name as the only label. Checked with `tracing`'s own
//! subscriber registry (a recording layer) and `metrics-util`'s debugging recorder, after
//! scripted sequences on a real multi-threaded runtime.

mod common;

use coalescer::{Group, WhenFull};
use common::{Gate, poll_once, until};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::Instrument;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as recorded: its name, its parent's name, its fields.
type SpanSeen = (String, Option<String>, Vec<(String, String)>);

/// The tests take turns: `tracing` caches each callsite's interest for every dispatcher at
/// once, so a flight made on a thread with no subscriber (another test's) while a test's
/// scoped subscriber is being set up could leave that test's callsites uninterested.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the recording layer saw.
#[derive(Default, Debug)]
struct Seen {
    /// Span id -> (name, parent's name, fields).
    spans: HashMap<u64, SpanSeen>,
    /// (span's name, the name of the span it follows from).
    follows: Vec<(u64, u64)>,
    /// (message, the name of the event's parent span).
    events: Vec<(String, Option<String>)>,
}

#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Seen>>);

struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_string(), format!("{value:?}")));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recording {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.name().to_string());
        self.0
            .lock()
            .unwrap()
            .spans
            .insert(id.into_u64(), (attrs.metadata().name().to_string(), parent, fields.0));
    }

    fn on_record(&self, id: &Id, values: &tracing::span::Record<'_>, _: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        values.record(&mut fields);
        if let Some(span) = self.0.lock().unwrap().spans.get_mut(&id.into_u64()) {
            span.2.extend(fields.0);
        }
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, _: Context<'_, S>) {
        self.0.lock().unwrap().follows.push((span.into_u64(), follows.into_u64()));
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let message =
            fields.0.iter().find(|(k, _)| k == "message").map(|(_, v)| v.clone()).unwrap_or_default();
        let parent = ctx.event_span(event).map(|s| s.name().to_string());
        self.0.lock().unwrap().events.push((message, parent));
    }
}

/// A two-worker runtime whose threads all report to `dispatch`.
fn runtime_with(dispatch: &tracing::Dispatch) -> tokio::runtime::Runtime {
    let dispatch = dispatch.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&dispatch)))
        .build()
        .unwrap()
}

fn run_traced(recording: &Recording, test: impl std::future::Future<Output = ()> + Send + 'static) {
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(recording.clone()));
    let rt = runtime_with(&dispatch);
    rt.block_on(async move {
        tokio::time::timeout(common::WATCHDOG, tokio::spawn(test)).await.unwrap().unwrap();
    });
}

#[test]
fn each_follower_span_follows_from_the_flight_span_and_the_work_runs_inside_it() {
    let _serial = serial();
    let recording = Recording::default();
    run_traced(&recording, async {
        let (group, gate) = (Arc::new(Group::<u32, u32>::new().named("orders").trace_keys()), Gate::new());
        let leader = {
            let (group, gate) = (group.clone(), gate.clone());
            tokio::spawn(
                async move {
                    group
                        .work(&7, move || {
                            async move {
                                gate.wait().await;
                                7
                            }
                            .instrument(tracing::info_span!("query"))
                        })
                        .await
                }
                .instrument(tracing::info_span!("request", id = 0)),
            )
        };
        until(|| group.counters().leaders == 1).await;
        let followers: Vec<_> = (1..=3)
            .map(|id| {
                let group = group.clone();
                tokio::spawn(
                    async move { group.work(&7, || async { unreachable!() }).await }
                        .instrument(tracing::info_span!("request", id)),
                )
            })
            .collect();
        until(|| group.counters().followers == 3).await;
        gate.open();
        assert!(leader.await.unwrap().unwrap().is_shared());
        for f in followers {
            assert_eq!(*f.await.unwrap().unwrap().value(), 7);
        }
    });
    let seen = recording.0.lock().unwrap();
    let flights: Vec<_> = seen.spans.iter().filter(|(_, s)| s.0 == "coalescer.flight").collect();
    assert_eq!(flights.len(), 1, "one span per flight");
    let (&flight_id, (_, parent, fields)) = flights[0];
    assert_eq!(parent.as_deref(), Some("request"), "the flight's span is a child of the leader's");
    assert!(fields.contains(&("group".into(), "orders".into())), "{fields:?}");
    assert!(fields.contains(&("key".into(), "7".into())), "{fields:?}");
    let query = seen.spans.values().find(|s| s.0 == "query").unwrap();
    assert_eq!(query.1.as_deref(), Some("coalescer.flight"), "the work runs inside the flight's span");
    let followers: Vec<_> = seen.follows.iter().filter(|(_, cause)| *cause == flight_id).collect();
    assert_eq!(followers.len(), 3, "each follower's request follows from the flight");
    for (span, _) in followers {
        assert_eq!(seen.spans[span].0, "request");
    }
    assert!(
        seen.events
            .iter()
            .any(|(m, p)| m.contains("flight ended") && p.as_deref() == Some("coalescer.flight"))
    );
}

#[test]
fn keys_are_not_span_fields_unless_asked_for_and_promotions_are_events() {
    let _serial = serial();
    let recording = Recording::default();
    run_traced(&recording, async {
        let group = Arc::new(Group::<u32, u32>::new());
        let mut leader = Box::pin(group.work(&1, std::future::pending::<u32>));
        assert!(poll_once(&mut leader).is_pending());
        let follower = {
            let group = group.clone();
            tokio::spawn(async move { group.work(&1, || async { 1 }).await })
        };
        until(|| group.counters().followers == 1).await;
        drop(leader);
        assert!(follower.await.unwrap().unwrap().is_leader());
    });
    let seen = recording.0.lock().unwrap();
    let flight = seen.spans.values().find(|s| s.0 == "coalescer.flight").unwrap();
    assert!(flight.2.iter().all(|(k, _)| k != "key"), "{:?}", flight.2);
    assert!(flight.2.contains(&("group".into(), "default".into())));
    assert!(
        seen.events.iter().any(|(m, p)| m.contains("promoted") && p.as_deref() == Some("coalescer.flight"))
    );
}

/// The value of `name{group=...}` in the snapshot.
fn metric<'a>(snapshot: &'a [(String, String, DebugValue)], name: &str) -> Option<&'a DebugValue> {
    snapshot.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| v)
}

#[test]
fn metrics_count_a_scripted_sequence_under_the_group_name() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are registered when the group is named, with the recorder of that moment.
    let group = metrics::with_local_recorder(&recorder, || {
        Arc::new(Group::<u32, u32>::new().named("orders").max_in_flight(2, WhenFull::Reject))
    });
    let started = std::time::Instant::now();
    common::run({
        let group = group.clone();
        async move {
            // One flight, three followers.
            let gate = Gate::new();
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let (group, gate) = (group.clone(), gate.clone());
                    tokio::spawn(async move {
                        group
                            .work(&1, move || async move {
                                gate.wait().await;
                                1
                            })
                            .await
                    })
                })
                .collect();
            until(|| group.counters().followers == 3).await;
            gate.open();
            for c in calls {
                assert_eq!(*c.await.unwrap().unwrap().value(), 1);
            }
            // A panic, a cancellation, a forget, an overflow.
            let g = group.clone();
            assert!(
                tokio::spawn(async move { g.work(&2, || async { panic!("boom") }).await }).await.is_err()
            );
            let mut abandoned = Box::pin(group.work(&3, std::future::pending::<u32>));
            assert!(poll_once(&mut abandoned).is_pending());
            drop(abandoned);
            let mut a = Box::pin(group.work(&4, std::future::pending::<u32>));
            let mut b = Box::pin(group.work(&5, std::future::pending::<u32>));
            assert!(poll_once(&mut a).is_pending() && poll_once(&mut b).is_pending());
            assert!(group.work(&6, || async { 6 }).await.unwrap_err().is_full());
            assert!(group.forget(&4));
            drop((a, b));
        }
    });
    let run = started.elapsed().as_secs_f64();
    let snapshot: Vec<(String, String, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<_> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            assert_eq!(labels, ["group=orders"], "the group's name is the only label");
            (key.key().name().to_string(), labels.join(","), value)
        })
        .collect();
    let count = |name| match metric(&snapshot, name) {
        Some(&DebugValue::Counter(n)) => n,
        other => panic!("{name}: {other:?}"),
    };
    // Flights: keys 1, 2, 3, 4, 5 (key 6 was refused).
    assert_eq!(count("coalescer.flights"), 5);
    assert_eq!(count("coalescer.joins"), 3);
    assert_eq!(count("coalescer.panics"), 1);
    assert_eq!(count("coalescer.cancellations"), 3); // key 3, then the forgotten 4 and 5 dropped
    assert_eq!(count("coalescer.forgets"), 1);
    assert_eq!(count("coalescer.overflows"), 1);
    let Some(DebugValue::Histogram(waiters)) = metric(&snapshot, "coalescer.flight.waiters") else {
        panic!("no waiters histogram")
    };
    // Flights that ended: key 1 (4 callers), key 2 (its panicking caller), 3, 4, 5 (abandoned).
    let mut waiters: Vec<f64> = waiters.iter().map(|w| w.0).collect();
    waiters.sort_by(f64::total_cmp);
    assert_eq!(waiters, [0.0, 0.0, 0.0, 1.0, 4.0]);
    let Some(DebugValue::Histogram(durations)) = metric(&snapshot, "coalescer.flight.duration") else {
        panic!("no duration histogram")
    };
    assert_eq!(durations.len(), 5);
    // Seconds, each within the run that held the flights.
    assert!(durations.iter().all(|d| (0.0..=run).contains(&d.0)), "{durations:?} in a run of {run} s");
}

#[test]
fn a_named_group_under_a_subscriber_keeps_each_flight_span_and_times_it() {
    let _serial = serial();
    let (recording, recorder) = (Recording::default(), DebuggingRecorder::new());
    let snapshotter = recorder.snapshotter();
    let group =
        metrics::with_local_recorder(&recorder, || Arc::new(Group::<u32, u32>::new().named("orders")));
    let started = std::time::Instant::now();
    run_traced(&recording, {
        let group = group.clone();
        async move {
            let gate = Gate::new();
            let calls: Vec<_> = (0..2)
                .map(|_| {
                    let (group, gate) = (group.clone(), gate.clone());
                    tokio::spawn(async move {
                        group
                            .work(&1, move || async move {
                                gate.wait().await;
                                1
                            })
                            .await
                    })
                })
                .collect();
            until(|| group.counters().followers == 1).await;
            gate.open();
            for c in calls {
                assert_eq!(*c.await.unwrap().unwrap().value(), 1);
            }
            assert_eq!(*group.work(&2, || async { 2 }).await.unwrap().value(), 2);
        }
    });
    let run = started.elapsed().as_secs_f64();
    let seen = recording.0.lock().unwrap();
    let flights = seen.spans.values().filter(|s| s.0 == "coalescer.flight").count();
    assert_eq!(
        flights, 2,
        "one span per flight (a caller that lost the race to lead makes none): {:?}",
        seen.spans
    );
    let ended = seen.events.iter().filter(|(m, p)| m.contains("flight ended") && p.is_some()).count();
    assert_eq!(ended, 2, "each flight ends in its span");
    let snapshot: Vec<_> = snapshotter.snapshot().into_vec();
    let histogram = |name: &str| match snapshot.iter().find(|(k, _, _, _)| k.key().name() == name) {
        Some((_, _, _, DebugValue::Histogram(values))) => {
            let mut values: Vec<f64> = values.iter().map(|v| v.0).collect();
            values.sort_by(f64::total_cmp);
            values
        }
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(histogram("coalescer.flight.waiters"), [1.0, 2.0]);
    let durations = histogram("coalescer.flight.duration");
    assert_eq!(durations.len(), 2, "the flights with a span are timed too");
    assert!(durations.iter().all(|d| (0.0..=run).contains(d)), "{durations:?} in a run of {run} s");
}

#[test]
fn a_named_cache_counts_hits_misses_and_loads_under_its_name() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = metrics::with_local_recorder(&recorder, || {
        coalescer::cache::Cache::<u32, u32>::builder().named("reports").build()
    });
    common::run({
        let cache = cache.clone();
        async move {
            for _ in 0..3 {
                assert_eq!(*cache.get_with(1, || async { 10 }).await.unwrap().value(), 10);
            }
        }
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let count = |name: &str| {
        let (key, _, _, value) = snapshot.iter().find(|(k, _, _, _)| k.key().name() == name).expect(name);
        let labels: Vec<_> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        assert!(labels.contains(&"cache=reports".to_string()), "{labels:?}");
        match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!((count("coalescer.cache.misses"), count("coalescer.cache.loads")), (1, 1));
    assert_eq!(count("coalescer.cache.hits"), 2);
    // The cache's loads are a group named after it.
    let flights = snapshot.iter().find(|(k, _, _, _)| k.key().name() == "coalescer.flights").unwrap();
    assert!(flights.0.key().labels().any(|l| l.key() == "group" && l.value() == "reports"));
}

/// A key whose `Debug` (run by the leader when it gives its flight a span that shows the key)
/// tells the test it started and then waits to be let go: the leader is held between winning
/// its key's insert and making the flight's span.
#[derive(Clone, PartialEq, Eq, Hash)]
struct HeldKey(u32);

/// Set while the next `Debug` of a [`HeldKey`] holds: (told when it starts, let go).
static HOLD: Mutex<Option<(std::sync::mpsc::Sender<()>, Arc<std::sync::Barrier>)>> = Mutex::new(None);

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hold = HOLD.lock().unwrap().take();
        if let Some((started, go)) = hold {
            started.send(()).unwrap();
            go.wait();
        }
        write!(f, "HeldKey({})", self.0)
    }
}

#[test]
fn a_follower_that_joins_before_the_leader_made_the_flights_span_still_follows_from_it() {
    let _serial = serial();
    let recording = Recording::default();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(recording.clone()));
    let group = Arc::new(Group::<HeldKey, u32>::new().named("held").trace_keys());
    let (started, told) = std::sync::mpsc::channel();
    let go = Arc::new(std::sync::Barrier::new(2));
    *HOLD.lock().unwrap() = Some((started, go.clone()));
    let call = |id: u32| {
        let (group, dispatch) = (group.clone(), dispatch.clone());
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::info_span!("request", id).in_scope(|| group.work_blocking(&HeldKey(1), || 1))
            })
        })
    };
    let leader = call(0);
    // The leader won the insert and is in its key's `Debug`, making the flight's span.
    told.recv_timeout(common::WATCHDOG).expect("the leader reaches the flight's span");
    let follower = call(1);
    common::until_blocking(|| group.counters().followers == 1);
    go.wait();
    assert_eq!(*leader.join().unwrap().unwrap().value(), 1);
    assert_eq!(*follower.join().unwrap().unwrap().value(), 1);
    let seen = recording.0.lock().unwrap();
    let flights: Vec<_> = seen.spans.iter().filter(|(_, s)| s.0 == "coalescer.flight").collect();
    assert_eq!(flights.len(), 1, "one span per flight: {:?}", seen.spans);
    let flight = *flights[0].0;
    let links: Vec<_> = seen.follows.iter().filter(|(_, cause)| *cause == flight).collect();
    assert_eq!(links.len(), 1, "the follower's request follows from the flight: {:?}", seen.follows);
    assert_eq!(seen.spans[&links[0].0].0, "request");
    let joined = seen.events.iter().filter(|(m, p)| m.contains("a caller joined") && p.is_some()).count();
    assert_eq!(joined, 1, "the join is an event of the flight's span: {:?}", seen.events);
}

#[test]
fn a_follower_that_joined_before_the_span_links_to_it_while_the_flight_is_still_running() {
    let _serial = serial();
    let recording = Recording::default();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(recording.clone()));
    let group = Arc::new(Group::<HeldKey, u32>::new().trace_keys());
    let (started, told) = std::sync::mpsc::channel();
    let go = Arc::new(std::sync::Barrier::new(2));
    *HOLD.lock().unwrap() = Some((started, go.clone()));
    let (finish, finishing) = std::sync::mpsc::channel::<()>();
    let leader = {
        let (group, dispatch) = (group.clone(), dispatch.clone());
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::info_span!("request", id = 0).in_scope(|| {
                    group.work_blocking(&HeldKey(2), move || {
                        finishing.recv_timeout(common::WATCHDOG).expect("the test lets the work finish");
                        2
                    })
                })
            })
        })
    };
    told.recv_timeout(common::WATCHDOG).expect("the leader reaches the flight's span");
    // An async follower on a multi-threaded runtime joins while the leader makes the span.
    let rt = runtime_with(&dispatch);
    let follower = {
        let group = group.clone();
        // The request's span is made with the test's subscriber.
        tracing::dispatcher::with_default(&dispatch, || {
            rt.spawn(
                async move { group.work(&HeldKey(2), || async { unreachable!() }).await }
                    .instrument(tracing::info_span!("request", id = 1)),
            )
        })
    };
    common::until_blocking(|| group.counters().followers == 1);
    go.wait();
    // The work is still running: the leader's span woke the follower, which links now.
    common::until_blocking(|| !recording.0.lock().unwrap().follows.is_empty());
    finish.send(()).unwrap();
    assert_eq!(*leader.join().unwrap().unwrap().value(), 2);
    assert_eq!(*rt.block_on(follower).unwrap().unwrap().value(), 2);
    let seen = recording.0.lock().unwrap();
    let flight = seen.spans.iter().find(|(_, s)| s.0 == "coalescer.flight").map(|(id, _)| *id).unwrap();
    assert_eq!(seen.follows.iter().filter(|(_, cause)| *cause == flight).count(), 1, "{:?}", seen.follows);
}

/// A key whose `Debug` panics while `PANIC_DEBUG` is set (once).
#[derive(Clone, PartialEq, Eq, Hash)]
struct PanickyKey(u32);

static PANIC_DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl std::fmt::Debug for PanickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if PANIC_DEBUG.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("the key's Debug panicked");
        }
        write!(f, "PanickyKey({})", self.0)
    }
}

#[test]
fn a_key_whose_debug_panics_while_the_leader_makes_its_span_leaves_the_key_free() {
    let _serial = serial();
    let recording = Recording::default();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(recording.clone()));
    let group = Group::<PanickyKey, u32>::new().trace_keys();
    tracing::dispatcher::with_default(&dispatch, || {
        PANIC_DEBUG.store(true, std::sync::atomic::Ordering::SeqCst);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.work_blocking(&PanickyKey(3), || unreachable!("the work never starts"))
        }));
        let message = caught.expect_err("the Debug's panic leaves the call");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"the key's Debug panicked"));
        // Counted as a flight started and abandoned; nothing is left in the map.
        let c = group.counters();
        assert_eq!((c.leaders, c.cancellations, group.in_flight()), (1, 1, 0), "{c:?}");
        // The key is free: the next call leads a new flight, with its span.
        let next = group.work_blocking(&PanickyKey(3), || 4).unwrap();
        assert!(next.is_leader() && *next.value() == 4);
    });
    let seen = recording.0.lock().unwrap();
    let keys: Vec<_> = seen
        .spans
        .values()
        .filter(|s| s.0 == "coalescer.flight")
        .filter_map(|s| s.2.iter().find(|(k, _)| k == "key").map(|(_, v)| v.clone()))
        .collect();
    assert!(keys.contains(&"PanickyKey(3)".to_string()), "the second flight's span shows its key: {keys:?}");
}
