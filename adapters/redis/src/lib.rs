//! [`coalescer`] across processes: for a whole fleet, one execution per key per lease, on Redis.
//!
//! With 40 processes each coalescing locally, an expiring key still costs 40 queries. A
//! [`RedisGroup`] makes it one:
//!
//! 1. **Local first.** The callers of a key in one process join one local flight (the core's
//!    shared-work mode), so M callers make one set of Redis calls per flight, and a caller that
//!    leaves does not cancel the flight for the others.
//! 2. **Listen, then check.** The flight subscribes to the key's wake channel, *then* runs one Lua
//!    script that decides atomically: a result is there (take it), the lease is free (lead, with a
//!    fencing token from the key's counter), or it is held (follow).
//! 3. **Followers sleep** until the leader's publish wakes them, with the result in the message:
//!    no polling. A follower process sends 3 commands per flight (`SUBSCRIBE`, `EVALSHA`,
//!    `UNSUBSCRIBE`) when the work is shorter than two thirds of the lease, plus one check each
//!    time the lease it was told of expires (about every two thirds of the lease while the
//!    leader renews). The leader sends 4 (the same three and the store) plus one renewal per
//!    third of the lease.
//! 4. **The leader** runs the work with its [`Lease`] (the token), renews the lease every third of
//!    the lease time from a task its guard stops, and stores + publishes the result with a script
//!    that checks the lease is still its own. The result then lingers for
//!    [`linger`](Builder::linger), for late callers.
//! 5. **Handover.** A leader whose work fails, panics or is cancelled (every local caller left)
//!    gives the lease up and publishes so; one follower, in some process, leads at once. A leader
//!    process that dies (or stalls) is replaced when its lease expires: followers re-check at the
//!    expiry the check told them.
//!
//! The Redis names per key, and the scripts, are described in the source (`scripts.rs`).
//!
//! # A lease is for efficiency, not for mutual exclusion
//!
//! Two executions of one key *can* overlap: a leader process that pauses (a GC or VM pause, a
//! `SIGSTOP`, swapping, a slow disk) longer than its lease keeps running its work while a newer
//! leader runs it too; the lease expires by the Redis server's clock, so a jump of that clock
//! ends it early; a Redis failover or restart can lose it. What the group guarantees is that
//! such a late leader never overwrites the newer result (its store is rejected, and its own
//! callers get the newer result). A resource that must never see two writers checks the
//! [`FencingToken`]: tokens of a key only grow, so the resource keeps the largest it has seen and
//! rejects older ones. (A server that lost its data restarts the key's counter at its clock in
//! microseconds, above any earlier token unless that clock went back.)
//!
//! ```
//! use coalescer_redis::FencingToken;
//! use std::sync::Mutex;
//!
//! /// A store that refuses writes from a leader older than one it has already seen.
//! struct FencedStore {
//!     newest: Mutex<Option<FencingToken>>,
//! }
//!
//! impl FencedStore {
//!     fn write(&self, token: FencingToken, _report: &str) -> Result<(), &'static str> {
//!         let mut newest = self.newest.lock().unwrap();
//!         if newest.is_some_and(|newest| token < newest) {
//!             return Err("stale leader: a newer one already wrote");
//!         }
//!         *newest = Some(token);
//!         Ok(()) // ... the write itself, in the same transaction as the check
//!     }
//! }
//!
//! let store = FencedStore { newest: Mutex::new(None) };
//! let (old, new) = (FencingToken::new(7), FencingToken::new(8));
//! store.write(new, "report of leader 8").unwrap();
//! assert!(store.write(old, "report of leader 7, back from a pause").is_err());
//! ```
//!
//! # Examples
//!
//! ```no_run
//! use coalescer_redis::RedisGroup;
//! use std::time::Duration;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! // Values are `String`s through the default codec, `Bytes`; `Json` (feature `serde`) takes
//! // any serde type.
//! let group: RedisGroup<String, std::io::Error> = RedisGroup::builder(client)
//!     .prefix("tenant-7:reports")
//!     .lease(Duration::from_secs(10))
//!     .build();
//! // Run in every process of the fleet at once: one of them queries.
//! let served = group
//!     .work("monthly", |lease| async move {
//!         let _token = lease.token(); // hand it to the database write, see above
//!         Ok("the report".to_string())
//!     })
//!     .await?;
//! println!("{} ({:?})", served.value(), served.origin());
//! # Ok(()) }
//! ```
//!
//! # Failure modes
//!
//! | what | outcome |
//! |---|---|
//! | Redis unreachable at the start | [`Error::Unreachable`], or with [`Fallback::Local`] the work runs here, coalesced locally only ([`Lease::token`] is `None`) |
//! | Redis lost while following | retried (re-subscribe, re-check) for one lease time, then [`Error::Disconnected`] or the fallback |
//! | Redis lost while leading | the failed store is retried as a re-check for one lease time (a newer result wins; a free lease is taken and the value stored under it), then the leader's callers get its own value |
//! | the subscription dropped (`CLIENT KILL`) | the follower re-subscribes and re-checks at once |
//! | a silent drop (no close seen) | the follower re-checks when the lease it was told expires |
//! | the server restarted (no persistence) | as a lost subscription: the re-check finds a free lease and one follower leads; the old leader's store is rejected and its callers get the new result |
//! | the leader's lease expired (pause) | a newer leader; the old one's store is rejected, its callers get the newer result ([`Origin::Stored`] or [`Origin::Woken`]) |
//! | the work fails | [`Error::Failed`] for this process's callers; the lease is given up, another process tries |
//! | the work panics | the panic in the local caller driving the flight, [`Error::Panicked`] for the other local callers; the lease is given up |
//! | a result that does not decode | [`Error::Decode`] |
//! | a result that does not encode | the leader's callers get the value; nothing is published and the lease is given up |
//!
//! # Keys
//!
//! Each group has a prefix ([`Builder::prefix`], default `coalescer`); a key `k` uses the Redis
//! names `{prefix}:k:value`, `:lease`, `:fence` and the channel `{prefix}:k:wake`. Put tenants in
//! the prefix or the key (never let one tenant name another's key). The `:fence` counter has no
//! expiry (tokens must only grow): one small string per key ever used.
//!
//! # Connections
//!
//! A group has two connections, opened at its first call: one multiplexed connection for
//! commands (redis-rs's `ConnectionManager`, which reconnects), and one subscriber connection
//! shared by its flights (each subscribes to its key's channel on it, and unsubscribes when it
//! ends). A lost subscriber connection wakes every flight waiting on it; they re-subscribe on a
//! new one and re-check.
//!
//! # Runtime
//!
//! Calls need a tokio runtime (redis-rs's `tokio-comp`): the renewal, the give-up and the
//! subscriber's manager are spawned tasks, and the connections' own tasks live on the runtime of
//! the group's first call, so use a group from one runtime. If the runtime shuts down under a
//! leader, its lease simply expires.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod flight;
mod scripts;
mod subscriber;

