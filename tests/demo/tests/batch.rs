//! The batch scenario with small settings: what SQLite counted (no timing is asserted).

use stampede::batch::{Sets, Way, measure};
use stampede::db::{Db, Shape};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn batches_query_each_product_in_the_air_once_and_far_fewer_times_than_naive_requests() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape { orders: 50_000, categories: 8 };
    let path = dir.path().join("batch.db");
    let db = Arc::new(Db::open_or_seed(&path, shape, &indicatif::ProgressBar::hidden()).unwrap().0);
    let sets = Sets { requests: 60, per_request: 8, popular: 32 };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(256).build().unwrap();
    let rows = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            let mut rows = Vec::new();
            for way in Way::ALL {
                rows.push(measure(&db, sets, way).await.unwrap());
            }
            rows
        })
        .await
        .expect("watchdog")
    });
    println!("{}", stampede::batch::render(sets, &rows));
    let [naive, batched, batcher] = &rows[..] else { panic!("three rows") };
    // Naive: one query per request, its whole set, products asked for by many at once.
    assert_eq!((naive.queries, naive.ids), (60, 60 * 8), "{naive:?}");
    assert!(naive.ids_twice > 0, "{naive:?}");
    for row in [batched, batcher] {
        // Coalesced: never a product asked for while a query for it runs, and fewer queries.
        assert_eq!(row.ids_twice, 0, "{row:?}");
        assert!(row.queries < naive.queries && row.ids < naive.ids, "{row:?}");
        assert_eq!(row.missing, 0, "every product has orders: {row:?}");
    }
}
