//! The change feed (`wasi-kv watch`) of a Redis server or cluster: keyspace notifications
//! (`notify-keyspace-events`, enabled here if the server allows `CONFIG SET`) for the
//! namespace's keys, each turned into a change in an in-process [`ChangeLog`] by reading the
//! key's value then. A cluster's notifications are each node's own: every primary is
//! subscribed, and all of them again when one subscription is lost or the primaries change (a
//! failover), with the log started again. Notifications are fire-and-forget: a lost subscription, a failed read,
//! or a host restart may have missed changes, so each starts the log again, and a watcher
//! holding a position of the earlier log resynchronises from a listing. What a watcher gets
//! is therefore the value a key had when its notification was read (several quick writes of
//! one key may be delivered as its latest value, more than once), and a delete made while no
//! subscription was open is not delivered (docs/watch.md).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use kv_core::watch::{Change, ChangeFeed, ChangeLog, Changes, Look, Position, wait_for_changes};
use kv_core::{Bucket, ErrorKind, KvError, Result};

use crate::client::RedisConnection;
use tokio::sync::Notify;

/// Changes the in-process log keeps; a watcher further behind resynchronises.
const CHANGE_LOG_MAX: usize = 100_000;
/// Key and value bytes the log keeps.
const CHANGE_LOG_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long a feed waits for a subscription before it answers `unavailable` (at the start,
/// or while one is being opened again).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle subscription is checked with a PING: a half-open connection would
/// otherwise wait for notifications that never come.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How long a PING may go unanswered before the subscription is opened again.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications read, coalesced and read back at once at most.
const DRAIN_MAX: usize = 1_000;
/// Attempts at reading back the changed keys before the log is started again.
const READ_ATTEMPTS: u32 = 3;
/// Between attempts to subscribe again after the subscription was lost.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);
/// How often a cluster's primaries are listed again while subscribed: a failover promotes a
/// replica that no subscription listens to yet.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);
/// The keyspace-event classes needed: keyspace channels (K), generic commands such as DEL
/// (g), string commands (`$`), expiry (x) and eviction (e).
const NEEDED_EVENTS: &str = "Kg$xe";

/// What a notification means for the watcher.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// The key was written: read its value.
    Written,
    /// The key is gone.
    Gone,
    /// Not a change of the value (a TTL set or removed, another type's command).
    Other,
}

fn event(name: &str) -> Event {
    match name {
        "set" | "incrby" | "incrbyfloat" | "append" | "setrange" | "setbit" | "restore"
        | "rename_to" | "copy_to" | "move_to" | "getex" => Event::Written,
        "del" | "expired" | "evicted" | "rename_from" | "move_from" => Event::Gone,
        _ => Event::Other,
    }
}

/// The flags `current` (a `notify-keyspace-events` value) lacks of [`NEEDED_EVENTS`]; `A`
/// stands for every class but K and E.
fn missing_events(current: &str) -> String {
    NEEDED_EVENTS
        .chars()
        .filter(|flag| {
            let covered_by_all = *flag != 'K' && current.contains('A');
            !(current.contains(*flag) || covered_by_all)
        })
        .collect()
}

struct Followed {
    log: Mutex<ChangeLog>,
    notify: Arc<Notify>,
    /// Whether a subscription is open, and why the last attempt failed.
    subscribed: tokio::sync::watch::Sender<std::result::Result<bool, String>>,
}