#[cfg(feature = "serde")]
pub use codec::Json;
pub use codec::{Bytes, Codec, CodecError};
pub use error::Error;
pub use redis;

use coalescer::Group;
use redis::aio::ConnectionManager;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a process does when Redis cannot be used for a flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Fail the flight with [`Error::Unreachable`] or [`Error::Disconnected`].
    #[default]
    Fail,
    /// Run the work in this process, still coalesced locally (one execution per process rather
    /// than one per fleet), with a [`Lease`] without token.
    Local,
}

/// A fencing token: per key, every new leader's token is larger than every earlier one's. See
/// the [crate docs](crate#a-lease-is-for-efficiency-not-for-mutual-exclusion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub(crate) u64);

impl FencingToken {
    /// A token from its number (to compare with one stored by a resource).
    pub fn new(token: u64) -> Self {
        Self(token)
    }

    /// The token's number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What the work receives: its fencing token, and whether the lease has been lost meanwhile.
#[derive(Clone, Debug)]
pub struct Lease {
    token: Option<FencingToken>,
    lost: Arc<AtomicBool>,
}

impl Lease {
    /// The leader's fencing token; `None` when the work runs under [`Fallback::Local`].
    pub fn token(&self) -> Option<FencingToken> {
        self.token
    }

    /// Whether a renewal found the lease held by someone else (the work may stop early: its
    /// result will be rejected in favour of the newer leader's). A hint only: `false` does not
    /// prove the lease is still held.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// Where a caller's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// This process ran the work (`token` is `None` under [`Fallback::Local`]).
    Ran {
        /// The lease's fencing token.
        token: Option<FencingToken>,
    },
    /// Another process ran it; its publish woke this process.
    Woken,
    /// Another process ran it; its result was still stored (lingering) when this process checked.
    Stored,
}

impl Origin {
    /// Whether this process ran the work.
    pub fn is_ran(&self) -> bool {
        matches!(self, Self::Ran { .. })
    }
}

/// A value and how it was served: by this process or another, to one local caller or several.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Served<V> {
    value: V,
    origin: Origin,
    leader: bool,
    shared: bool,
}

