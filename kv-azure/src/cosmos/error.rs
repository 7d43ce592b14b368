//! Every Cosmos DB SDK error mapped to the contract's classes, in one place.

use azure_data_cosmos::CosmosError;
use kv_core::error::{classify_http_status, describe_http_status};
use kv_core::{ErrorKind, KvError};

/// What an SDK error means for the operation that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 404: the item (or container) is not there.
    NotFound,
    /// 409: an item with that id already exists (create).
    Exists,
    /// 412: the ETag no longer matches (replace/delete with If-Match).
    Changed,
    /// Anything else: a real failure, mapped by [`map_error`].
    Failure,
}

/// Classifies `err` for control flow (expected outcomes are not errors to the caller).
pub fn outcome(err: &CosmosError) -> Outcome {
    let status = err.status();
    if status.is_not_found() {
        Outcome::NotFound
    } else if status.is_conflict() {
        Outcome::Exists
    } else if status.is_precondition_failed() {
        Outcome::Changed
    } else {
        Outcome::Failure
    }
}

/// Maps an SDK error of operation `op` to the contract's classes. Throttling is not retried by
/// the driver (its throttle retries are off); the service's `x-ms-retry-after-ms` travels in
/// the error, and the host's retry waits at least that long.
pub fn map_error(op: &str, err: CosmosError) -> KvError {
    let status = err.status();
    let code = u16::from(status.status_code());
    let (kind, transient, text) = if status.is_throttled() {
        (
            ErrorKind::Throttled,
            true,
            format!("cosmos {op}: throttled (429, request rate too large)"),
        )
    } else if status.is_timeout() || status.is_transport_generated_503() {
        let (kind, text) = if status.is_timeout() {
            (ErrorKind::Timeout, "no answer in time".to_string())
        } else {
            (
                ErrorKind::Unavailable,
                format!("the service is unavailable ({})", status_text(&err)),
            )
        };
        (kind, true, format!("cosmos {op}: {text}"))
    } else if let Some((kind, transient)) = classify_http_status(code) {
        (
            kind,
            transient,
            format!(
                "cosmos {op}: {} ({})",
                describe_http_status(code),
                status_text(&err)
            ),
        )
    } else if status.is_not_found() {
        (
            ErrorKind::Internal,
            false,
            format!(
                "cosmos {op}: the database or container does not exist \
                 (create it, or set create_container = true)"
            ),
        )
    } else {
        (
            ErrorKind::Internal,
            false,
            format!("cosmos {op}: unexpected answer {}", status_text(&err)),
        )
    };
    let retry_after = err
        .response()
        .and_then(|response| response.headers().retry_after_ms)
        .map(std::time::Duration::from_millis);
    let mapped = KvError::new(kind, text).with_transient(transient);
    let mapped = match retry_after {
        Some(delay) => mapped.with_retry_after(delay),
        None => mapped,
    };
    mapped.with_source(err)
}

fn status_text(err: &CosmosError) -> String {
    let status = err.status();
    match status.name() {
        Some(name) => format!("{} {name}", u16::from(status.status_code())),
        None => u16::from(status.status_code()).to_string(),
    }
}
