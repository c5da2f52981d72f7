//! One process's side of one cross-process flight: subscribe, check, then lead or follow.
//!
//! This future is the work of a *local* shared-work flight (a shared group's `work`): every local
//! caller of the key drives this one future, so one process makes one set of Redis calls per
//! flight, and a local caller that leaves does not cancel it for the others.
//!
//! ```text
//! open subscription ──► ACQUIRE ──► {0, bytes}  decode, return (Stored)
//!        ▲                 │  ▲
//!        │                 │  └──── wake `g` / lease expiry / lease lost ──┐
//!        │                 ├─► {2, pttl}  follow: wait for a publish ──────┤
//!        │                 │              `v`+bytes: decode, return (Woken)│
//!        └── channel closed/error: retry for one lease time ◄──────────────┘
//!                          └─► {1, token}  lead: run the work under a `Leading` guard
//!                                          (renews; gives up on drop), COMPLETE:
//!                                          1: return (Ran); 0: lease lost, back to ACQUIRE
//! ```

use crate::codec::{Codec, CodecError};
use crate::scripts::Names;
use crate::subscriber::Subscription;
use crate::{Error, Fallback, FencingToken, Lease, Origin, Shared};
use redis::aio::ConnectionManager;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout_at};

/// What one local flight hands its local callers.
pub(crate) type Flown<V, E> = Result<(V, Origin), Error<E>>;

/// What the decision script answered.
enum Decision {
    Stored(Vec<u8>),
    Lead(FencingToken),
    Follow(Duration),
}

/// What woke a follower.
enum Wake {
    Value(Vec<u8>),
    GaveUp,
    Expired,
    Closed,
}

/// Runs one process's part of the flight for `key`.
pub(crate) async fn fly<V, E, C, F, Fut>(shared: Arc<Shared<C>>, key: String, work: F) -> Flown<V, E>
where
    C: Codec<V>,
    F: FnOnce(Lease) -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let names = Arc::new(Names::new(&shared.config.prefix, &key));
    let mut work = Some(work);
    // Started: a Redis failure from here on is `Disconnected`, not `Unreachable`.
    let mut started = false;
    // A value this process computed under a lease it then lost (a newer leader took over) or
    // could not store (Redis failed), with the token it was computed under.
    let mut own: Option<(V, FencingToken)> = None;
    // Until when a Redis failure mid-flight is retried.
    let mut retry_until: Option<Instant> = None;
    let mut subscription: Option<Subscription> = None;
    let mut backoff = Duration::from_millis(5);

    loop {
        // Listen first, then check: a publish between the two is never missed.
        let step = async {
            if subscription.is_none() {
                subscription = Some(shared.subscriber.subscribe(&names.channel).await?);
            }
            acquire(&shared, &names).await
        };
        let decision = match step.await {
            Ok(decision) => decision,
            Err(error) => {
                subscription = None;
                let now = Instant::now();
                let until = *retry_until.get_or_insert(now + shared.config.lease);
                if started && now < until {
                    sleep(backoff.min(until - now)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                    continue;
                }
                return degrade(&shared, error, started, work, own).await;
            }
        };
        started = true;
        retry_until = None;
        backoff = Duration::from_millis(5);
        match decision {
            Decision::Stored(bytes) => return decode(&shared, &bytes, Origin::Stored),
            Decision::Lead(token) => {
                let mut leading = Leading::start(&shared, &names, token);
                let value = match own.take() {
                    // Leading again after a lost lease or a failed store: publish what we have.
                    Some((value, _)) => value,
                    None => {
                        let work = work.take().expect("the work runs once: a flight returns after it");
                        let lease = Lease { token: Some(token), lost: leading.lost.clone() };
                        match work(lease).await {
                            Ok(value) => value,
                            // `leading` drops: the lease is given up, a follower takes over.
                            Err(error) => return Err(Error::Failed(Arc::new(error))),
                        }
                    }
                };
                let Ok(bytes) = shared.codec.encode(&value) else {
                    // Unpublishable: keep it here; `leading` gives the lease up.
                    return Ok((value, Origin::Ran { token: Some(token) }));
                };
                match leading.complete(bytes).await {
                    Ok(true) => return Ok((value, Origin::Ran { token: Some(token) })),
                    // The lease was lost to a newer leader, or the store failed (it may have
                    // happened: the reply is what got lost). Check again: a newer result wins;
                    // ours is kept in case this process leads again, and for the fallback.
                    Ok(false) | Err(_) => own = Some((value, token)),
                }
            }
            Decision::Follow(pttl) => {
                let stream = subscription.as_mut().expect("subscribed before the check");
                let deadline = Instant::now() + pttl + shared.config.lease / 20;
                match wait(stream, deadline).await {
                    Wake::Value(bytes) => return decode(&shared, &bytes, Origin::Woken),
                    // Re-check at once: one follower (in some process) leads next.
                    Wake::GaveUp | Wake::Expired => {}
                    // Re-subscribe, then re-check.
                    Wake::Closed => subscription = None,
                }
            }
        }
    }
}

