//! Each adapter's own entry points, beyond what the scenarios use: a detached group on the
//! runtime's default executor, a detached `Single`, and the edge of each spawner.

use coalescer::{DetachedGroup, Single};
use coalescer_conformance::{Probe, TestGroup, Watchdog};
use futures_lite::future::{block_on, poll_once};
use std::sync::Arc;

/// The only caller of a detached group's `work` leaves after one poll; the work still finishes.
fn spawned_work_outlives_its_caller<Sp, F>(group: &Arc<DetachedGroup<u32, u32, Sp>>, probe: &Probe, call: F)
where
    F: FnOnce(
        &Arc<DetachedGroup<u32, u32, Sp>>,
        &Probe,
    ) -> Option<Result<coalescer::Outcome<u32>, coalescer::Aborted>>,
{
    assert!(call(group, probe).is_none(), "the work is gated");
    probe.started().wait_blocking();
    assert_eq!(group.in_flight(), 1);
    probe.release();
    while probe.finished() == 0 || !group.is_idle() {
        std::thread::yield_now();
    }
}

mod tokio_adapter {
    use super::*;
    use coalescer_tokio::Tokio;

    #[test]
    fn detached_work_runs_on_the_current_runtime() {
        let _watchdog = Watchdog::arm("tokio_adapter::detached_work_runs_on_the_current_runtime");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let group = Arc::new(TestGroup::new().detached(Tokio::detach()));
        spawned_work_outlives_its_caller(&group, &Probe::gated(1), |group, probe| {
            rt.block_on(poll_once(group.work(&1, || probe.work())))
        });
    }

    #[test]
    fn spawning_outside_a_runtime_fails_the_flight_and_frees_the_key() {
        let _watchdog = Watchdog::arm("tokio_adapter::spawning_outside_a_runtime");
        let group = Arc::new(TestGroup::new().detached(Tokio::detach()));
        let probe = Probe::ready(1);
        let call = std::panic::AssertUnwindSafe(|| block_on(group.work(&1, || probe.work())));
        let panic = std::panic::catch_unwind(call).unwrap_err();
        let message = panic.downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        assert!(message.contains("Tokio"), "tokio's own message: {message}");
        assert!(group.is_idle());
        assert_eq!(probe.runs(), 0);
        assert_eq!(group.counters().panics, 1);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let outcome = rt.block_on(group.work(&1, || probe.work())).unwrap();
        assert!(*outcome.value() == 1 && outcome.is_leader());
    }

    #[test]
    fn a_detached_single_runs_its_work() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let single = Arc::new(Single::<u32>::new().detached(Tokio::detach().on(rt.handle().clone())));
        let outcome = block_on(single.work(|| async { 3 })).unwrap();
        assert_eq!(*outcome.value(), 3);
        assert!(single.is_idle());
    }
}

mod smol_adapter {
    use super::*;
    use coalescer_smol::Smol;

    #[test]
    fn detached_work_runs_on_the_global_executor() {
        let _watchdog = Watchdog::arm("smol_adapter::detached_work_runs_on_the_global_executor");
        let group = Arc::new(TestGroup::new().detached(Smol::detach()));
        spawned_work_outlives_its_caller(&group, &Probe::gated(1), |group, probe| {
            block_on(poll_once(group.work(&1, || probe.work())))
        });
    }

    #[test]
    fn a_dropped_executor_ends_the_flight_as_a_shutdown() {
        let executor = Arc::new(smol::Executor::new());
        let group = Arc::new(TestGroup::new().detached(Smol::detach().on(&executor)));
        drop(executor);
        let probe = Probe::ready(1);
        let aborted = block_on(group.work(&1, || probe.work())).unwrap_err();
        assert!(aborted.is_shutdown());
        assert_eq!(probe.runs(), 0);
        assert!(group.is_idle());
    }

    #[test]
    fn a_detached_single_runs_its_work() {
        let single = Arc::new(Single::<u32>::new().detached(Smol::detach()));
        let outcome = block_on(single.work(|| async { 3 })).unwrap();
        assert_eq!(*outcome.value(), 3);
    }
}

mod async_std_adapter {
    use super::*;
    use coalescer_async_std::AsyncStd;

    #[test]
    fn detached_work_runs_on_the_global_executor() {
        let _watchdog = Watchdog::arm("async_std_adapter::detached_work_runs_on_the_global_executor");
        let group = Arc::new(TestGroup::new().detached(AsyncStd::detach()));
        spawned_work_outlives_its_caller(&group, &Probe::gated(1), |group, probe| {
            async_std::task::block_on(poll_once(group.work(&1, || probe.work())))
        });
    }

    #[test]
    fn a_detached_single_runs_its_work() {
        let single = Arc::new(Single::<u32>::new().detached(AsyncStd::detach()));
        let outcome = block_on(single.work(|| async { 3 })).unwrap();
        assert_eq!(*outcome.value(), 3);
    }
}