impl<V> Served<V> {
    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// The value, owned.
    pub fn into_value(self) -> V {
        self.value
    }

    /// Which process produced it.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether this caller started the local flight (not whether this process ran the work:
    /// see [`origin`](Self::origin)).
    pub fn is_local_leader(&self) -> bool {
        self.leader
    }

    /// Whether the local flight served more than one caller of this process.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

#[derive(Debug)]
struct Config {
    prefix: String,
    lease: Duration,
    linger: Duration,
    fallback: Fallback,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// What every flight of a group shares.
struct Shared<C> {
    config: Config,
    codec: C,
    scripts: scripts::Scripts,
    /// For subscriptions: one connection, shared by the group's flights.
    subscriber: subscriber::Subscriber,
    /// For commands.
    commands: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

impl<C> Shared<C> {
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let config = &self.config;
        let manager = self
            .manager
            .get_or_try_init(|| {
                flight::connect(self.commands.clone(), config.connect_timeout, config.response_timeout)
            })
            .await?;
        Ok(manager.clone())
    }
}

/// Builds a [`RedisGroup`]: [`RedisGroup::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder<C = Bytes> {
    client: redis::Client,
    config: Config,
    codec: C,
}

impl<C> Builder<C> {
    /// The prefix of every Redis name of the group (default `coalescer`). Groups whose values
    /// differ need different prefixes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long a leader holds the key without renewing (default 10 s); it renews every third of
    /// it. A dead leader is replaced after at most this long.
    ///
    /// # Panics
    ///
    /// If `lease` is under 30 ms (renewals could not keep up).
    pub fn lease(mut self, lease: Duration) -> Self {
        assert!(
            lease >= Duration::from_millis(30),
            "coalescer-redis: a lease under 30 ms cannot be renewed in time"
        );
        self.config.lease = lease;
        self
    }

    /// How long a result stays stored for late callers (default 1 s; zero: not stored, only
    /// published).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self
    }

    /// What to do when Redis cannot be used (default [`Fallback::Fail`]).
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.config.fallback = fallback;
        self
    }

    /// How long to wait for a connection (default 1 s) and for a reply (default 2 s).
    pub fn timeouts(mut self, connect: Duration, response: Duration) -> Self {
        self.config.connect_timeout = connect;
        self.config.response_timeout = response;
        self
    }

    /// The codec for values (default [`Bytes`]).
    pub fn codec<C2>(self, codec: C2) -> Builder<C2> {
        Builder { client: self.client, config: self.config, codec }
    }

    /// The group. It connects lazily, at its first call.
    pub fn build<V, E>(self) -> RedisGroup<V, E, C>
    where
        C: Codec<V>,
    {
        let subscriber = subscriber::Subscriber::new(
            self.client.clone(),
            self.config.connect_timeout + self.config.response_timeout,
        );
        RedisGroup {
            local: Arc::new(Group::new().shared()),
            shared: Arc::new(Shared {
                config: self.config,
                codec: self.codec,
                scripts: scripts::Scripts::new(),
                subscriber,
                commands: self.client,
                manager: tokio::sync::OnceCell::new(),
            }),
            _error: PhantomData,
        }
    }
}

