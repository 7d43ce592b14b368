//! Every DynamoDB SDK error mapped to the contract's classes, in one place. Causes are logged
//! with `DisplayErrorContext` (plain `Display` says only "service error").

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kv_core::error::{classify_http_status, describe_http_status};
use kv_core::{ErrorKind, KvError};

use crate::sdk_error::{SdkErrorText, http_status as status};

/// Codes of throttling errors (retried, then `throttled`).
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Maps any SDK error of operation `op`.
pub fn map_sdk_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> KvError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    let code = err.code().unwrap_or("").to_string();
    let message = err.message().unwrap_or("").to_string();
    let (kind, transient, text) = match &err {
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (
            ErrorKind::Unavailable,
            true,
            format!("dynamodb {op}: cannot reach the endpoint"),
        ),
        SdkError::TimeoutError(_) => (
            ErrorKind::Timeout,
            true,
            format!("dynamodb {op}: no answer in time"),
        ),
        _ if THROTTLING.contains(&code.as_str()) => (
            ErrorKind::Throttled,
            true,
            format!("dynamodb {op}: throttled ({code})"),
        ),
        _ if code == "ResourceNotFoundException" => (
            ErrorKind::Internal,
            false,
            format!(
                "dynamodb {op}: the table does not exist (create it, or set create_table = true)"
            ),
        ),
        _ if code == "ValidationException"
            && message.to_ascii_lowercase().contains("item size") =>
        {
            (
                ErrorKind::ValueTooLarge,
                false,
                format!("dynamodb {op}: the item exceeds DynamoDB's 400 KB limit"),
            )
        }
        _ if matches!(code.as_str(), "InternalServerError" | "ServiceUnavailable") => (
            ErrorKind::Unavailable,
            true,
            format!("dynamodb {op}: server error ({code})"),
        ),
        // An answer without a DynamoDB error code (a proxy, a load balancer): its HTTP status.
        _ if classify_http_status(status(&err)).is_some() => {
            let (kind, transient) =
                classify_http_status(status(&err)).unwrap_or((ErrorKind::Internal, false));
            (
                kind,
                transient,
                format!("dynamodb {op}: {}", describe_http_status(status(&err))),
            )
        }
        _ if matches!(
            code.as_str(),
            "AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException"
        ) =>
        {
            (
                ErrorKind::Internal,
                false,
                format!("dynamodb {op}: not authorized ({code})"),
            )
        }
        _ => (
            ErrorKind::Internal,
            false,
            format!("dynamodb {op}: {code} {message}")
                .trim_end()
                .to_string(),
        ),
    };
    tracing::debug!(op, error = %detail, "dynamodb error");
    KvError::new(kind, text)
        .with_transient(transient)
        .with_source(SdkErrorText(detail))
}