impl Followed {
    fn log(&self) -> MutexGuard<'_, ChangeLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One namespace's changes, followed by a task of its own while the feed lives.
pub(crate) struct RedisFeed {
    followed: Arc<Followed>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RedisFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisFeed {
    /// Follows the keys of `bucket` (whose keys start with `prefix`) on the server or the
    /// cluster's primaries `connection` reaches.
    pub(crate) fn follow(
        connection: RedisConnection,
        bucket: Arc<dyn Bucket>,
        prefix: Vec<u8>,
        pattern: Vec<u8>,
    ) -> RedisFeed {
        let log = ChangeLog::new(CHANGE_LOG_MAX, CHANGE_LOG_MAX_BYTES);
        let followed = Arc::new(Followed {
            notify: log.notify(),
            log: Mutex::new(log),
            subscribed: tokio::sync::watch::Sender::new(Ok(false)),
        });
        let task = tokio::spawn(subscribe_and_follow(
            connection,
            bucket,
            prefix,
            pattern,
            followed.clone(),
        ));
        RedisFeed { followed, task }
    }
}

/// Subscribes on every node holding the namespace's keys, and again whenever a subscription is
/// lost or a cluster's primaries change, until the feed is dropped.
async fn subscribe_and_follow(
    connection: RedisConnection,
    bucket: Arc<dyn Bucket>,
    prefix: Vec<u8>,
    pattern: Vec<u8>,
    followed: Arc<Followed>,
) {
    loop {
        match subscribe_all(&connection, &prefix, &pattern).await {
            Ok(subscriptions) => {
                // Whatever happened before these subscriptions may have been missed.
                followed.log().restart();
                let _previous = followed.subscribed.send_replace(Ok(true));
                let why = follow_all(subscriptions, &connection, bucket.as_ref(), &followed).await;
                tracing::warn!(
                    %why,
                    "redis watch: subscribing again; watchers resynchronise once subscribed"
                );
                let _previous = followed.subscribed.send_replace(Ok(false));
            }
            Err(err) => {
                tracing::warn!(error = %err, "redis watch: cannot subscribe to keyspace notifications");
                let _previous = followed.subscribed.send_replace(Err(err));
            }
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

/// One node's subscription: its name, the subscription, and the channel prefix of the
/// namespace's keys on it.
type Subscription = (String, redis::aio::PubSub, Vec<u8>);

/// A subscription on each node (all of them, or an error naming the one that failed).
async fn subscribe_all(
    connection: &RedisConnection,
    prefix: &[u8],
    pattern: &[u8],
) -> std::result::Result<Vec<Subscription>, String> {
    let nodes = connection
        .subscribers()
        .await
        .map_err(|err| format!("finding the nodes to subscribe on: {err}"))?;
    let mut subscriptions = Vec::with_capacity(nodes.len());
    for (node, client) in nodes {
        let db = client.get_connection_info().redis_settings().db();
        let mut channel_prefix = format!("__keyspace@{db}__:").into_bytes();
        let mut channel_pattern = channel_prefix.clone();
        channel_prefix.extend_from_slice(prefix);
        channel_pattern.extend_from_slice(pattern);
        // redis-rs sets no timeout on opening a subscription: a node that accepts the
        // connection and then stalls would hold every subscription back.
        let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&client, &channel_pattern))
            .await
            .map_err(|_| format!("{node}: no answer within {} s", SUBSCRIBE_TIMEOUT.as_secs()))?
            .map_err(|err| format!("{node}: {err}"))?;
        subscriptions.push((node, pubsub, channel_prefix));
    }
    Ok(subscriptions)
}

/// Follows every subscription until one ends or the cluster's primaries change; why, for
/// the log.
async fn follow_all(
    subscriptions: Vec<Subscription>,
    connection: &RedisConnection,
    bucket: &dyn Bucket,
    followed: &Followed,
) -> String {
    let mut nodes: Vec<String> = subscriptions
        .iter()
        .map(|(node, ..)| node.clone())
        .collect();
    nodes.sort();
    let followers = subscriptions
        .into_iter()
        .map(|(node, pubsub, channel_prefix)| {
            Box::pin(async move {
                follow_subscription(pubsub, &channel_prefix, bucket, followed).await;
                node
            })
        });
    let changed = async {
        if !connection.is_cluster() {
            return std::future::pending::<String>().await;
        }
        // A different set of primaries, seen twice in a row (a node asked may not know of a
        // failover yet, and another may: one look would flap).
        let mut differing: Option<Vec<String>> = None;
        loop {
            tokio::time::sleep(TOPOLOGY_EVERY).await;
            // A listing that fails (a node down) changes nothing yet: its subscription's
            // PING tells.
            let Ok(now) = connection.subscribers().await else {
                continue;
            };
            let mut now: Vec<String> = now.into_iter().map(|(node, _)| node).collect();
            now.sort();
            if now == nodes {
                differing = None;
            } else if differing.as_ref() == Some(&now) {
                return format!("the primaries changed: {nodes:?} -> {now:?}");
            } else {
                differing = Some(now);
            }
        }
    };
    tokio::select! {
        (node, ..) = futures::future::select_all(followers) => {
            format!("the keyspace-notification subscription on {node} was lost")
        }
        why = changed => why,
    }
}

/// Turns one subscription's notifications into changes until it ends, or stops answering.
async fn follow_subscription(
    pubsub: redis::aio::PubSub,
    channel_prefix: &[u8],
    bucket: &dyn Bucket,
    followed: &Followed,
) {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        let first = tokio::select! {
            message = messages.next() => match message {
                Some(message) => message,
                None => return,
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => continue,
                    _ => {
                        tracing::warn!("redis watch: the subscription does not answer PING");
                        return;
                    }
                }
            }
        };
        // What else is waiting, taken at once: one read-back for all of it, so a burst of
        // writes costs round trips by the thousand, not one each.
        let mut batch = vec![first];
        let mut ended = false;
        while batch.len() < DRAIN_MAX {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(message),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        let events = coalesce(
            batch
                .iter()
                .filter_map(|message| notification(message, channel_prefix)),
        );
        match read_back(bucket, events).await {
            Ok(changes) => {
                let mut log = followed.log();
                for change in changes {
                    log.push(change);
                }
            }
            Err(err) => {
                tracing::warn!(
                    error = %err.chain(),
                    "redis watch: reading changed keys back failed; watchers resynchronise"
                );
                followed.log().restart();
            }
        }
        if ended {
            return;
        }
    }
}

/// The key and event of a notification for this namespace.
fn notification(message: &redis::Msg, channel_prefix: &[u8]) -> Option<(String, Event)> {
    let key = message
        .get_channel_name()
        .as_bytes()
        .strip_prefix(channel_prefix)?;
    let key = std::str::from_utf8(key).ok()?.to_string();
    let name: String = message.get_payload().ok()?;
    match event(&name) {
        Event::Other => None,
        event => Some((key, event)),
    }
}

/// Each key's last event, in the order of those last events: the value is read once, after
/// them all (what a watcher gets is a key's value as read, so earlier writes of the same key
/// in the batch add nothing, and a delete followed by a write is the write).
fn coalesce(events: impl Iterator<Item = (String, Event)>) -> Vec<(String, Event)> {
    let events: Vec<(String, Event)> = events.collect();
    let mut last = std::collections::HashMap::new();
    for (index, (key, _)) in events.iter().enumerate() {
        last.insert(key.clone(), index);
    }
    events
        .into_iter()
        .enumerate()
        .filter(|(index, (key, _))| last.get(key) == Some(index))
        .map(|(_, event)| event)
        .collect()
}

/// The changes of `events`, their keys read back in one `MGET` round (retried a few times).
/// A written key gone by then is left out (its own notification follows); a deleted key that
/// holds a value again is that value.
async fn read_back(bucket: &dyn Bucket, events: Vec<(String, Event)>) -> Result<Vec<Change>> {
    // Deletes are read back too: a slot migration deletes a key on one node and writes it on
    // another, whose notifications may arrive in either order; a key that still holds a value
    // was not deleted (its value is delivered instead).
    let written: Vec<String> = events
        .iter()
        .filter(|(_, event)| *event != Event::Other)
        .map(|(key, _)| key.clone())
        .collect();
    let mut values = Vec::new();
    if !written.is_empty() {
        let mut attempt = 1;
        values = loop {
            match bucket.get_many(&written).await {
                Ok(values) => break values,
                Err(err) if attempt < READ_ATTEMPTS => {
                    tracing::debug!(error = %err.chain(), attempt, "redis watch: read-back failed");
                    kv_core::Backoff::PRESSURE.wait(attempt).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        };
    }
    let mut values = values.into_iter();
    let mut changes = Vec::with_capacity(events.len());
    for (key, event) in events {
        if event == Event::Other {
            continue;
        }
        match (event, values.next().flatten()) {
            (_, Some(value)) => changes.push(Change::Set { key, value }),
            (Event::Gone, None) => changes.push(Change::Delete { key }),
            // Written, and gone by the read: its own delete notification follows.
            _ => {}
        }
    }
    Ok(changes)
}

/// `CONFIG` refused (an ACL, a renamed or disabled command), as managed services do; not an
/// I/O error or a timeout.
fn is_denied(err: &redis::RedisError) -> bool {
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        return false;
    }
    let code = err.code().unwrap_or_default();
    code == "NOPERM"
        || (code == "ERR"
            && err
                .detail()
                .is_some_and(|detail| detail.contains("unknown command")))
}

/// Makes sure the server sends the keyspace events needed, and subscribes to them.
async fn subscribe(
    client: &redis::Client,
    channel_pattern: &[u8],
) -> std::result::Result<redis::aio::PubSub, String> {
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|err| format!("connecting: {err}"))?;
    let current: std::result::Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut connection)
        .await;
    let current = match current {
        Ok(current) => current.get(1).cloned().unwrap_or_default(),
        // A timeout or a dropped connection says nothing about the setting: subscribing then
        // could listen to a node that sends nothing. Try again.
        Err(err) if !is_denied(&err) => return Err(format!("CONFIG GET: {err}")),
        Err(err) => {
            // Managed services deny CONFIG: the operator enables the events there.
            tracing::warn!(
                error = %err,
                "redis watch: cannot read notify-keyspace-events; subscribing anyway (the \
                 server must send the events \"{NEEDED_EVENTS}\")"
            );
            NEEDED_EVENTS.to_string()
        }
    };
    let missing = missing_events(&current);
    if !missing.is_empty() {
        let wanted = format!("{current}{missing}");
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async::<()>(&mut connection)
            .await
            .map_err(|err| {
                format!(
                    "enabling keyspace events (CONFIG SET notify-keyspace-events {wanted}): \
                     {err}; enable them on the server"
                )
            })?;
        tracing::info!(events = %wanted, "redis watch: keyspace notifications enabled");
    }
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|err| format!("opening a subscription: {err}"))?;
    pubsub
        .psubscribe(channel_pattern)
        .await
        .map_err(|err| format!("PSUBSCRIBE: {err}"))?;
    Ok(pubsub)
}

