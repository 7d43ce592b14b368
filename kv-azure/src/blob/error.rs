//! Every Blob Storage SDK error mapped to the contract's classes, in one place. 404, 409 and
//! 412 are control flow for the callers that expect them ([`outcome`]), never errors. Error
//! text is kept for logs with every SAS signature removed.

use azure_core::error::ErrorKind as SdkErrorKind;
use kv_core::error::{classify_http_status, describe_http_status};
use kv_core::{ErrorKind, KvError};

/// What an SDK error means for the operation that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 404 `BlobNotFound`: the blob is not there (a missing container is a [`Outcome::Failure`]).
    NotFound,
    /// 409 `BlobAlreadyExists` / `ContainerAlreadyExists`: a create lost to an existing one.
    Exists,
    /// 412 `ConditionNotMet`: the ETag no longer matches.
    Changed,
    /// Anything else: a real failure, mapped by [`map_error`].
    Failure,
}

fn status_and_code(err: &azure_core::Error) -> (u16, &str) {
    match err.kind() {
        SdkErrorKind::HttpResponse {
            status, error_code, ..
        } => (u16::from(*status), error_code.as_deref().unwrap_or("")),
        _ => (0, ""),
    }
}

/// Classifies `err` for control flow.
pub fn outcome(err: &azure_core::Error) -> Outcome {
    match status_and_code(err) {
        (404, "BlobNotFound") => Outcome::NotFound,
        // A HEAD answer has no body to name the error: only the status.
        (404, "") => Outcome::NotFound,
        (409, "BlobAlreadyExists" | "ContainerAlreadyExists") => Outcome::Exists,
        // Only the failed condition: a lease's 412 (`LeaseIdMissing`, …) is a real failure.
        (412, "ConditionNotMet" | "") => Outcome::Changed,
        _ => Outcome::Failure,
    }
}

/// Maps an SDK error of operation `op`.
pub fn map_error(op: &str, err: azure_core::Error) -> KvError {
    let (status, code) = status_and_code(&err);
    let code = code.to_string();
    let (kind, transient, text) = match err.kind() {
        SdkErrorKind::Connection | SdkErrorKind::Io => (
            ErrorKind::Unavailable,
            true,
            format!("azblob {op}: cannot reach the endpoint"),
        ),
        // Nothing was sent: not `unavailable`, which would make an increment's outcome unknown.
        SdkErrorKind::Credential => (
            ErrorKind::Internal,
            false,
            format!("azblob {op}: no credentials (SAS or Entra ID token)"),
        ),
        SdkErrorKind::HttpResponse { .. } => match (status, code.as_str()) {
            // The service's throttling answers: 503 `ServerBusy` and 500 `OperationTimedOut`.
            (503, "ServerBusy") => (
                ErrorKind::Throttled,
                true,
                format!("azblob {op}: throttled (503 ServerBusy)"),
            ),
            (500, "OperationTimedOut") => (
                ErrorKind::Timeout,
                true,
                format!("azblob {op}: no answer in time (OperationTimedOut)"),
            ),
            (404, "ContainerNotFound") => (
                ErrorKind::Internal,
                false,
                format!(
                    "azblob {op}: the container does not exist (create it, or set \
                     create_container = true)"
                ),
            ),
            (413, _) | (_, "RequestBodyTooLarge") => (
                ErrorKind::ValueTooLarge,
                false,
                format!("azblob {op}: the blob is larger than the service accepts"),
            ),
            (401 | 403, _) => (
                ErrorKind::Internal,
                false,
                format!(
                    "azblob {op}: not authorized ({})",
                    format!("{status} {code}").trim_end()
                ),
            ),
            _ => match classify_http_status(status) {
                Some((kind, transient)) => (
                    kind,
                    transient,
                    format!("azblob {op}: {} {code}", describe_http_status(status))
                        .trim_end()
                        .to_string(),
                ),
                None => (
                    ErrorKind::Internal,
                    false,
                    format!("azblob {op}: unexpected answer {status} {code}")
                        .trim_end()
                        .to_string(),
                ),
            },
        },
        _ => (
            ErrorKind::Internal,
            false,
            format!("azblob {op}: {}", without_signatures(&err.to_string())),
        ),
    };
    let detail = without_signatures(&format!("{err:?}"));
    tracing::debug!(op, error = %detail, "azblob error");
    KvError::new(kind, text)
        .with_transient(transient)
        .with_source(ErrorText(detail))
}

/// `text` with the value of every `sig=` (a SAS signature in a URL) replaced.
pub fn without_signatures(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        let (before, after) = rest.split_at(at + "sig=".len());
        shown.push_str(before);
        shown.push_str("<redacted>");
        let end = after
            .find(|c: char| c == '&' || c == '"' || c == ')' || c == '\'' || c.is_whitespace())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    shown.push_str(rest);
    shown
}

/// The SDK error's text, signatures removed, as the source of a `KvError` (for logs only).
#[derive(Debug)]
struct ErrorText(String);

impl std::fmt::Display for ErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ErrorText {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_removed() {
        assert_eq!(
            without_signatures("GET http://h/c/b?sv=1&sig=abc%2B%3D&se=2 (sig=x) sig="),
            "GET http://h/c/b?sv=1&sig=<redacted>&se=2 (sig=<redacted>) sig=<redacted>"
        );
    }
}
