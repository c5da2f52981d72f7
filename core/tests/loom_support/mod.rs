//! What the loom models of `loom.rs` and `loom_batch.rs` share: exploring a model under a
//! preemption bound, and checking that the explorations reached every branch it is named after.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Explores `f` under `bound` preemptions per execution (`LOOM_MAX_PREEMPTIONS` overrides it),
/// then checks that the explorations reached every branch in `expected` (a model that never
/// reaches the race it is named after proves nothing). `f` marks the branches it takes with
/// [`Seen::hit`].
pub fn explore(bound: usize, expected: &[usize], f: impl Fn(&Seen) + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(Some(bound));
    let seen = Arc::new(Seen::default());
    let started = std::time::Instant::now();
    builder.check({
        let seen = seen.clone();
        move || {
            seen.executions.fetch_add(1, SeqCst);
            f(&seen);
        }
    });
    eprintln!(
        "{} executions in {:.1?} (preemption bound {:?})",
        seen.executions.load(SeqCst),
        started.elapsed(),
        builder.preemption_bound
    );
    for &branch in expected {
        assert!(seen.branches[branch].load(SeqCst), "no execution reached branch {branch} of the model");
    }
}

/// Which branches of a model its executions reached.
#[derive(Default)]
pub struct Seen {
    executions: AtomicUsize,
    branches: [AtomicBool; 4],
}

impl Seen {
    /// This execution took `branch`.
    pub fn hit(&self, branch: usize) {
        self.branches[branch].store(true, SeqCst);
    }
}
