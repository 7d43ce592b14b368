//! The change feed (`wasi-kv watch`) of one Redis server: keyspace notifications
//! (`notify-keyspace-events`, enabled here if the server allows `CONFIG SET`) for the
//! namespace's keys, each turned into a change in an in-process [`ChangeLog`] by reading the
//! key's value then. Notifications are fire-and-forget: a lost subscription, a failed read,
//! or a host restart may have missed changes, so each starts the log again, and a watcher
//! holding a position of the earlier log resynchronises from a listing. What a watcher gets
//! is therefore the value a key had when its notification was read (several quick writes of
//! one key may be delivered as its latest value, more than once), and a delete made while no
//! subscription was open is not delivered (docs/watch.md).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kv_core::watch::{Change, ChangeFeed, ChangeLog, Changes, Position};
use kv_core::{Bucket, ErrorKind, KvError, Result};
use tokio::sync::Notify;

/// Changes the in-process log keeps; a watcher further behind resynchronises.
const CHANGE_LOG_MAX: usize = 100_000;
/// Key and value bytes the log keeps.
const CHANGE_LOG_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long the first subscription may take before `head` gives up.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Between attempts to subscribe again after the subscription was lost.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);
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
        "set" | "incrby" | "incrbyfloat" | "append" | "setrange" | "restore" | "rename_to"
        | "copy_to" | "move_to" | "getex" => Event::Written,
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
    /// Follows the keys of `bucket` (whose keys start with `prefix`) on the server `client`
    /// connects to.
    pub(crate) fn follow(
        client: redis::Client,
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
            client,
            bucket,
            prefix,
            pattern,
            followed.clone(),
        ));
        RedisFeed { followed, task }
    }
}

/// Subscribes, and again whenever the subscription is lost, until the feed is dropped.
async fn subscribe_and_follow(
    client: redis::Client,
    bucket: Arc<dyn Bucket>,
    prefix: Vec<u8>,
    pattern: Vec<u8>,
    followed: Arc<Followed>,
) {
    let db = client.get_connection_info().redis_settings().db();
    let mut channel_prefix = format!("__keyspace@{db}__:").into_bytes();
    let mut channel_pattern = channel_prefix.clone();
    channel_prefix.extend_from_slice(&prefix);
    channel_pattern.extend_from_slice(&pattern);
    loop {
        match subscribe(&client, &channel_pattern).await {
            Ok(pubsub) => {
                // Whatever happened before this subscription may have been missed.
                followed.log().restart();
                let _previous = followed.subscribed.send_replace(Ok(true));
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let channel = message.get_channel_name().as_bytes();
                    let Some(key) = channel.strip_prefix(channel_prefix.as_slice()) else {
                        continue;
                    };
                    let Ok(key) = std::str::from_utf8(key) else {
                        continue;
                    };
                    let name: String = message.get_payload().unwrap_or_default();
                    let change = match event(&name) {
                        Event::Other => continue,
                        Event::Gone => Change::Delete {
                            key: key.to_string(),
                        },
                        Event::Written => match bucket.get(key).await {
                            Ok(Some(value)) => Change::Set {
                                key: key.to_string(),
                                value,
                            },
                            // Deleted since: its own notification follows.
                            Ok(None) => continue,
                            Err(err) => {
                                tracing::warn!(
                                    error = %err.chain(),
                                    "redis watch: reading a changed key failed; watchers \
                                     resynchronise"
                                );
                                followed.log().restart();
                                continue;
                            }
                        },
                    };
                    followed.log().push(change);
                }
                tracing::warn!(
                    "redis watch: the keyspace-notification subscription was lost; watchers \
                     resynchronise once it is back"
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

/// Makes sure the server sends the keyspace events needed, and subscribes to them.
async fn subscribe(
    client: &redis::Client,
    channel_pattern: &[u8],
) -> std::result::Result<redis::aio::PubSub, String> {
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|err| format!("connecting: {err}"))?;
    let current: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut connection)
        .await
        .map_err(|err| {
            format!(
                "reading notify-keyspace-events (CONFIG GET): {err}; enable the events \
                 \"{NEEDED_EVENTS}\" on the server"
            )
        })?;
    let current = current.get(1).cloned().unwrap_or_default();
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

#[async_trait]
impl ChangeFeed for RedisFeed {
    async fn head(&self) -> Result<Position> {
        let mut subscribed = self.followed.subscribed.subscribe();
        let waited = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            loop {
                if matches!(*subscribed.borrow_and_update(), Ok(true)) {
                    return Ok(());
                }
                if subscribed.changed().await.is_err() {
                    return Err("the subscription task ended".to_string());
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(self.followed.log().head()),
            Ok(Err(why)) => Err(KvError::new(ErrorKind::Unavailable, why)),
            Err(_) => {
                let why = match &*self.followed.subscribed.borrow() {
                    Err(why) => why.clone(),
                    Ok(_) => "no answer".to_string(),
                };
                Err(KvError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "redis watch: no keyspace-notification subscription within {}s: {why}",
                        SUBSCRIBE_TIMEOUT.as_secs()
                    ),
                ))
            }
        }
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before reading, so a change pushed after the read wakes this wait.
            let notified = self.followed.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.followed.log().read(after, max, max_bytes) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Changes::Next {
                    changes: Vec::new(),
                    position: after.clone(),
                });
            }
        }
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
    fn writes_and_removals_are_told_apart() {
        assert_eq!(event("set"), Event::Written);
        assert_eq!(event("incrby"), Event::Written);
        assert_eq!(event("del"), Event::Gone);
        assert_eq!(event("expired"), Event::Gone);
        assert_eq!(event("expire"), Event::Other);
        assert_eq!(event("hset"), Event::Other);
    }
}
