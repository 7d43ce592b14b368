//! The change feed (`wasi-kv watch`): triggers write every change of a watched namespace
//! into `kv_changes` in the writer's own transaction, numbered by an `AUTOINCREMENT` sequence
//! that never goes back (one writer at a time: the numbers are the commit order). A watcher
//! reads its namespace's rows after its checkpoint, so it sees changes made by any process
//! sharing the file, and a restarted watcher resumes where it stopped. The sweeper trims rows
//! older than [`CHANGE_RETENTION_MS`]; a checkpoint older than the trim, or of another file
//! (the file's log id is in every position), is a gap, and the watcher resynchronises.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kv_core::watch::{Change, ChangeFeed, Changes, Logged, Position};
use kv_core::{Result, clock};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

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

/// The triggers, for the namespaces in `kv_watched` only: a write logs the value it wrote, a
/// delete (or expiry) a NULL. `INSERT OR REPLACE` fires only the insert triggers (recursive
/// triggers are off), so an overwrite is one change; one that replaces a row that had expired
/// but was not yet swept logs that expiry first.
fn triggers() -> String {
    let watched = "NEW.ns IN (SELECT ns FROM kv_watched)";
    format!(
        "CREATE TRIGGER IF NOT EXISTS kv_changes_expired BEFORE INSERT ON kv \
             WHEN {watched} AND EXISTS (SELECT 1 FROM kv WHERE ns = NEW.ns AND k = NEW.k \
                 AND exp IS NOT NULL AND exp <= {NOW_MS}) BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (NEW.ns, NEW.k, NULL, {NOW_MS}); \
         END; \
         CREATE TRIGGER IF NOT EXISTS kv_changes_insert AFTER INSERT ON kv WHEN {watched} BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (NEW.ns, NEW.k, NEW.v, {NOW_MS}); \
         END; \
         CREATE TRIGGER IF NOT EXISTS kv_changes_update AFTER UPDATE ON kv WHEN {watched} BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (NEW.ns, NEW.k, NEW.v, {NOW_MS}); \
         END; \
         CREATE TRIGGER IF NOT EXISTS kv_changes_delete AFTER DELETE ON kv \
             WHEN OLD.ns IN (SELECT ns FROM kv_watched) BEGIN \
             INSERT INTO kv_changes (ns, k, v, at) VALUES (OLD.ns, OLD.k, NULL, {NOW_MS}); \
         END;"
    )
}

/// One namespace's changes.
pub(crate) struct SqliteFeed {
    bucket: SqliteBucket,
    /// The namespace is in `kv_watched` and the triggers exist (done by the first call).
    logging: AtomicBool,
    /// When this feed last looked for expired keys.
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
            .with(|connection, namespace| {
                let failed = |err| map_error("watch", err);
                let transaction = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(failed)?;
                transaction
                    .execute(
                        "INSERT OR IGNORE INTO kv_watched (ns) VALUES (?1)",
                        [namespace],
                    )
                    .map_err(failed)?;
                transaction.execute_batch(&triggers()).map_err(failed)?;
                transaction.commit().map_err(failed)
            })
            .await?;
        self.logging.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes expired keys at most every [`EXPIRY_INTERVAL_MS`], so an expiry is reported
    /// within about a second while a watcher waits. A failure (another process holding the
    /// lock past the busy timeout) is only logged: the next look, or the sweeper, does it.
    async fn expire_due(&self) {
        let now = now();
        let last = self.expired_at.load(Ordering::Relaxed);
        if now - last < EXPIRY_INTERVAL_MS {
            return;
        }
        self.expired_at.store(now, Ordering::Relaxed);
        let expired = self
            .bucket
            .with(|connection, _| crate::store::expire(connection))
            .await;
        if let Err(err) = expired {
            tracing::warn!(error = %err.chain(), "sqlite: deleting expired keys for a watcher failed");
        }
    }

    /// One look: the changes after `after`, or a gap, or (`Err`) none yet with the position of
    /// the file's last change.
    async fn look(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
    ) -> Result<std::result::Result<Changes, Position>> {
        let after = after.clone();
        self.bucket
            .with(move |connection, namespace| read(connection, namespace, &after, max, max_bytes))
            .await
    }
}

/// The log's id, its trim mark and its last change.
fn log_state(connection: &Connection) -> Result<(String, i64, i64)> {
    let failed = |err| map_error("watch", err);
    let (log, trimmed): (String, i64) = connection
        .query_row(
            "SELECT log, through FROM kv_changes_trimmed WHERE id = 0",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(failed)?;
    // SQLite makes `sqlite_sequence` with the first AUTOINCREMENT row.
    let has_sequence: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
            [],
            |row| row.get(0),
        )
        .map_err(failed)?;
    let head = if has_sequence {
        connection
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'kv_changes'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map_err(failed)?
            .unwrap_or(0)
    } else {
        0
    };
    Ok((log, trimmed, head))
}

/// Reads in one transaction, so the head, the trim mark and the rows agree: the changes or a
/// gap, or (`Err`) the position of the file's last change when this namespace has none after
/// `after`.
fn read(
    connection: &mut Connection,
    namespace: &str,
    after: &Position,
    max: usize,
    max_bytes: usize,
) -> Result<std::result::Result<Changes, Position>> {
    let failed = |err| map_error("watch", err);
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(failed)?;
    let (log, trimmed, head) = log_state(&transaction)?;
    let number = after.number_in(&log).and_then(|n| i64::try_from(n).ok());
    let Some(after) = number.filter(|number| (trimmed..=head).contains(number)) else {
        let why = match number {
            Some(number) if number < trimmed => format!(
                "changes up to {trimmed} were trimmed (kept {} h); the watcher stood at {number}",
                CHANGE_RETENTION_MS / 3_600_000
            ),
            Some(number) => format!("position {number} is past this log's last change {head}"),
            None => format!(
                "the position {after} is not of this file's log ({log}): another file, or one \
                 made again"
            ),
        };
        return Ok(Ok(Changes::Gap {
            position: Position::numbered(&log, head as u64),
            why,
        }));
    };
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
    while let Some(row) = rows.next().map_err(failed)? {
        let seq: i64 = row.get(0).map_err(failed)?;
        // Keys this host writes are UTF-8; another tool's bytes are passed on, replaced
        // where invalid, rather than stop the watcher for good.
        let key = row.get_ref(1).map_err(failed)?;
        let key =
            String::from_utf8_lossy(key.as_bytes().map_err(|err| failed(err.into()))?).into_owned();
        let value: Option<Vec<u8>> = row.get(2).map_err(failed)?;
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if !changes.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        let change = match value {
            Some(value) => Change::Set { key, value },
            None => Change::Delete { key },
        };
        changes.push(Logged {
            change,
            position: Position::numbered(&log, seq as u64),
        });
    }
    let Some(last) = changes.last() else {
        return Ok(Err(Position::numbered(&log, head as u64)));
    };
    let position = last.position.clone();
    Ok(Ok(Changes::Next { changes, position }))
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
        let (log, _, head) = self
            .bucket
            .with(|connection, _| log_state(connection))
            .await?;
        Ok(Position::numbered(&log, head as u64))
    }

    async fn changes_after(
        &self,
        after: &Position,
        max: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Changes> {
        self.start_logging().await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.expire_due().await;
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
                    position: head,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The change feed of `bucket`'s namespace.
pub(crate) fn feed(bucket: &SqliteBucket) -> std::sync::Arc<dyn ChangeFeed> {
    std::sync::Arc::new(SqliteFeed::new(bucket.clone()))
}
