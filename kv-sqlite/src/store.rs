//! The mapping of the contract onto one SQLite table (README.md has the table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use kv_core::counter::{add_delta_within, encode_counter, parse_counter};
use kv_core::provider::last_entry_per_key;
use kv_core::{
    Attempt, Bucket, Bytes, Capabilities, KeyPage, KvError, Provider, Result, StoredValue,
    SwapOutcome, Version, Versioned, clock,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::client::CallScope;
use crate::error::map_error;

/// The largest value this provider declares. SQLite itself allows up to 1 GB; a value is held
/// whole in memory for one call, so the declared maximum stays moderate.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// How long an applied increment or swap is remembered, for retries after a lost reply, and
/// how long a deleted key's tombstone is kept.
const REQUEST_TTL_MS: u64 = kv_core::limits::REQUEST_RECORD_TTL.as_millis() as u64;

/// How the version of a missing key starts (`a<S>`: absence seen at deletion clock `S`).
const ABSENT_SINCE: &str = "a";

/// A SQLite database file; every store of it shares one connection.
#[derive(Clone)]
pub struct SqliteProvider {
    connection: Arc<Mutex<Connection>>,
    busy_timeout: Duration,
    _sweeper: Arc<Sweeper>,
}

/// Deletes expired keys and old request ids in the background; stops when dropped.
struct Sweeper(tokio::task::JoinHandle<()>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteProvider {
    /// A provider over an open connection, sweeping every `sweep_interval`; a call waits up to
    /// `busy_timeout` for another connection's lock.
    pub fn new(
        connection: Connection,
        sweep_interval: Duration,
        busy_timeout: Duration,
    ) -> SqliteProvider {
        let connection = Arc::new(Mutex::new(connection));
        let swept = Arc::downgrade(&connection);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(sweep_interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(connection) = swept.upgrade() else {
                    return;
                };
                let result =
                    tokio::task::spawn_blocking(move || sweep(&mut lock(&connection))).await;
                if let Ok(Err(err)) = result {
                    tracing::warn!(error = %err.chain(), "sqlite sweep failed");
                }
            }
        });
        SqliteProvider {
            connection,
            busy_timeout,
            _sweeper: Arc::new(Sweeper(task)),
        }
    }
}

fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Deletes expired keys (reads already filter them, and each leaves a tombstone like a
/// delete), request ids past their time, and tombstones past their time (the clock's
/// `forgotten` mark then says absence captured before them can no longer be vouched for).
pub fn sweep(connection: &mut Connection) -> Result<()> {
    let now = now();
    let horizon = now.saturating_sub(i64::try_from(REQUEST_TTL_MS).unwrap_or(i64::MAX));
    let failed = |err| map_error("sweep", err);
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    expire_at(&transaction, now)?;
    crate::changes::trim(&transaction, now)?;
    transaction
        .execute("DELETE FROM kv_requests WHERE at < ?1", [horizon])
        .map_err(failed)?;
    transaction
        .execute(
            "UPDATE kv_clock SET forgotten = MAX(forgotten, \
             COALESCE((SELECT MAX(seq) FROM kv_deleted WHERE at < ?1), 0))",
            [horizon],
        )
        .map_err(failed)?;
    transaction
        .execute("DELETE FROM kv_deleted WHERE at < ?1", [horizon])
        .map_err(failed)?;
    transaction.commit().map_err(failed)
}

/// Deletes expired keys now, each leaving a tombstone like a delete (and a delete in the
/// change log, when the file is watched).
pub(crate) fn expire(connection: &mut Connection) -> Result<()> {
    // A read first: the write lock only when there is something to delete.
    let due: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM kv WHERE exp IS NOT NULL AND exp <= ?1)",
            [now()],
            |row| row.get(0),
        )
        .map_err(|err| map_error("expire", err))?;
    if !due {
        return Ok(());
    }
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|err| map_error("expire", err))?;
    expire_at(&transaction, now())?;
    transaction.commit().map_err(|err| map_error("expire", err))
}

fn expire_at(transaction: &Connection, now: i64) -> Result<()> {
    let failed = |err| map_error("expire", err);
    let expired: i64 = transaction
        .query_row(
            "SELECT COUNT(*) FROM kv WHERE exp IS NOT NULL AND exp <= ?1",
            [now],
            |row| row.get(0),
        )
        .map_err(failed)?;
    if expired > 0 {
        let seq = tick(transaction)?;
        transaction
            .execute(
                "INSERT OR REPLACE INTO kv_deleted (ns, k, seq, at) \
                 SELECT ns, k, ?2, ?1 FROM kv WHERE exp IS NOT NULL AND exp <= ?1",
                params![now, seq],
            )
            .map_err(failed)?;
        transaction
            .execute("DELETE FROM kv WHERE exp IS NOT NULL AND exp <= ?1", [now])
            .map_err(failed)?;
    }
    Ok(())
}

