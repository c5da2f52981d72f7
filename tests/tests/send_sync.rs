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
    let shared = Group::<String, Value>::new().shared();
    let tries = Arc::new(TryGroup::<String, Value, std::io::Error>::new());
    let shared_tries = TryGroup::<String, Value, std::io::Error>::new().shared();
    let single = Arc::new(Single::<Value>::new());
    let spawner = coalescer_smol::Smol::detach();
    let detached = Arc::new(Group::<String, Value>::new().detached(spawner.clone()));

    send_sync(&group.work("k", query));
    send_sync(&shared.work("k", query));
    send_sync(&detached.work("k", query));
    send_sync(&tries.try_work("k", || async { Ok(Value::from("v")) }));
    send_sync(&shared_tries.try_work("k", || async { Ok(Value::from("v")) }));
    send_sync(&single.work(query));
    let shared_single = Single::<Value>::new().shared();
    send_sync(&shared_single.work(query));
    let detached_single = Arc::new(Single::<Value>::new().detached(spawner.clone()));
    send_sync(&detached_single.work(query));
    let single_try = Single::<Result<Value, Arc<std::io::Error>>>::new();
    send_sync(&single_try.try_work(|| async { Ok(Value::from("v")) }));

    send_sync_unpin(&group.work("k", value));
    send_sync_unpin(&shared.work("k", value));
    send_sync_unpin(&detached.work("k", value));
    send_sync_unpin(&tries.try_work("k", || ready(Ok(Value::from("v")))));
    send_sync_unpin(&single.work(value));

    send_sync_unpin(&Timeout::new(group.work("k", value), ready(())));
    send_sync(&Timeout::new(group.work("k", query), ready(())));
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
    values::<coalescer::SharedGroup<String, Value>>();
    values::<coalescer::DetachedGroup<String, Value, coalescer_smol::Smol>>();
    values::<Single<Value>>();
}

#[test]
fn tokio_adapter() {
    use coalescer_tokio::{Tokio, TokioTask};
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _context = rt.enter();
    let group = Arc::new(Group::<String, Value>::new());
    let spawned = Arc::new(Group::<String, Value>::new().detached(Tokio::detach()));

    spawner(&Tokio::detach());
    spawner(&Tokio::abort_when_abandoned().on(rt.handle().clone()));
    let task: TokioTask = Tokio::detach().spawn(async {});
    send_sync_unpin(&task);
    send_sync(&Tokio::detach().sleep(Duration::ZERO));

    send_sync(&spawned.work("k", query));
    send_sync_unpin(&spawned.work("k", value));
    send_sync(&coalescer_tokio::timeout(Duration::ZERO, group.work("k", value)));
    send_sync(&Timeout::new(group.work("k", query), Tokio::detach().sleep(Duration::ZERO)));
}

#[test]
fn smol_adapter() {
    use coalescer_smol::{Smol, SmolTask, Timer};
    let executor = Arc::new(smol::Executor::new());
    let group = Arc::new(Group::<String, Value>::new());
    let spawned = Arc::new(Group::<String, Value>::new().detached(Smol::detach()));

    spawner(&Smol::detach());
    spawner(&Smol::abort_when_abandoned().on(&executor));
    let task: SmolTask = Smol::abort_when_abandoned().on(&executor).spawn(async {});
    send_sync_unpin(&task);
    let timer: Timer = Smol::detach().sleep(Duration::ZERO);
    send_sync_unpin(&timer);

    send_sync(&spawned.work("k", query));
    send_sync_unpin(&spawned.work("k", value));
    send_sync_unpin(&coalescer_smol::timeout(Duration::ZERO, group.work("k", value)));
    send_sync(&coalescer_smol::timeout(Duration::ZERO, group.work("k", query)));
}

#[test]
fn async_std_adapter() {
    use coalescer_async_std::{AsyncStd, AsyncStdTask, Timer};
    let group = Arc::new(Group::<String, Value>::new());
    let spawned = Arc::new(Group::<String, Value>::new().detached(AsyncStd::detach()));

    spawner(&AsyncStd::detach());
    spawner(&AsyncStd::abort_when_abandoned());
    let task: AsyncStdTask = AsyncStd::detach().spawn(async {});
    send_sync_unpin(&task);
    let timer: Timer = AsyncStd::detach().sleep(Duration::ZERO);
    send_sync_unpin(&timer);

    send_sync(&spawned.work("k", query));
    send_sync_unpin(&spawned.work("k", value));
    send_sync_unpin(&coalescer_async_std::timeout(Duration::ZERO, group.work("k", value)));
    send_sync(&coalescer_async_std::timeout(Duration::ZERO, group.work("k", query)));
}

/// The futures stay `Send` with a work future that is only `Send` (not `Sync`), as a work
/// future holding a `Cell` across an `.await` is.
#[test]
fn send_only_work() {
    fn send<T: Send>(_: &T) {}
    let group = Arc::new(Group::<String, u64>::new());
    let shared = Group::<String, u64>::new().shared();
    let detached = Arc::new(Group::<String, u64>::new().detached(coalescer_smol::Smol::detach()));
    let work = || async {
        let cell = std::cell::Cell::new(1);
        std::future::ready(()).await;
        cell.get()
    };
    send(&group.work("k", work));
    send(&shared.work("k", work));
    send(&detached.work("k", work));
}
