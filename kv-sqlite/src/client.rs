//! Opening the database: WAL mode (readers never wait for the writer), a busy handler
//! (several processes may share the file), and the schema.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::config::SqliteConfig;
use crate::error::map_error;
use kv_core::Result;

/// The schema: one table of keys, one of applied request ids (exactly-once increments and
/// swaps), and the tombstones of deleted keys with the deletion clock that gives absence a
/// version (compare-and-swap without ABA). Keys of a namespace are contiguous in the primary
/// key, so listing is a range scan. The change log (`kv_changes`) logs only the namespaces
/// listed in `kv_watched`, which a watcher adds when it starts (`changes.rs`).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    ns  TEXT    NOT NULL,
    k   TEXT    NOT NULL,
    v   BLOB    NOT NULL,
    ver INTEGER NOT NULL,
    exp INTEGER,
    PRIMARY KEY (ns, k)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_exp ON kv (exp) WHERE exp IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_requests (
    id     TEXT    PRIMARY KEY,
    result TEXT    NOT NULL,
    at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_deleted (
    ns  TEXT    NOT NULL,
    k   TEXT    NOT NULL,
    seq INTEGER NOT NULL,
    at  INTEGER NOT NULL,
    PRIMARY KEY (ns, k)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_deleted_at ON kv_deleted (at);
CREATE TABLE IF NOT EXISTS kv_clock (
    id        INTEGER PRIMARY KEY CHECK (id = 0),
    seq       INTEGER NOT NULL,
    forgotten INTEGER NOT NULL
);
INSERT OR IGNORE INTO kv_clock (id, seq, forgotten) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS kv_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ns  TEXT    NOT NULL,
    k   TEXT    NOT NULL,
    v   BLOB,
    at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_changes_ns ON kv_changes (ns, seq);
CREATE TABLE IF NOT EXISTS kv_changes_trimmed (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    through INTEGER NOT NULL,
    log     TEXT    NOT NULL
);
INSERT OR IGNORE INTO kv_changes_trimmed (id, through, log)
    VALUES (0, 0, lower(hex(randomblob(8))));
CREATE TABLE IF NOT EXISTS kv_watched (
    ns TEXT PRIMARY KEY
) WITHOUT ROWID;
";

/// How often a call waiting for another connection's lock looks again.
const BUSY_POLL: Duration = Duration::from_millis(2);

thread_local! {
    /// The call this blocking thread runs: whether its caller gave up, and when to stop waiting
    /// for a lock held by another connection.
    static CALL: RefCell<Option<(Arc<AtomicBool>, Instant)>> = const { RefCell::new(None) };
}

/// While alive, the calls on this thread wait for locks until `busy_timeout` has passed, or
/// until the caller gives up (`abandoned`): a caller that timed out must not find its write
/// committed later, after it was told the outcome is unknown and the checkers stopped waiting
/// for it (docs/semantics.md S4).
pub struct CallScope;

impl CallScope {
    /// Enters the scope of one call on this thread.
    pub fn enter(abandoned: Arc<AtomicBool>, busy_timeout: Duration) -> CallScope {
        CALL.with(|call| *call.borrow_mut() = Some((abandoned, Instant::now() + busy_timeout)));
        CallScope
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        CALL.with(|call| *call.borrow_mut() = None);
    }
}

/// SQLite's busy handler once the file is open: `true` waits and tries again, `false` fails the
/// statement with `SQLITE_BUSY`. Outside a call (the sweeper) it waits up to the default
/// timeout.
fn wait_for_lock(attempts: i32) -> bool {
    let wait = CALL.with(|call| match &*call.borrow() {
        Some((abandoned, deadline)) => {
            !abandoned.load(Ordering::Relaxed) && Instant::now() < *deadline
        }
        None => BUSY_POLL * u32::try_from(attempts).unwrap_or(u32::MAX) < DEFAULT_BUSY_TIMEOUT,
    });
    if wait {
        std::thread::sleep(BUSY_POLL);
    }
    wait
}

/// How long opening and the sweeper wait for another connection's lock (at least).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL mode, the sync level and the schema, each idempotent; the failed step's name.
fn set_up(connection: &Connection) -> std::result::Result<(), (&'static str, rusqlite::Error)> {
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(|err| ("WAL mode", err))?;
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(|err| ("synchronous", err))?;
    connection
        .execute_batch(SCHEMA)
        .map_err(|err| ("schema", err))
}

/// Whether `err` is another connection's lock (`SQLITE_BUSY`, `SQLITE_LOCKED`).
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Opens (creating if needed) the database file and its schema.
pub fn open(config: &SqliteConfig) -> Result<Connection> {
    let mut connection = Connection::open(&config.path).map_err(|err| map_error("open", err))?;
    // SQLite's own busy timeout while the file is set up (switching to WAL while other
    // processes open it needs it); the handler that knows its caller afterwards.
    connection
        .busy_timeout(DEFAULT_BUSY_TIMEOUT.max(config.busy_timeout))
        .map_err(|err| map_error("busy timeout", err))?;
    // A connection that meets another one switching the new file to WAL gets SQLITE_BUSY at
    // once, without the busy timeout: the set-up is tried again until the timeout has passed.
    let deadline = Instant::now() + DEFAULT_BUSY_TIMEOUT.max(config.busy_timeout);
    let mut attempt: u32 = 0;
    loop {
        match set_up(&connection) {
            Ok(()) => break,
            Err((_, err)) if is_busy(&err) && Instant::now() < deadline => {
                attempt += 1;
                std::thread::sleep(BUSY_POLL * attempt.min(10));
            }
            Err((step, err)) => return Err(map_error(step, err)),
        }
    }
    connection
        .busy_handler(Some(wait_for_lock))
        .map_err(|err| map_error("busy handler", err))?;
    Ok(connection)
}
