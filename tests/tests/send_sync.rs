//! `Send`, `Sync` and `Unpin` of every public future (and handle) of every crate, asserted on
//! constructed values: a regression here is a compile error. Nothing is polled.
//!
//! The promise: a call's future is `Send` (and `Sync`) when its key, closure, work future and
//! group are and the value is `Send + Sync`, so that it can be spawned on a multi-threaded
//! runtime; it is `Unpin` when its work future is. The adapters' timers are `Send + Sync`
//! (smol's and async-std's are `Unpin` too; tokio's `Sleep` is not).

use coalescer::futures::Timeout;
use coalescer::{Group, Single, Sleep, Spawn, TryGroup};
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

fn send_sync<T: Send + Sync>(_: &T) {}
fn send_sync_unpin<T: Send + Sync + Unpin>(_: &T) {}
fn spawner<S: Spawn<Task: Sync + Unpin> + Sleep<Timer: Send + Sync> + Clone + Send + Sync + 'static>(_: &S) {}

type Value = Arc<str>;

fn value() -> Ready<Value> {
    ready(Value::from("v"))
}

/// An `async` work future: `Send + Sync`, not `Unpin`.
async fn query() -> Value {
    Value::from("v")
}

#[test]
fn core_futures() {
    let group = Arc::new(Group::<String, Value>::new());
    let tries = Arc::new(TryGroup::<String, Value, std::io::Error>::new());
    let single = Arc::new(Single::<Value>::new());
    let spawner = coalescer_smol::Smol::detach();

    send_sync(&group.work("k".into(), query));
    send_sync(&group.work_shared("k".into(), query));
    send_sync(&group.work_detached("k".into(), spawner.clone(), query));
    send_sync(&tries.try_work("k".into(), || async { Ok(Value::from("v")) }));
    send_sync(&tries.try_work_shared("k".into(), || async { Ok(Value::from("v")) }));
    send_sync(&single.work(query));
    send_sync(&single.work_shared(query));
    send_sync(&single.work_detached(spawner.clone(), query));
    let single_try = Single::<Result<Value, Arc<std::io::Error>>>::new();
    send_sync(&single_try.try_work(|| async { Ok(Value::from("v")) }));

    send_sync_unpin(&group.work("k".into(), value));
    send_sync_unpin(&group.work_shared("k".into(), value));
    send_sync_unpin(&group.work_detached("k".into(), spawner.clone(), value));
    send_sync_unpin(&tries.try_work("k".into(), || ready(Ok(Value::from("v")))));
    send_sync_unpin(&single.work(value));

    send_sync_unpin(&Timeout::new(group.work("k".into(), value), ready(())));
    send_sync(&Timeout::new(group.work("k".into(), query), ready(())));
}

#[test]
fn what_calls_return() {
    fn values<T: Send + Sync + Unpin + 'static>() {}
    values::<coalescer::Outcome<Value>>();
    values::<coalescer::Aborted>();
    values::<coalescer::Error<std::io::Error>>();
    values::<coalescer::futures::TimedOut>();
    values::<coalescer::Counters>();
    values::<Group<String, Value>>();
    values::<Single<Value>>();
}

#[test]
fn tokio_adapter() {
    use coalescer_tokio::{GroupExt, Tokio, TokioTask};
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _context = rt.enter();
    let group = Arc::new(Group::<String, Value>::new());

    spawner(&Tokio::detach());
    spawner(&Tokio::abort_when_abandoned().on(rt.handle().clone()));
    let task: TokioTask = Tokio::detach().spawn(async {});
    send_sync_unpin(&task);
    send_sync(&Tokio::detach().sleep(Duration::ZERO));

    send_sync(&group.work_spawned("k".into(), query));
    send_sync_unpin(&group.work_spawned("k".into(), value));
    send_sync(&coalescer_tokio::timeout(Duration::ZERO, group.work("k".into(), value)));
    send_sync(&Timeout::new(group.work("k".into(), query), Tokio::detach().sleep(Duration::ZERO)));
}

#[test]
fn smol_adapter() {
    use coalescer_smol::{GroupExt, Smol, SmolTask, Timer};
    let executor = Arc::new(smol::Executor::new());
    let group = Arc::new(Group::<String, Value>::new());

    spawner(&Smol::detach());
    spawner(&Smol::abort_when_abandoned().on(&executor));
    let task: SmolTask = Smol::abort_when_abandoned().on(&executor).spawn(async {});
    send_sync_unpin(&task);
    let timer: Timer = Smol::detach().sleep(Duration::ZERO);
    send_sync_unpin(&timer);

    send_sync(&group.work_spawned("k".into(), query));
    send_sync_unpin(&group.work_spawned("k".into(), value));
    send_sync_unpin(&coalescer_smol::timeout(Duration::ZERO, group.work("k".into(), value)));
    send_sync(&coalescer_smol::timeout(Duration::ZERO, group.work("k".into(), query)));
}

#[test]
fn async_std_adapter() {
    use coalescer_async_std::{AsyncStd, AsyncStdTask, GroupExt, Timer};
    let group = Arc::new(Group::<String, Value>::new());

    spawner(&AsyncStd::detach());
    spawner(&AsyncStd::abort_when_abandoned());
    let task: AsyncStdTask = AsyncStd::detach().spawn(async {});
    send_sync_unpin(&task);
    let timer: Timer = AsyncStd::detach().sleep(Duration::ZERO);
    send_sync_unpin(&timer);

    send_sync(&group.work_spawned("k".into(), query));
    send_sync_unpin(&group.work_spawned("k".into(), value));
    send_sync_unpin(&coalescer_async_std::timeout(Duration::ZERO, group.work("k".into(), value)));
    send_sync(&coalescer_async_std::timeout(Duration::ZERO, group.work("k".into(), query)));
}

/// The futures stay `Send` with a work future that is only `Send` (not `Sync`), as a work
/// future holding a `Cell` across an `.await` is.
#[test]
fn send_only_work() {
    fn send<T: Send>(_: &T) {}
    let group = Arc::new(Group::<String, u64>::new());
    let work = || async {
        let cell = std::cell::Cell::new(1);
        std::future::ready(()).await;
        cell.get()
    };
    send(&group.work("k".into(), work));
    send(&group.work_shared("k".into(), work));
    send(&group.work_detached("k".into(), coalescer_smol::Smol::detach(), work));
}
