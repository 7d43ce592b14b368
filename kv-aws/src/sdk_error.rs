//! What every AWS SDK error carries that the providers' mappings read: the HTTP status of a
//! service's answer, and the full error context for logs.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// The HTTP status of a service's answer; 0 when there was none (no connection, a timeout).
pub(crate) fn http_status<E>(err: &SdkError<E, HttpResponse>) -> u16 {
    match err {
        SdkError::ServiceError(service) => service.raw().status().as_u16(),
        SdkError::ResponseError(response) => response.raw().status().as_u16(),
        _ => 0,
    }
}

/// The full SDK error context, as the source of a `KvError` (for logs only).
#[derive(Debug)]
pub(crate) struct SdkErrorText(pub(crate) String);

impl std::fmt::Display for SdkErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SdkErrorText {}