impl RedisFeed {
    /// Waits for an open subscription, at most [`SUBSCRIBE_TIMEOUT`]: a feed with none cannot
    /// tell what changes, and says so rather than answer that nothing did.
    async fn subscribed(&self) -> Result<()> {
        let mut subscribed = self.followed.subscribed.subscribe();
        let waited = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            while !matches!(*subscribed.borrow_and_update(), Ok(true)) {
                if subscribed.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if waited.is_ok() && matches!(*self.followed.subscribed.borrow(), Ok(true)) {
            return Ok(());
        }
        let why = match &*self.followed.subscribed.borrow() {
            Err(why) => why.clone(),
            Ok(_) => "the server does not answer".to_string(),
        };
        Err(KvError::new(
            ErrorKind::Unavailable,
            format!(
                "redis watch: no keyspace-notification subscription for {}s: {why}",
                SUBSCRIBE_TIMEOUT.as_secs()
            ),
        ))
    }
}

#[async_trait]
impl ChangeFeed for RedisFeed {
    async fn head(&self) -> Result<Position> {
        self.subscribed().await?;
        Ok(self.followed.log().head())
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        wait_for_changes(&self.followed.notify, after, wait, || async {
            let mut found = self.followed.log().read(after, max, max_bytes);
            if !matches!(found, Some(Changes::Next { .. })) {
                // Nothing yet, or a gap: its position must be of the log a subscription
                // follows, not of one that starts again when the subscription opens (a
                // watcher would resynchronise twice).
                self.subscribed().await?;
                found = self.followed.log().read(after, max, max_bytes);
            }
            Ok(Look {
                found,
                again_within: None,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_needed_are_added_to_what_is_set() {
        assert_eq!(missing_events(""), "Kg$xe");
        assert_eq!(missing_events("KEA"), "");
        assert_eq!(missing_events("Ex"), "Kg$e");
        assert_eq!(missing_events("AK"), "");
        assert_eq!(missing_events("K$"), "gxe");
    }

    #[test]
    fn a_batch_keeps_each_keys_last_event_in_order() {
        let events = [
            ("a", Event::Written),
            ("b", Event::Written),
            ("a", Event::Gone),
            ("c", Event::Gone),
            ("b", Event::Written),
        ]
        .into_iter()
        .map(|(key, event)| (key.to_string(), event));
        let kept: Vec<(String, Event)> = coalesce(events);
        assert_eq!(
            kept,
            [
                ("a".to_string(), Event::Gone),
                ("c".to_string(), Event::Gone),
                ("b".to_string(), Event::Written),
            ]
        );
    }

    #[test]
    fn writes_and_removals_are_told_apart() {
        assert_eq!(event("set"), Event::Written);
        assert_eq!(event("incrby"), Event::Written);
        assert_eq!(event("del"), Event::Gone);
        assert_eq!(event("expired"), Event::Gone);
        assert_eq!(event("expire"), Event::Other);
        assert_eq!(event("hset"), Event::Other);
    }
}
