//! Every SQLite error mapped to the contract's classes, in one place.

use kv_core::{ErrorKind, KvError};
use rusqlite::ErrorCode;

/// Maps an error of operation `op`.
pub fn map_error(op: &str, err: rusqlite::Error) -> KvError {
    let code = err.sqlite_error_code();
    let (kind, transient, message) = match code {
        // Another process held the write lock for longer than the busy timeout.
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            ErrorKind::Unavailable,
            true,
            format!("sqlite {op}: the database is locked by another writer"),
        ),
        Some(ErrorCode::TooBig) => (
            ErrorKind::ValueTooLarge,
            false,
            format!("sqlite {op}: the value is too large"),
        ),
        Some(ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::ReadOnly) => (
            ErrorKind::Unavailable,
            false,
            format!("sqlite {op}: the database file cannot be written"),
        ),
        _ => (
            ErrorKind::Internal,
            false,
            format!("sqlite {op}: unexpected error"),
        ),
    };
    KvError::new(kind, message)
        .with_transient(transient)
        .with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_unavailable_and_retried() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let err = map_error("set", busy);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
        let err = map_error("get", rusqlite::Error::InvalidQuery);
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
}
