//! Every S3 SDK error mapped to the contract's classes, in one place. Causes are logged with
//! `DisplayErrorContext`. 404, 409 and 412 are control flow for the callers that expect them
//! ([`is_not_found`], [`lost_the_race`]), never errors.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kv_core::error::{classify_http_status, describe_http_status};
use kv_core::{ErrorKind, KvError};

use crate::sdk_error::{SdkErrorText, http_status};

/// The object (or the version asked for) is not there: `NoSuchKey`, or a bare 404 (a
/// `HeadObject` answer has no body to name it).
pub fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.code() == Some("NoSuchKey")
        || (http_status(err) == 404 && err.code() != Some("NoSuchBucket"))
}

/// A conditional write that lost: the precondition failed (412), or S3 refused it because
/// another conditional write to the key was in flight (409 `ConditionalRequestConflict`).
pub fn lost_the_race<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(http_status(err), 412 | 409)
        && !matches!(
            err.code(),
            Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
        )
}

/// Maps any SDK error of operation `op`.
pub fn map_sdk_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> KvError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    let code = err.code().unwrap_or("").to_string();
    let status = http_status(&err);
    let (kind, transient, text) = match &err {
        SdkError::DispatchFailure(_) => (
            ErrorKind::Unavailable,
            true,
            format!("s3 {op}: cannot reach the endpoint"),
        ),
        SdkError::TimeoutError(_) => (
            ErrorKind::Timeout,
            true,
            format!("s3 {op}: no answer in time"),
        ),
        _ if matches!(
            code.as_str(),
            "SlowDown" | "TooManyRequests" | "RequestLimitExceeded"
        ) =>
        {
            (
                ErrorKind::Throttled,
                true,
                format!("s3 {op}: throttled ({code})"),
            )
        }
        _ if code == "NoSuchBucket" => (
            ErrorKind::Internal,
            false,
            format!("s3 {op}: the bucket does not exist (create it, or set create_bucket = true)"),
        ),
        _ if code == "EntityTooLarge" => (
            ErrorKind::ValueTooLarge,
            false,
            format!("s3 {op}: the object is larger than the service accepts"),
        ),
        _ if matches!(
            code.as_str(),
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"
        ) =>
        {
            (
                ErrorKind::Internal,
                false,
                format!("s3 {op}: not authorized ({code})"),
            )
        }
        _ if matches!(code.as_str(), "InternalError" | "ServiceUnavailable") => (
            ErrorKind::Unavailable,
            true,
            format!("s3 {op}: server error ({code})"),
        ),
        // Anything else by its HTTP status (a proxy, a load balancer, an S3-compatible service
        // with codes of its own).
        _ if classify_http_status(status).is_some() => {
            let (kind, transient) =
                classify_http_status(status).unwrap_or((ErrorKind::Internal, false));
            (
                kind,
                transient,
                format!("s3 {op}: {} {code}", describe_http_status(status))
                    .trim_end()
                    .to_string(),
            )
        }
        SdkError::ResponseError(_) => (
            ErrorKind::Unavailable,
            true,
            format!("s3 {op}: the answer could not be read"),
        ),
        _ => (
            ErrorKind::Internal,
            false,
            format!("s3 {op}: {code} {}", err.message().unwrap_or(""))
                .trim_end()
                .to_string(),
        ),
    };
    tracing::debug!(op, error = %detail, "s3 error");
    KvError::new(kind, text)
        .with_transient(transient)
        .with_source(SdkErrorText(detail))
}
