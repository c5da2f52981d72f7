//! One subscriber connection per group, shared by its flights: [`Subscriber`].
//!
//! A *manager* task owns the connection (redis-rs's `PubSub`, split into its sink and its
//! message stream) and the table `channel → the flights listening on it`. Flights talk to it
//! through one ordered queue of commands, so that subscriptions and unsubscriptions of a channel
//! reach the server in the order the flights asked (an `UNSUBSCRIBE` of a finished flight can
//! never overtake the `SUBSCRIBE` of the next flight of the same key):
//!
//! - `Subscribe`: the first flight of a channel sends `SUBSCRIBE` and waits for the server's
//!   confirmation before the flight is told it is listening (then it may check: listen, then
//!   check); later ones join the table at once.
//! - `Unsubscribe` (sent by a [`Subscription`]'s `Drop`): the last flight of a channel sends
//!   `UNSUBSCRIBE`.
//! - A message is copied to every flight listening on its channel.
//!
//! When the connection ends (killed, the server restarted) the manager returns, dropping the
//! table: every flight's [`Subscription::next`] returns `None`, and its next `subscribe` starts
//! a new manager on a new connection. When the group and every subscription are gone, the queue
//! closes and the manager returns.

use futures_lite::StreamExt;
use redis::RedisResult;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

enum Command {
    Subscribe {
        channel: String,
        id: u64,
        to: mpsc::UnboundedSender<Vec<u8>>,
        ack: oneshot::Sender<RedisResult<()>>,
    },
    Unsubscribe {
        channel: String,
        id: u64,
    },
}

/// The group's subscriber: starts a manager (a connection) when there is none.
#[derive(Debug)]
pub(crate) struct Subscriber {
    client: redis::Client,
    timeout: Duration,
    queue: tokio::sync::Mutex<Option<mpsc::UnboundedSender<Command>>>,
    ids: AtomicU64,
}

/// One flight listening on one channel; unsubscribes when dropped.
#[derive(Debug)]
pub(crate) struct Subscription {
    channel: String,
    id: u64,
    queue: mpsc::UnboundedSender<Command>,
    messages: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Subscriber {
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Self {
        Self { client, timeout, queue: tokio::sync::Mutex::new(None), ids: AtomicU64::new(0) }
    }

    /// Listens on `channel`: returns once the server confirmed the subscription.
    pub(crate) async fn subscribe(&self, channel: &str) -> RedisResult<Subscription> {
        let queue = self.queue().await?;
        let (to, messages) = mpsc::unbounded_channel();
        let (ack, acked) = oneshot::channel();
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let subscription = Subscription { channel: channel.to_owned(), id, queue: queue.clone(), messages };
        queue.send(Command::Subscribe { channel: channel.to_owned(), id, to, ack }).map_err(|_| lost())?;
        match tokio::time::timeout(self.timeout, acked).await {
            Ok(Ok(result)) => result.map(|()| subscription),
            Ok(Err(_)) => Err(lost()),
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out subscribing"))),
        }
    }

    /// The running manager's queue, or a new manager's.
    async fn queue(&self) -> RedisResult<mpsc::UnboundedSender<Command>> {
        let mut queue = self.queue.lock().await;
        if let Some(running) = queue.as_ref().filter(|q| !q.is_closed()) {
            return Ok(running.clone());
        }
        let pubsub =
            tokio::time::timeout(self.timeout, self.client.get_async_pubsub()).await.map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting the subscriber"))
            })??;
        let (sender, commands) = mpsc::unbounded_channel();
        tokio::spawn(manage(pubsub, commands, self.timeout));
        *queue = Some(sender.clone());
        Ok(sender)
    }
}

impl Subscription {
    /// The next message on the channel; `None` once the connection is gone.
    pub(crate) async fn next(&mut self) -> Option<Vec<u8>> {
        self.messages.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let channel = std::mem::take(&mut self.channel);
        let _ = self.queue.send(Command::Unsubscribe { channel, id: self.id });
    }
}

fn lost() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the subscriber connection was lost"))
}

async fn manage(
    pubsub: redis::aio::PubSub,
    mut commands: mpsc::UnboundedReceiver<Command>,
    timeout: Duration,
) {
    let (mut sink, mut stream) = pubsub.split();
    let mut channels: HashMap<String, HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return, // the group and every subscription are gone
                Some(Command::Subscribe { channel, id, to, ack }) => {
                    if !channels.contains_key(&channel) {
                        let subscribed = tokio::time::timeout(timeout, sink.subscribe(&channel)).await;
                        if let Err(error) = subscribed.unwrap_or_else(|_| Err(lost())) {
                            let _ = ack.send(Err(error));
                            return; // the connection is unusable: the next subscribe starts anew
                        }
                    }
                    channels.entry(channel).or_default().insert(id, to);
                    let _ = ack.send(Ok(()));
                }
                Some(Command::Unsubscribe { channel, id }) => {
                    let Some(listeners) = channels.get_mut(&channel) else { continue };
                    listeners.remove(&id);
                    if listeners.is_empty() {
                        channels.remove(&channel);
                        let unsubscribed = tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await;
                        if !matches!(unsubscribed, Ok(Ok(()))) {
                            return;
                        }
                    }
                }
            },
            message = stream.next() => match message {
                None => return, // the connection ended: dropping `channels` wakes every listener
                Some(message) => {
                    if let Some(listeners) = channels.get(message.get_channel_name()) {
                        for listener in listeners.values() {
                            let _ = listener.send(message.get_payload_bytes().to_vec());
                        }
                    }
                }
            },
        }
    }
}
