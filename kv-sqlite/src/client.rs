//! Opening the database: WAL mode (readers never wait for the writer), a busy timeout (several
//! processes may share the file), and the schema.

use rusqlite::Connection;

use crate::config::SqliteConfig;
use crate::error::map_error;
use kv_core::Result;

/// The schema: one table of keys, one of applied request ids (exactly-once increments and
/// swaps), and the tombstones of deleted keys with the deletion clock that gives absence a
/// version (compare-and-swap without ABA). Keys of a namespace are contiguous in the primary
/// key, so listing is a range scan.
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
";

/// Opens (creating if needed) the database file and its schema.
pub fn open(config: &SqliteConfig) -> Result<Connection> {
    let connection = Connection::open(&config.path).map_err(|err| map_error("open", err))?;
    connection
        .busy_timeout(config.busy_timeout)
        .map_err(|err| map_error("busy timeout", err))?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(|err| map_error("WAL mode", err))?;
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(|err| map_error("synchronous", err))?;
    connection
        .execute_batch(SCHEMA)
        .map_err(|err| map_error("schema", err))?;
    Ok(connection)
}
