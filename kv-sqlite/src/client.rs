//! Opening the database: WAL mode (readers never wait for the writer), a busy timeout (several
//! processes may share the file), and the schema.

use rusqlite::Connection;

use crate::config::SqliteConfig;
use crate::error::map_error;
use kv_core::Result;

/// The schema: one table of keys, one of applied request ids (exactly-once increments and
/// swaps). Keys of a namespace are contiguous in the primary key, so listing is a range scan.
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
