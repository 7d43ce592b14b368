//! The change feed (`wasi-kv watch`): triggers write every change of the `kv` table into
//! `kv_changes` in the writer's own transaction, numbered by an `AUTOINCREMENT` sequence that
//! never goes back. A watcher reads its namespace's rows after its checkpoint, so it sees
//! changes made by any process sharing the file, and a restarted watcher resumes where it
//! stopped. The sweeper trims rows older than [`CHANGE_RETENTION_MS`]; a watcher whose
//! checkpoint is older than the trim gets a gap, and resynchronises.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kv_core::watch::{
    Change, ChangeFeed, Changes, Position, parse_sequence_position, sequence_position,
};
use kv_core::{KvError, Result, clock};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::error::map_error;
use crate::store::SqliteBucket;

/// How long the log keeps a change: a watcher down for longer resynchronises.
pub const CHANGE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// How often a waiting feed looks again: another process's write wakes nothing here.
const POLL: Duration = Duration::from_millis(50);

/// How often a feed deletes expired keys itself (so their deletes reach the log), besides the
/// provider's sweeper.
const EXPIRY_INTERVAL_MS: i64 = 1_000;

/// Milliseconds since the Unix epoch, as SQL.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// The triggers: a write logs the value it wrote, a delete (or expiry) a NULL. `INSERT OR
/// REPLACE` fires only the insert trigger (recursive triggers are off), so an overwrite is one
/// change.
fn triggers() -> String {
    format!(
        "CREATE TRIGGER IF NOT EXISTS kv_changes_insert AFTER INSERT ON kv BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (NEW.ns, NEW.k, NEW.v, {NOW_MS}); \
         END; \
         CREATE TRIGGER IF NOT EXISTS kv_changes_update AFTER UPDATE ON kv BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (NEW.ns, NEW.k, NEW.v, {NOW_MS}); \
         END; \
         CREATE TRIGGER IF NOT EXISTS kv_changes_delete AFTER DELETE ON kv BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (OLD.ns, OLD.k, NULL, {NOW_MS}); \
         END;"
    )
}

/// One namespace's changes.
pub(crate) struct SqliteFeed {
    bucket: SqliteBucket,
    /// The triggers exist (created by the first call).
    logging: AtomicBool,
    /// When this feed last deleted expired keys.
    expired_at: AtomicI64,
}

impl SqliteFeed {
    pub(crate) fn new(bucket: SqliteBucket) -> SqliteFeed {
        SqliteFeed {
            bucket,
            logging: AtomicBool::new(false),
            expired_at: AtomicI64::new(0),
        }
    }

