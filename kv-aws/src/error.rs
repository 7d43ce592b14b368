//! Every DynamoDB SDK error mapped to the contract's classes, in one place. Causes are logged
//! with `DisplayErrorContext` (plain `Display` says only "service error").

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kv_core::error::{classify_http_status, describe_http_status};
use kv_core::{ErrorKind, KvError};

/// Codes of throttling errors (retried, then `throttled`).
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "LimitExceededException",
];

/// Maps any SDK error of operation `op`.
pub fn map_sdk_error<E, R>(op: &str, err: SdkError<E, R>) -> KvError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
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

fn status<E, R: 'static>(err: &SdkError<E, R>) -> u16 {
    match err {
        SdkError::ServiceError(service) => {
            let raw: &dyn std::any::Any = service.raw();
            raw.downcast_ref::<aws_sdk_dynamodb::config::http::HttpResponse>()
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// The full SDK error context, as the source of a `KvError` (for logs only).
#[derive(Debug)]
struct SdkErrorText(String);

impl std::fmt::Display for SdkErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SdkErrorText {}