/// Redis failed before a result: the fallback, or the typed error.
async fn degrade<V, E, C, F, Fut>(
    shared: &Shared<C>,
    error: redis::RedisError,
    started: bool,
    work: Option<F>,
    own: Option<(V, FencingToken)>,
) -> Flown<V, E>
where
    F: FnOnce(Lease) -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    if let Some((value, token)) = own {
        // Computed here under a lease; Redis is gone: the value is still good.
        return Ok((value, Origin::Ran { token: Some(token) }));
    }
    match (shared.config.fallback, work) {
        (Fallback::Local, Some(work)) => {
            let lease = Lease { token: None, lost: Arc::new(AtomicBool::new(false)) };
            match work(lease).await {
                Ok(value) => Ok((value, Origin::Ran { token: None })),
                Err(e) => Err(Error::Failed(Arc::new(e))),
            }
        }
        _ if started => Err(Error::Disconnected(Arc::new(error))),
        _ => Err(Error::Unreachable(Arc::new(error))),
    }
}

fn decode<V, E, C: Codec<V>>(shared: &Shared<C>, bytes: &[u8], origin: Origin) -> Flown<V, E> {
    match shared.codec.decode(bytes) {
        Ok(value) => Ok((value, origin)),
        Err(e) => Err(Error::Decode(Arc::new(CodecError::new(e)))),
    }
}

async fn wait(subscription: &mut Subscription, deadline: Instant) -> Wake {
    loop {
        match timeout_at(deadline, subscription.next()).await {
            Err(_) => return Wake::Expired,
            Ok(None) => return Wake::Closed,
            Ok(Some(payload)) => match payload.split_first() {
                Some((b'v', bytes)) => return Wake::Value(bytes.to_vec()),
                Some((b'g', _)) => return Wake::GaveUp,
                _ => {} // not ours: ignore
            },
        }
    }
}

async fn acquire<C>(shared: &Shared<C>, names: &Names) -> redis::RedisResult<Decision> {
    let mut con = shared.connection().await?;
    let reply: (i64, redis::Value) = shared
        .scripts
        .acquire
        .key(&names.value)
        .key(&names.lease)
        .key(&names.fence)
        .arg(millis(shared.config.lease))
        .invoke_async(&mut con)
        .await?;
    let malformed =
        || redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply from the acquire script"));
    match reply {
        (0, redis::Value::BulkString(bytes)) => Ok(Decision::Stored(bytes)),
        (1, redis::Value::Int(token)) => {
            Ok(Decision::Lead(FencingToken(u64::try_from(token).map_err(|_| malformed())?)))
        }
        (2, redis::Value::Int(pttl)) => {
            Ok(Decision::Follow(Duration::from_millis(u64::try_from(pttl).unwrap_or(0))))
        }
        _ => Err(malformed()),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The role of leader: renews the lease while alive; unless the result was published (or
/// rejected), gives the lease up when dropped (the work failed, panicked or was cancelled) so
/// that a follower takes over at once.
struct Leading<C: Send + Sync + 'static> {
    shared: Arc<Shared<C>>,
    names: Arc<Names>,
    token: FencingToken,
    lost: Arc<AtomicBool>,
    renewal: tokio::task::JoinHandle<()>,
    settled: bool,
}

impl<C: Send + Sync + 'static> Leading<C> {
    fn start(shared: &Arc<Shared<C>>, names: &Arc<Names>, token: FencingToken) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(renew(shared.clone(), names.clone(), token, lost.clone()));
        Self { shared: shared.clone(), names: names.clone(), token, lost, renewal, settled: false }
    }

    /// Stores and publishes `bytes` if the lease is still ours: `Ok(true)`; `Ok(false)` if a
    /// newer leader holds it (nothing written).
    async fn complete(&mut self, bytes: Vec<u8>) -> redis::RedisResult<bool> {
        self.renewal.abort();
        let config = &self.shared.config;
        let mut con = self.shared.connection().await?;
        let done: i64 = self
            .shared
            .scripts
            .complete
            .key(&self.names.value)
            .key(&self.names.lease)
            .arg(self.token.0)
            .arg(bytes)
            .arg(millis(config.linger))
            .arg(&self.names.channel)
            .invoke_async(&mut con)
            .await?;
        self.settled = true;
        Ok(done == 1)
    }
}

impl<C: Send + Sync + 'static> Drop for Leading<C> {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.settled {
            return;
        }
        // Outside a runtime (it is shutting down) the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release(self.shared.clone(), self.names.clone(), self.token));
        }
    }
}

async fn renew<C>(shared: Arc<Shared<C>>, names: Arc<Names>, token: FencingToken, lost: Arc<AtomicBool>) {
    let lease = shared.config.lease;
    loop {
        sleep(lease / 3).await;
        let Ok(mut con) = shared.connection().await else { continue };
        let renewed: redis::RedisResult<i64> = shared
            .scripts
            .renew
            .key(&names.lease)
            .arg(token.0)
            .arg(millis(lease))
            .invoke_async(&mut con)
            .await;
        if let Ok(0) = renewed {
            lost.store(true, Ordering::Release);
            return;
        }
        // An error: try again at the next tick (the lease outlives two missed renewals).
    }
}

async fn release<C>(shared: Arc<Shared<C>>, names: Arc<Names>, token: FencingToken) {
    if let Ok(mut con) = shared.connection().await {
        let _: redis::RedisResult<i64> = shared
            .scripts
            .release
            .key(&names.lease)
            .arg(token.0)
            .arg(&names.channel)
            .invoke_async(&mut con)
            .await;
    }
}

/// The connection for commands (not subscriptions).
pub(crate) async fn connect(
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(5))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client, config)
}