/// Advances the deletion clock and returns its new value (inside the caller's transaction).
fn tick(connection: &Connection) -> Result<i64> {
    connection
        .query_row(
            "UPDATE kv_clock SET seq = seq + 1 WHERE id = 0 RETURNING seq",
            [],
            |row| row.get(0),
        )
        .map_err(|err| map_error("deletion clock", err))
}

/// Deletes `key`, leaving a tombstone at a new tick of the deletion clock if it existed.
fn remove(connection: &Connection, namespace: &str, key: &str) -> Result<()> {
    let removed = connection
        .execute(
            "DELETE FROM kv WHERE ns = ?1 AND k = ?2",
            params![namespace, key],
        )
        .map_err(|err| map_error("delete", err))?;
    if removed > 0 {
        let seq = tick(connection)?;
        connection
            .execute(
                "INSERT OR REPLACE INTO kv_deleted (ns, k, seq, at) VALUES (?1, ?2, ?3, ?4)",
                params![namespace, key, seq, now()],
            )
            .map_err(|err| map_error("delete", err))?;
    }
    Ok(())
}

/// Whether `key` may have been deleted after deletion clock `since`: its tombstone is newer,
/// or tombstones newer than `since` were already forgotten.
fn deleted_since(connection: &Connection, namespace: &str, key: &str, since: i64) -> Result<bool> {
    connection
        .query_row(
            "SELECT (SELECT forgotten FROM kv_clock WHERE id = 0) > ?3 \
                 OR EXISTS (SELECT 1 FROM kv_deleted WHERE ns = ?1 AND k = ?2 AND seq > ?3)",
            params![namespace, key, since],
            |row| row.get(0),
        )
        .map_err(|err| map_error("swap", err))
}

fn now() -> i64 {
    i64::try_from(clock::now_ms()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Provider for SqliteProvider {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            cas: true,
            list_may_repeat: false,
            max_value_bytes: MAX_VALUE_BYTES,
            // The change log is in the file, written by triggers (changes.rs).
            watch: Some(kv_core::watch::WatchSupport {
                durable: true,
                reports_expiry: true,
                every_value: true,
            }),
            ..Capabilities::default()
        }
    }

    async fn open(&self, namespace: &str) -> Result<Arc<dyn Bucket>> {
        Ok(Arc::new(SqliteBucket {
            connection: self.connection.clone(),
            namespace: Arc::from(namespace),
            busy_timeout: self.busy_timeout,
        }))
    }
}

#[derive(Clone)]
pub(crate) struct SqliteBucket {
    connection: Arc<Mutex<Connection>>,
    namespace: Arc<str>,
    busy_timeout: Duration,
}

/// Marks its call abandoned when dropped before [`Abandon::finished`]: the caller's future
/// was dropped (its operation timeout), so the blocking work must not start, or stop waiting
/// for a lock and write nothing.
struct Abandon(Arc<AtomicBool>);