    async fn start_logging(&self) -> Result<()> {
        if self.logging.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.bucket
            .with(|connection, _| {
                connection
                    .execute_batch(&triggers())
                    .map_err(|err| map_error("watch", err))
            })
            .await?;
        self.logging.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes expired keys at most every [`EXPIRY_INTERVAL_MS`], so an expiry is reported
    /// within about a second while a watcher waits.
    async fn expire_due(&self) -> Result<()> {
        let now = now();
        let last = self.expired_at.load(Ordering::Relaxed);
        if now - last < EXPIRY_INTERVAL_MS {
            return Ok(());
        }
        self.expired_at.store(now, Ordering::Relaxed);
        self.bucket
            .with(|connection, _| crate::store::expire(connection))
            .await
    }

    /// One look: the changes after `after`, or a gap, or (`Err`) none yet with the file's
    /// last change.
    async fn look(
        &self,
        after: i64,
        max: usize,
        max_bytes: usize,
    ) -> Result<std::result::Result<Changes, i64>> {
        self.bucket
            .with(move |connection, namespace| read(connection, namespace, after, max, max_bytes))
            .await
    }
}

/// Reads in one transaction, so the head, the trim mark and the rows agree: the changes or a
/// gap, or (`Err`) the file's last change when this namespace has none after `after`.
fn read(
    connection: &mut Connection,
    namespace: &str,
    after: i64,
    max: usize,
    max_bytes: usize,
) -> Result<std::result::Result<Changes, i64>> {
    let failed = |err| map_error("watch", err);
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(failed)?;
    let head = head(&transaction)?;
    let trimmed: i64 = transaction
        .query_row(
            "SELECT through FROM kv_changes_trimmed WHERE id = 0",
            [],
            |row| row.get(0),
        )
        .map_err(failed)?;
    if after < trimmed || after > head {
        let why = if after < trimmed {
            format!(
                "changes up to {trimmed} were trimmed (kept {} h), the watcher stood at {after}",
                CHANGE_RETENTION_MS / 3_600_000
            )
        } else {
            format!("position {after} is past this database's last change {head} (another file?)")
        };
        return Ok(Ok(Changes::Gap {
            position: sequence_position(head as u64),
            why,
        }));
    }
    let mut statement = transaction
        .prepare_cached(
            "SELECT seq, k, v FROM kv_changes WHERE ns = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(failed)?;
    let mut rows = statement
        .query(params![namespace, after, max.max(1) as i64])
        .map_err(failed)?;
    let mut changes = Vec::new();
    let mut bytes = 0;
    let mut last = after;
    while let Some(row) = rows.next().map_err(failed)? {
        let seq: i64 = row.get(0).map_err(failed)?;
        let key: String = row.get(1).map_err(failed)?;
        let value: Option<Vec<u8>> = row.get(2).map_err(failed)?;
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if !changes.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        last = seq;
        changes.push(match value {
            Some(value) => Change::Set { key, value },
            None => Change::Delete { key },
        });
    }
    if changes.is_empty() {
        return Ok(Err(head));
    }
    Ok(Ok(Changes::Next {
        changes,
        position: sequence_position(last as u64),
    }))
}

/// The number of the last change ever logged (0 before the first).
fn head(connection: &Connection) -> Result<i64> {
    connection
        .query_row(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kv_changes'), 0)",
            [],
            |row| row.get(0),
        )
        .or_else(|err| match err {
            // No change was ever logged, so SQLite has not made its sequence table yet.
            rusqlite::Error::SqliteFailure(_, Some(ref message))
                if message.contains("no such table") =>
            {
                Ok(0)
            }
            err => Err(map_error("watch", err)),
        })
}

/// Trims changes older than the retention (the sweeper's part), remembering how far.
pub(crate) fn trim(connection: &Connection, now: i64) -> Result<()> {
    let horizon = now.saturating_sub(CHANGE_RETENTION_MS);
    let failed = |err| map_error("sweep", err);
    connection
        .execute(
            "UPDATE kv_changes_trimmed SET through = MAX(through, \
             COALESCE((SELECT MAX(seq) FROM kv_changes WHERE at < ?1), 0)) WHERE id = 0",
            [horizon],
        )
        .map_err(failed)?;
    connection
        .execute("DELETE FROM kv_changes WHERE at < ?1", [horizon])
        .map_err(failed)?;
    Ok(())
}

fn now() -> i64 {
    i64::try_from(clock::now_ms()).unwrap_or(i64::MAX)
}

#[async_trait]
impl ChangeFeed for SqliteFeed {
    async fn head(&self) -> Result<Position> {
        self.start_logging().await?;
        let head = self.bucket.with(|connection, _| head(connection)).await?;
        Ok(sequence_position(head as u64))
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        let after = i64::try_from(parse_sequence_position(after)?).map_err(|_| {
            KvError::new(
                kv_core::ErrorKind::InvalidCursor,
                "a change position beyond SQLite's sequence",
            )
        })?;
        self.start_logging().await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.expire_due().await?;
            let head = match self.look(after, max, max_bytes).await? {
                Ok(found) => return Ok(found),
                Err(head) => head,
            };
            if tokio::time::Instant::now() + POLL > deadline {
                // Other namespaces' changes up to the head are no concern of this watcher:
                // it goes on from there. Only at the end of the wait, so that a watcher whose
                // own checkpoints are written to this file (another namespace) moves on once
                // per wait, not once per checkpoint.
                return Ok(Changes::Next {
                    changes: Vec::new(),
                    position: sequence_position(head.max(after) as u64),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The change feed of `bucket`'s namespace.
pub(crate) fn feed(bucket: &SqliteBucket) -> Arc<dyn ChangeFeed> {
    Arc::new(SqliteFeed::new(bucket.clone()))
}
