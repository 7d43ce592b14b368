//! Every Redis error mapped to the contract's classes, in one place.

use kv_core::{ErrorKind, KvError};
use redis::{RedisError, ServerErrorKind};

/// Maps a Redis error; `op` names the operation for the message.
pub fn map_error(op: &str, err: RedisError) -> KvError {
    let err = unwrap_pipeline(err);
    let detail = err.detail().unwrap_or("").to_ascii_lowercase();
    let (kind, transient, message) = match err.kind() {
        redis::ErrorKind::Server(ServerErrorKind::ResponseError)
            if detail.contains("not an integer") =>
        {
            (
                ErrorKind::NotAnInteger,
                false,
                "the stored value is not an ASCII decimal i64".to_string(),
            )
        }
        redis::ErrorKind::Server(ServerErrorKind::ResponseError) if detail.contains("overflow") => {
            (
                ErrorKind::Overflow,
                false,
                "the increment leaves the i64 range".to_string(),
            )
        }
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => (
            ErrorKind::Unavailable,
            true,
            format!("redis {op}: the server cannot serve the request now"),
        ),
        redis::ErrorKind::AuthenticationFailed
        | redis::ErrorKind::Server(ServerErrorKind::NoPerm) => (
            ErrorKind::Internal,
            false,
            format!("redis {op}: authentication or permission denied"),
        ),
        // `maxmemory` reached under `noeviction`: the server refuses every write, and applied
        // nothing. Not retried: memory comes back only when someone frees it.
        _ if err.code() == Some("OOM") || detail.starts_with("oom ") => (
            ErrorKind::Internal,
            false,
            format!(
                "redis {op}: the server is out of memory (maxmemory reached) and refused the \
                 write; nothing was written"
            ),
        ),
        _ if err.is_timeout() => (
            ErrorKind::Timeout,
            true,
            format!("redis {op}: no reply in time"),
        ),
        _ if err.is_connection_refusal() || err.is_connection_dropped() || err.is_io_error() => (
            ErrorKind::Unavailable,
            true,
            format!("redis {op}: cannot reach the server"),
        ),
        _ => (
            ErrorKind::Internal,
            false,
            format!("redis {op}: unexpected error"),
        ),
    };
    KvError::new(kind, message)
        .with_transient(transient)
        .with_source(err)
}

/// Maps the error a script reports as data for one of several operations it made (a server
/// error reply such as `ERR value is not an integer or out of range`), classified like the
/// same reply to a command.
pub fn map_script_error(op: &str, reply: &str) -> KvError {
    let code = reply.split_whitespace().next().unwrap_or("ERR");
    let detail = reply.get(code.len()..).unwrap_or("").trim_start();
    let kind = match code {
        "LOADING" => ServerErrorKind::BusyLoading,
        "TRYAGAIN" => ServerErrorKind::TryAgain,
        "CLUSTERDOWN" => ServerErrorKind::ClusterDown,
        "MASTERDOWN" => ServerErrorKind::MasterDown,
        "READONLY" => ServerErrorKind::ReadOnly,
        "NOPERM" => ServerErrorKind::NoPerm,
        _ => ServerErrorKind::ResponseError,
    };
    map_error(
        op,
        RedisError::from((
            redis::ErrorKind::Server(kind),
            "script",
            format!("{code} {detail}"),
        )),
    )
}

/// A pipeline (a write and its `WAIT`) fails with the failed command's server error inside;
/// that error is the one to classify.
fn unwrap_pipeline(err: RedisError) -> RedisError {
    if err.detail().is_some() {
        return err;
    }
    match err.clone().into_server_errors().as_deref() {
        Some([(_, first), ..]) => RedisError::from(first.clone()),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(detail: &'static str) -> RedisError {
        RedisError::from((
            redis::ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR",
            detail.to_string(),
        ))
    }

    #[test]
    fn script_errors_are_classified_like_replies() {
        let err = map_script_error("INCRBY", "ERR value is not an integer or out of range");
        assert_eq!(err.kind(), ErrorKind::NotAnInteger);
        let err = map_script_error("INCRBY", "ERR increment or decrement would overflow");
        assert_eq!(err.kind(), ErrorKind::Overflow);
        let err = map_script_error(
            "INCRBY",
            "READONLY You can't write against a read only replica.",
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient(), "a failover is retried");
    }

    #[test]
    fn increment_errors_are_classified() {
        let err = map_error("incrby", server("value is not an integer or out of range"));
        assert_eq!(err.kind(), ErrorKind::NotAnInteger);
        let err = map_error("incrby", server("increment or decrement would overflow"));
        assert_eq!(err.kind(), ErrorKind::Overflow);
        let oom = "OOM command not allowed when used memory > 'maxmemory'.";
        for err in [
            map_script_error("INCRBY", oom),
            map_error(
                "incrby",
                RedisError::from((
                    redis::ErrorKind::Server(ServerErrorKind::ResponseError),
                    "script",
                    oom.to_string(),
                )),
            ),
        ] {
            assert_eq!(err.kind(), ErrorKind::Internal);
            assert!(err.to_string().contains("out of memory"), "{err}");
            assert!(!err.is_transient() && !err.may_have_applied());
        }
        let err = map_error("get", server("something else"));
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(!err.is_transient());
    }

    #[test]
    fn connection_errors_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = map_error("get", RedisError::from(io));
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
    }
}