/// Coalesces calls by key across every process that uses the same Redis and prefix: one
/// execution per key per lease. See the [crate docs](crate).
///
/// `V` is the value (cloned to each local caller: put an expensive one in an `Arc`), `E` the
/// work's error, `C` the [`Codec`] that carries `V` between processes.
///
/// # Unwind safety
///
/// User code runs in the work, the codec, and `V::clone`. A panic in the work or the codec
/// unwinds through the flight: the local caller driving it gets the panic, the other local
/// callers [`Error::Panicked`], the leader's guard stops the renewal and gives the lease up
/// (published), and the key is free locally (the core's shared-work rules). A panic in
/// `V::clone` follows the core's rules (see [`coalescer::Group`]). No role (leader, renewal) is held by
/// anything but a guard, so an unwind never leaves a lease renewed forever.
pub struct RedisGroup<V, E = std::convert::Infallible, C = Bytes> {
    local: Arc<coalescer::SharedGroup<String, flight::Flown<V, E>>>,
    shared: Arc<Shared<C>>,
    _error: PhantomData<fn() -> E>,
}

impl RedisGroup<Vec<u8>> {
    /// A builder for a group on `client`'s server.
    pub fn builder(client: redis::Client) -> Builder<Bytes> {
        Builder {
            client,
            config: Config {
                prefix: "coalescer".into(),
                lease: Duration::from_secs(10),
                linger: Duration::from_secs(1),
                fallback: Fallback::Fail,
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(2),
            },
            codec: Bytes,
        }
    }
}

impl<V, E, C> RedisGroup<V, E, C>
where
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    C: Codec<V>,
{
    /// Runs `work` once for all concurrent calls with this `key` in every process of the group:
    /// here, or in another process whose result is then decoded here.
    ///
    /// # Cancel safety
    ///
    /// Dropping this future affects no other caller: the local flight goes on for the others.
    /// When the last local caller leaves, the flight is dropped: if this process was leading, its
    /// work is cancelled and the lease given up (published), so another process leads at once.
    ///
    /// # Errors
    ///
    /// See [`Error`] and the [crate docs](crate#failure-modes).
    ///
    /// # Panics
    ///
    /// When the work or the codec panics, the panic is resumed in the local caller that was
    /// driving the flight; the other local callers get [`Error::Panicked`]; the lease is given
    /// up. Panics outside a tokio runtime.
    pub async fn work<F, Fut>(&self, key: impl Into<String>, work: F) -> Result<Served<V>, Error<E>>
    where
        F: FnOnce(Lease) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let key = key.into();
        let (shared, flight_key) = (self.shared.clone(), key.clone());
        let outcome = self.local.work(&key, move || flight::fly(shared, flight_key, work)).await;
        let outcome = outcome.map_err(Error::Panicked)?;
        let (leader, shared) = (outcome.is_leader(), outcome.is_shared());
        let (value, origin) = outcome.into_value()?;
        Ok(Served { value, origin, leader, shared })
    }

    /// Keys with a local flight in this process.
    pub fn in_flight(&self) -> usize {
        self.local.in_flight()
    }

    /// The local group's counters (local leaders, local followers, panics...): each local leader
    /// made one cross-process flight.
    pub fn counters(&self) -> coalescer::Counters {
        self.local.counters()
    }
}

impl<V, E, C> Clone for RedisGroup<V, E, C> {
    fn clone(&self) -> Self {
        Self { local: self.local.clone(), shared: self.shared.clone(), _error: PhantomData }
    }
}

impl<V, E, C> fmt::Debug for RedisGroup<V, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGroup")
            .field("config", &self.shared.config)
            .field("in_flight", &self.local.in_flight())
            .finish_non_exhaustive()
    }
}
