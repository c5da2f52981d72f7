//! `--trace` and `--metrics`, in process: the traced burst shows one flight span that the other
//! requests' spans follow from, and the metrics carry each scenario's group name.

use stampede::db::Shape;
use stampede::{Settings, observe};

#[test]
fn trace_and_metrics_show_one_flight_per_key_and_the_followers_linked_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        db_path: dir.path().join("stampede.db"),
        // A query of tens of milliseconds even in a debug build: every request joins in time.
        shape: Shape { orders: 100_000, categories: 8 },
        requests: 20,
        keys: 1,
        bursts: 1,
        impatient_percent: 0,
        progress: false,
        trace: true,
        metrics: true,
        ..Settings::default()
    };
    let summary = stampede::run(&settings).unwrap();
    assert_eq!(summary.rows.len(), 3);
    let trace = observe::traced().expect("--trace traced one burst");
    assert_eq!(trace.matches("coalescer.flight{group=coalesced}").count(), 1, "{trace}");
    assert!(trace.contains("19 other requests' spans follow from it"), "{trace}");
    let metrics = observe::metrics_text().expect("--metrics installed the recorder");
    assert!(metrics.contains("coalescer_flights{group=\"coalesced\"} 1"), "{metrics}");
    assert!(metrics.contains("coalescer_joins{group=\"coalesced\"} 19"), "{metrics}");
}