impl Abandon {
    fn finished(self) {
        std::mem::forget(self);
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The live condition on a row, as SQL (`?2` is now).
const LIVE: &str = "(exp IS NULL OR exp > ?2)";

impl SqliteBucket {
    /// Runs `work` on the connection in a blocking thread: SQLite calls block.
    pub(crate) async fn with<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    {
        let connection = self.connection.clone();
        let namespace = self.namespace.clone();
        let busy_timeout = self.busy_timeout;
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        let guard = Abandon(abandoned);
        let result = tokio::task::spawn_blocking(move || {
            let mut connection = lock(&connection);
            // Queued behind another call of this connection past the caller's patience.
            if flag.load(Ordering::Relaxed) {
                return Err(KvError::new(
                    kv_core::ErrorKind::Timeout,
                    "sqlite: the caller gave up before the call started; nothing was written",
                ));
            }
            let _scope = CallScope::enter(flag, busy_timeout);
            work(&mut connection, &namespace)
        })
        .await;
        guard.finished();
        result.map_err(|err| KvError::internal(format!("sqlite: the worker failed: {err}")))?
    }
}

fn write(
    connection: &Connection,
    namespace: &str,
    key: &str,
    value: &[u8],
    expires_at_ms: Option<i64>,
) -> Result<()> {
    connection
        .execute(
            "INSERT OR REPLACE INTO kv (ns, k, v, ver, exp) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![namespace, key, value, rand::random::<i64>(), expires_at_ms],
        )
        .map(drop)
        .map_err(|err| map_error("write", err))
}

/// A stored row: value, version and expiry in Unix ms.
type Row = (Vec<u8>, i64, Option<i64>);

/// The row of `key`, expired or not.
fn row(connection: &Connection, namespace: &str, key: &str) -> Result<Option<Row>> {
    connection
        .query_row(
            "SELECT v, ver, exp FROM kv WHERE ns = ?1 AND k = ?2",
            params![namespace, key],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(|err| map_error("read", err))
}

/// The recorded result of `request`, if it was applied.
fn applied(connection: &Connection, request: &str) -> Result<Option<String>> {
    connection
        .query_row(
            "SELECT result FROM kv_requests WHERE id = ?1",
            [request],
            |row| row.get(0),
        )
        .optional()
        .map_err(|err| map_error("request lookup", err))
}

fn record(connection: &Connection, request: &str, result: &str) -> Result<()> {
    connection
        .execute(
            "INSERT INTO kv_requests (id, result, at) VALUES (?1, ?2, ?3)",
            params![request, result, now()],
        )
        .map(drop)
        .map_err(|err| map_error("request record", err))
}

#[async_trait]
impl Bucket for SqliteBucket {
    fn change_feed(&self) -> Option<Arc<dyn kv_core::watch::ChangeFeed>> {
        Some(crate::changes::feed(self))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_string();
        self.with(move |connection, namespace| {
            connection
                .query_row(
                    &format!("SELECT v FROM kv WHERE ns = ?1 AND k = ?3 AND {LIVE}"),
                    params![namespace, now(), key],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|err| map_error("get", err))
        })
        .await
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<StoredValue>> {
        let key = key.to_string();
        self.with(move |connection, namespace| {
            let now = now();
            let row: Option<(Vec<u8>, Option<i64>)> = connection
                .query_row(
                    &format!("SELECT v, exp FROM kv WHERE ns = ?1 AND k = ?3 AND {LIVE}"),
                    params![namespace, now, key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(|err| map_error("get", err))?;
            Ok(row.and_then(|(value, expires_at)| {
                let expires_at = expires_at.map(|at| u64::try_from(at).unwrap_or(0));
                StoredValue::at(value, expires_at, u64::try_from(now).unwrap_or(0))
            }))
        })
        .await
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<()> {
        let key = key.to_string();
        self.with(move |connection, namespace| write(connection, namespace, &key, &value, None))
            .await
    }

    async fn set_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> Result<()> {
        let key = key.to_string();
        let at = i64::try_from(clock::expires_at_ms(ttl)).unwrap_or(i64::MAX);
        self.with(move |connection, namespace| write(connection, namespace, &key, &value, Some(at)))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.with(move |connection, namespace| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|err| map_error("delete", err))?;
            remove(&transaction, namespace, &key)?;
            transaction.commit().map_err(|err| map_error("delete", err))
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    /// A range scan in key order; the cursor is the last key returned, so every key that
    /// exists for the whole listing is returned exactly once.
    async fn list_keys(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage> {
        let after = cursor.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(1000);
        self.with(move |connection, namespace| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT k FROM kv WHERE ns = ?1 AND {LIVE} AND (?3 IS NULL OR k > ?3) \
                     ORDER BY k LIMIT ?4"
                ))
                .map_err(|err| map_error("list", err))?;
            let keys: Vec<String> = statement
                .query_map(params![namespace, now(), after, limit + 1], |row| {
                    row.get(0)
                })
                .map_err(|err| map_error("list", err))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|err| map_error("list", err))?;
            let mut keys = keys;
            let more = keys.len() > usize::try_from(limit).unwrap_or(usize::MAX);
            keys.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            let cursor = if more { keys.last().cloned() } else { None };
            Ok(KeyPage { keys, cursor })
        })
        .await
    }

    /// One immediate transaction: the request id is checked and recorded with the write, so
    /// a retry after a lost reply returns the first result.
    async fn increment(
        &self,
        key: &str,
        delta: i64,
        range: kv_core::CounterRange,
        attempt: &mut Attempt,
    ) -> Result<i64> {
        let key = key.to_string();
        let request = attempt.request().hex();
        self.with(move |connection, namespace| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|err| map_error("increment", err))?;
            if let Some(result) = applied(&transaction, &request)? {
                return result
                    .parse()
                    .map_err(|_| KvError::internal("sqlite: a recorded increment is not an i64"));
            }
            let now = now();
            let (current, expires) = match row(&transaction, namespace, &key)? {
                Some((value, _, exp)) if exp.is_none_or(|at| at > now) => {
                    (parse_counter(&value)?, exp)
                }
                _ => (0, None),
            };
            let next = add_delta_within(current, delta, range)?;
            write(
                &transaction,
                namespace,
                &key,
                &encode_counter(next),
                expires,
            )?;
            record(&transaction, &request, &next.to_string())?;
            transaction
                .commit()
                .map_err(|err| map_error("increment", err))?;
            Ok(next)
        })
        .await
    }

    /// A stored row's version is its own, expired or not (replacing an expired row is a
    /// change like any other). A missing key's version is `a<S>`, the deletion clock when its
    /// absence was seen, read in the same transaction.
    async fn read_versioned(&self, key: &str) -> Result<Versioned> {
        let key = key.to_string();
        self.with(move |connection, namespace| {
            let transaction = connection
                .transaction()
                .map_err(|err| map_error("cas read", err))?;
            Ok(match row(&transaction, namespace, &key)? {
                Some((value, ver, exp)) => Versioned {
                    value: exp.is_none_or(|at| at > now()).then_some(value),
                    version: Version::Tag(ver.to_string()),
                },
                None => {
                    let seq: i64 = transaction
                        .query_row("SELECT seq FROM kv_clock WHERE id = 0", [], |row| {
                            row.get(0)
                        })
                        .map_err(|err| map_error("cas read", err))?;
                    Versioned {
                        value: None,
                        version: Version::Tag(format!("{ABSENT_SINCE}{seq}")),
                    }
                }
            })
        })
        .await
    }

    async fn swap(
        &self,
        key: &str,
        expected: &Version,
        value: Bytes,
        attempt: &mut Attempt,
    ) -> Result<SwapOutcome> {
        let key = key.to_string();
        let expected = expected.clone();
        let request = attempt.request().hex();
        self.with(move |connection, namespace| {
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|err| map_error("swap", err))?;
            if applied(&transaction, &request)?.is_some() {
                return Ok(SwapOutcome::Swapped);
            }
            let current = row(&transaction, namespace, &key)?;
            let unchanged = match (&expected, current) {
                // Absence seen at clock `since`: still no row, and none deleted since.
                (Version::Tag(tag), None) => match tag.strip_prefix(ABSENT_SINCE) {
                    Some(since) => match since.parse() {
                        Ok(since) => !deleted_since(&transaction, namespace, &key, since)?,
                        Err(_) => false,
                    },
                    None => false,
                },
                (Version::Tag(tag), Some((_, ver, _))) => *tag == ver.to_string(),
                // A version from no read (an embedder's "insert if missing"): no live row.
                (Version::Absent, row) => {
                    row.is_none_or(|(_, _, exp)| exp.is_some_and(|at| at <= now()))
                }
            };
            if !unchanged {
                return Ok(SwapOutcome::Conflict);
            }
            write(&transaction, namespace, &key, &value, None)?;
            record(&transaction, &request, "swapped")?;
            transaction.commit().map_err(|err| map_error("swap", err))?;
            Ok(SwapOutcome::Swapped)
        })
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys = keys.to_vec();
        self.with(move |connection, namespace| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT v FROM kv WHERE ns = ?1 AND k = ?3 AND {LIVE}"
                ))
                .map_err(|err| map_error("get-many", err))?;
            let now = now();
            keys.iter()
                .map(|key| {
                    statement
                        .query_row(params![namespace, now, key], |row| row.get(0))
                        .optional()
                        .map_err(|err| map_error("get-many", err))
                })
                .collect()
        })
        .await
    }

    /// One transaction: all entries or none.
    async fn set_many(&self, entries: &[(String, Bytes)]) -> Result<()> {
        // The worker thread needs its own handles (the values are shared, not copied).
        let entries: Vec<(String, Bytes)> =
            last_entry_per_key(entries).into_iter().cloned().collect();
        self.with(move |connection, namespace| {
            let transaction = connection
                .transaction()
                .map_err(|err| map_error("set-many", err))?;
            for (key, value) in &entries {
                write(&transaction, namespace, key, value, None)?;
            }
            transaction
                .commit()
                .map_err(|err| map_error("set-many", err))
        })
        .await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let keys = keys.to_vec();
        self.with(move |connection, namespace| {
            let transaction = connection
                .transaction()
                .map_err(|err| map_error("delete-many", err))?;
            for key in &keys {
                remove(&transaction, namespace, key)?;
            }
            transaction
                .commit()
                .map_err(|err| map_error("delete-many", err))
        })
        .await
    }
}
