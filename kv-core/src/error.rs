//! The error model of the contract (docs/semantics.md, S11).
//!
//! Every failure a guest can see has a stable class, the prefix of the message it receives
//! (`invalid-key: key is empty`). Providers map their SDK errors into [`KvError`] in one place
//! (their `error.rs`); the host turns it into the WIT `error` with [`KvError::class`] and
//! [`fmt::Display`].

use std::error::Error as StdError;
use std::fmt;

/// What went wrong, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store identifier is not configured (`error::no-such-store`).
    NoSuchStore,
    /// The store exists but this component may not use it, or may not write to it
    /// (`error::access-denied`).
    AccessDenied,
    /// The key is empty or longer than the contract allows.
    InvalidKey,
    /// The value is larger than the provider's declared maximum.
    ValueTooLarge,
    /// `increment` on a value that is not an ASCII decimal i64.
    NotAnInteger,
    /// `increment` would leave the i64 range.
    Overflow,
    /// A `list-keys` cursor that this host did not issue for this store.
    InvalidCursor,
    /// More entries in one batch call than the host allows.
    BatchTooLarge,
    /// A TTL of zero or beyond the supported range.
    InvalidTtl,
    /// The backend cannot be reached or answered with a server error.
    Unavailable,
    /// The backend rejected the request for rate reasons.
    Throttled,
    /// The operation did not finish within the per-operation time limit.
    Timeout,
    /// Anything else: a bug, a misconfiguration, an unexpected backend answer.
    Internal,
}

impl ErrorKind {
    /// The stable class that starts the guest-visible message.
    pub fn class(self) -> &'static str {
        match self {
            ErrorKind::NoSuchStore => "no-such-store",
            ErrorKind::AccessDenied => "access-denied",
            ErrorKind::InvalidKey => "invalid-key",
            ErrorKind::ValueTooLarge => "value-too-large",
            ErrorKind::NotAnInteger => "not-an-integer",
            ErrorKind::Overflow => "overflow",
            ErrorKind::InvalidCursor => "invalid-cursor",
            ErrorKind::BatchTooLarge => "batch-too-large",
            ErrorKind::InvalidTtl => "invalid-ttl",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether errors of this kind are worth retrying by default.
    pub fn is_transient_by_default(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Throttled)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class())
    }
}

/// An error from a provider or from the host's own checks.
///
/// The message is what a guest sees after the class, so it must never contain credentials;
/// the `source` chain is for logs only.
pub struct KvError {
    kind: ErrorKind,
    message: String,
    transient: bool,
    retry_after: Option<std::time::Duration>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

/// Result alias used throughout the provider API.
pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// The class of an HTTP status that means the same on every HTTP backend, and whether it is
/// transient (worth retrying): 429 `throttled`, 408 `timeout`, 5xx `unavailable` (all
/// transient); 413 `value-too-large`; 401 and 403 `internal` (the host's credentials, not the
/// guest's fault). `None` for statuses whose meaning depends on the operation (404, 409, 412).
pub fn classify_http_status(status: u16) -> Option<(ErrorKind, bool)> {
    match status {
        429 => Some((ErrorKind::Throttled, true)),
        408 => Some((ErrorKind::Timeout, true)),
        500..=599 => Some((ErrorKind::Unavailable, true)),
        413 => Some((ErrorKind::ValueTooLarge, false)),
        401 | 403 => Some((ErrorKind::Internal, false)),
        _ => None,
    }
}

/// What a status [`classify_http_status`] knows means, in words for error messages.
pub fn describe_http_status(status: u16) -> String {
    match status {
        429 => "rate limited (429)".to_string(),
        408 => "request timeout (408)".to_string(),
        413 => "the item is too large (413)".to_string(),
        401 | 403 => format!("the credentials were refused ({status})"),
        500..=599 => format!("server error {status}"),
        _ => format!("status {status}"),
    }
}

impl KvError {
    /// A new error; transient if the kind usually is.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        KvError {
            kind,
            message: message.into(),
            transient: kind.is_transient_by_default(),
            retry_after: None,
            source: None,
        }
    }

    /// The backend asked to wait this long before retrying (`Retry-After`,
    /// `x-ms-retry-after-ms`); the host's retry waits at least that long.
    pub fn with_retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// How long the backend asked to wait before a retry, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Attach the underlying error, for logs.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Override whether retrying the same request may succeed.
    pub fn with_transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    /// Shorthand constructors for the classes providers use most.
    pub fn invalid_key(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidKey, message)
    }
    /// See [`ErrorKind::ValueTooLarge`].
    pub fn value_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ValueTooLarge, message)
    }
    /// See [`ErrorKind::NotAnInteger`].
    pub fn not_an_integer(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotAnInteger, message)
    }
    /// See [`ErrorKind::Overflow`].
    pub fn overflow(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Overflow, message)
    }
    /// See [`ErrorKind::InvalidCursor`].
    pub fn invalid_cursor(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidCursor, message)
    }
    /// See [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// See [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The same error for another caller: class, message, transience and retry hint; the
    /// source chain stays with this one (one failed write can answer several calls).
    pub fn duplicate(&self) -> KvError {
        KvError {
            kind: self.kind,
            message: self.message.clone(),
            transient: self.transient,
            retry_after: self.retry_after,
            source: None,
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The guest-visible detail, without the class prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same request may succeed if retried.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Whether a write that failed this way may still have been applied: the backend was
    /// unreachable mid-request or answered with a server error (`unavailable`), or the reply
    /// did not come in time (`timeout`), so the reply may be what was lost. Throttling and
    /// every rejection are certain not to have written anything.
    pub fn may_have_applied(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    /// The full cause chain, for logs (never for guests).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next: Option<&(dyn StdError + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(err) = next {
            out.push_str(": ");
            out.push_str(&err.to_string());
            next = err.source();
        }
        out
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.class(), self.message)
    }
}

impl fmt::Debug for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("transient", &self.transient)
            .field("retry_after", &self.retry_after)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl StdError for KvError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_starts_with_class() {
        let err = KvError::not_an_integer("value is not an ASCII decimal i64");
        assert_eq!(
            err.to_string(),
            "not-an-integer: value is not an ASCII decimal i64"
        );
        assert!(!err.is_transient());
        assert!(KvError::unavailable("down").is_transient());
    }

    #[test]
    fn chain_includes_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = KvError::unavailable("backend unreachable").with_source(io);
        assert_eq!(err.chain(), "unavailable: backend unreachable: refused");
    }

    #[test]
    fn http_statuses_are_classified_once() {
        assert_eq!(
            classify_http_status(429),
            Some((ErrorKind::Throttled, true))
        );
        assert_eq!(classify_http_status(408), Some((ErrorKind::Timeout, true)));
        for code in [500, 502, 503, 504] {
            assert_eq!(
                classify_http_status(code),
                Some((ErrorKind::Unavailable, true))
            );
        }
        assert_eq!(
            classify_http_status(413),
            Some((ErrorKind::ValueTooLarge, false))
        );
        assert_eq!(
            classify_http_status(403),
            Some((ErrorKind::Internal, false))
        );
        for code in [200, 404, 409, 412] {
            assert_eq!(classify_http_status(code), None);
        }
    }
}
