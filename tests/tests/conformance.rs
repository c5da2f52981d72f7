//! Every scenario on every runtime it applies to, named `<runtime>::<scenario>`.

/// One `#[test]` per scenario, for runtime `$rt`, each under a watchdog.
macro_rules! scenarios {
    ($rt:ty: $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            let _watchdog = coalescer_conformance::Watchdog::arm(concat!(
                module_path!(), "::", stringify!($scenario)
            ));
            coalescer_conformance::scenarios::$scenario::<$rt>();
        }
    )*};
}

/// The scenarios that every runtime runs, plain threads with the blocking API included.
macro_rules! every_runtime {
    ($rt:ty) => {
        scenarios!($rt:
            coalescing,
            late_caller_starts_a_new_flight,
            forget,
            panic_releases_followers,
            mixed_async_and_blocking_callers,
        );
    };
}

/// The scenarios that need cancellation, timers and an adapter's spawner.
macro_rules! every_async_runtime {
    ($rt:ty) => {
        every_runtime!($rt);
        scenarios!($rt:
            leader_cancellation_promotes_one_follower,
            stalled_leader_does_not_block_shared_work,
            timeout_gives_up_alone,
            every_mode_coalesces,
            detached_work_outlives_its_callers,
            detached_panic_reaches_every_caller,
            abort_when_abandoned_drops_the_work,
        );
    };
}

mod tokio_multi {
    every_async_runtime!(coalescer_conformance::TokioMulti);
    scenarios!(coalescer_conformance::TokioMulti: runtime_shutdown_under_detached_flight);
}

mod tokio_current {
    every_async_runtime!(coalescer_conformance::TokioCurrent);
    scenarios!(coalescer_conformance::TokioCurrent: runtime_shutdown_under_detached_flight);
}

/// async-std's global executor cannot be shut down: no shutdown scenario.
mod async_std {
    every_async_runtime!(coalescer_conformance::AsyncStd);
}

mod smol {
    every_async_runtime!(coalescer_conformance::Smol);
    scenarios!(coalescer_conformance::Smol: runtime_shutdown_under_detached_flight);
}

/// Callers use `work_blocking`, each on a thread of its own (threads are not cancelled, have
/// no timers and no spawner: the async-only scenarios do not apply).
mod threads {
    every_runtime!(coalescer_conformance::Threads);
}
