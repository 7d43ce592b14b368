//! Every Cloud Storage error mapped to the contract's classes, in one place.

use gcloud_storage::http::Error;
use gcloud_storage::http::error::ErrorResponse;
use kv_core::error::{classify_http_status, describe_http_status};
use kv_core::{ErrorKind, KvError};

/// The HTTP status of an error answer, if it is one.
pub fn status(err: &Error) -> Option<u16> {
    match err {
        Error::Response(response) => Some(response.code),
        Error::HttpClient(err) | Error::RawResponse(err, _) => err.status().map(|s| s.as_u16()),
        _ => None,
    }
}

/// Maps an error of operation `op` (404 and 412 are handled by the callers).
pub fn map_error(op: &str, err: Error) -> KvError {
    let code = status(&err);
    if let Some((kind, transient)) = code.and_then(classify_http_status) {
        let message = format!(
            "gcs {op}: {}",
            describe_http_status(code.unwrap_or_default())
        );
        return KvError::new(kind, message)
            .with_transient(transient)
            .with_source(err);
    }
    let (kind, transient, message) = match (&err, code) {
        (_, Some(404)) => (
            ErrorKind::Internal,
            false,
            format!("gcs {op}: bucket or object not found"),
        ),
        (Error::HttpClient(inner) | Error::RawResponse(inner, _), None) if inner.is_timeout() => (
            ErrorKind::Timeout,
            true,
            format!("gcs {op}: no answer in time"),
        ),
        (Error::HttpClient(_) | Error::RawResponse(_, _) | Error::HttpMiddleware(_), None) => (
            ErrorKind::Unavailable,
            true,
            format!("gcs {op}: cannot reach the endpoint"),
        ),
        (Error::TokenSource(_), _) => (
            ErrorKind::Unavailable,
            true,
            format!("gcs {op}: credentials unavailable"),
        ),
        (_, code) => (
            ErrorKind::Internal,
            false,
            format!("gcs {op}: unexpected error ({code:?})"),
        ),
    };
    KvError::new(kind, message)
        .with_transient(transient)
        .with_source(err)
}

/// Maps an HTTP status answered outside the SDK (a batch request, or one part of its answer)
/// exactly as [`map_error`] maps the same status from the SDK. `detail` (the answer's body) is
/// kept in the source chain for logs only.
pub fn map_status(op: &str, code: u16, detail: &str) -> KvError {
    let message: String = detail.chars().take(300).collect();
    map_error(
        op,
        Error::Response(ErrorResponse {
            code,
            errors: Vec::new(),
            message,
        }),
    )
}

/// Maps a transport error of a request sent outside the SDK, as [`map_error`] maps the SDK's.
pub fn map_http(op: &str, err: reqwest::Error) -> KvError {
    map_error(op, Error::HttpClient(err))
}

/// Maps a failure of the credentials' token source, as [`map_error`] maps the SDK's.
pub fn map_token(op: &str, err: Box<dyn std::error::Error + Send + Sync>) -> KvError {
    map_error(op, Error::TokenSource(err))
}
