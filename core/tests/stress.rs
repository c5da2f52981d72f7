//! Stress: many tasks on few keys, with random drops, stalls, timeouts and completions, in both
//! modes at once. Checks that no two executions of one key ever overlap, that every caller who
//! waited to the end got a value of its own key, that nothing hangs (the watchdog), and that the
//! group is empty once everything is done.

mod common;

use coalescer::futures::Timeout;
use coalescer::{Group, Outcome};
use common::{Probe, poll_once, run};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

const KEYS: u64 = 3;
const TASKS: u64 = 48;
const CALLS_PER_TASK: u64 = 250;

/// xorshift64*: a reproducible stream per task, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<Outcome<u64>, coalescer::Aborted>> + Send + 'a>>;

/// The work for `key`: marks itself running on the key's probe, yields or sleeps a little,
/// and returns a value that names its key.
async fn work(probes: Arc<Vec<Probe>>, key: u64, steps: u64) -> u64 {
    let _running = probes[key as usize].enter();
    for _ in 0..steps {
        tokio::task::yield_now().await;
    }
    if steps % 3 == 0 {
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
    key * 1_000_000 + steps
}

#[test]
fn stress_random_drops_stalls_and_timeouts_never_overlap_hang_or_leak() {
    run(async {
        let group = Arc::new(Group::<u64, u64>::new());
        let shared_group = Arc::new(Group::<u64, u64>::new().shared());
        let probes: Arc<Vec<Probe>> = Arc::new((0..KEYS).map(|_| Probe::default()).collect());
        let completed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (group, probes, completed) = (group.clone(), probes.clone(), completed.clone());
            let shared_group = shared_group.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                // Calls borrow their key and may be kept (stalled) past this iteration.
                let keys: Vec<u64> = (0..KEYS).collect();
                let mut stalled: Vec<Call<'_>> = Vec::new();
                for _ in 0..CALLS_PER_TASK {
                    let key = rng.next(KEYS);
                    let steps = rng.next(6);
                    let probes = probes.clone();
                    // Even keys live in the shared group, odd ones in the inline group (a group's
                    // mode is its type: one mode per key).
                    let shared = key % 2 == 0;
                    let mut call: Call<'_> = if shared {
                        Box::pin(shared_group.work(&keys[key as usize], move || work(probes, key, steps)))
                    } else {
                        Box::pin(group.work(&keys[key as usize], move || work(probes, key, steps)))
                    };
                    // A stalled work-mode runner blocks its followers by contract (its
                    // `# Cancel safety`); stalls are what shared mode is for, so they go to the
                    // shared keys.
                    let action = if shared { rng.next(5) } else { rng.next(4) };
                    let finished = match action {
                        // Wait to the end.
                        0 | 1 => Some(call.await),
                        // Give up at a short deadline.
                        2 => {
                            match Timeout::new(call, tokio::time::sleep(Duration::from_micros(rng.next(300))))
                                .await
                            {
                                Err(aborted) if aborted.is_timed_out() => None,
                                result => Some(result),
                            }
                        }
                        // Polled once, then dropped.
                        3 => match poll_once(&mut call) {
                            std::task::Poll::Ready(result) => Some(result),
                            std::task::Poll::Pending => None,
                        },
                        // Polled once, then stalled for a while (resumed or dropped later).
                        _ => {
                            if poll_once(&mut call).is_pending() {
                                stalled.push(call);
                            }
                            None
                        }
                    };
                    if let Some(result) = finished {
                        let value = result.expect("no work panics in this test").into_value();
                        assert_eq!(value / 1_000_000, key, "a caller got the value of another key");
                        completed.fetch_add(1, SeqCst);
                    }
                    if stalled.len() > 3 {
                        let call = stalled.remove(0);
                        if rng.next(2) == 0 {
                            let value = call.await.expect("no work panics in this test").into_value();
                            assert!(value / 1_000_000 < KEYS);
                            completed.fetch_add(1, SeqCst);
                        }
                    }
                }
                drop(stalled);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for (key, probe) in probes.iter().enumerate() {
            assert_eq!(probe.overlaps(), 0, "two executions of key {key} overlapped");
            assert_eq!(probe.running(), 0, "an execution of key {key} was never dropped");
        }
        assert!(group.is_idle(), "entries were left in the map: {:?}", group);
        assert!(shared_group.is_idle(), "entries were left in the map: {:?}", shared_group);
        assert!(completed.load(SeqCst) > 0);
        let (c, s) = (group.counters(), shared_group.counters());
        let runs = probes.iter().map(Probe::runs).sum::<usize>() as u64;
        assert_eq!(
            runs,
            c.leaders + c.promotions + s.leaders + s.promotions,
            "every execution was a leader's or a promoted follower's"
        );
    });
}

#[test]
fn stress_blocking_threads_and_async_tasks_on_one_key_never_overlap() {
    let group = Arc::new(Group::<u64, u64>::new());
    let probes: Arc<Vec<Probe>> = Arc::new(vec![Probe::default()]);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (group, probes) = (group.clone(), probes.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0xdead_beef ^ (t + 1));
                for _ in 0..2_000 {
                    let steps = rng.next(50);
                    let v = group
                        .work_blocking(&0, || {
                            let _running = probes[0].enter();
                            for _ in 0..steps {
                                std::hint::spin_loop();
                            }
                            steps
                        })
                        .unwrap();
                    assert!(*v.value() < 50);
                }
            })
        })
        .collect();
    run({
        let (group, probes) = (group.clone(), probes.clone());
        async move {
            let tasks: Vec<_> = (0..4)
                .map(|t| {
                    let (group, probes) = (group.clone(), probes.clone());
                    tokio::spawn(async move {
                        let mut rng = Rng(0xfeed ^ (t + 1));
                        for _ in 0..1_000 {
                            let steps = rng.next(4);
                            let call = group.work(&0, || work(probes.clone(), 0, steps));
                            if rng.next(3) == 0 {
                                drop(Timeout::new(call, tokio::task::yield_now()).await);
                            } else {
                                assert!(call.await.unwrap().into_value() < 1_000_000);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(probes[0].overlaps(), 0);
    assert!(group.is_idle());
}
