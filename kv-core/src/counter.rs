//! The counter encoding of S6: canonical ASCII decimal i64, the form Redis INCRBY keeps.

use crate::error::{KvError, Result};

/// Parses a stored counter: `0` or `-?[1-9][0-9]*` within the i64 range.
///
/// Anything else (spaces, `+`, leading zeros, decimals, out of range) is `not-an-integer`, the
/// same set Redis rejects, so every provider agrees on which values can be incremented.
pub fn parse_counter(value: &[u8]) -> Result<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = match digits {
        [b'0'] => value.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let parsed = if canonical {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
    } else {
        None
    };
    parsed.ok_or_else(|| {
        KvError::not_an_integer(format!(
            "the stored value ({} bytes) is not an ASCII decimal i64",
            value.len()
        ))
    })
}

/// `current + delta`, or `overflow`.
pub fn add_delta(current: i64, delta: i64) -> Result<i64> {
    current.checked_add(delta).ok_or_else(|| {
        KvError::overflow(format!(
            "incrementing {current} by {delta} leaves the i64 range"
        ))
    })
}

/// The results an increment may leave. Outside the range the increment fails with
/// `overflow` and writes nothing (S6: an error leaves the value unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterRange {
    /// Any i64: `wasi:keyvalue@0.2.0-draft2` takes and returns s64.
    #[default]
    Signed,
    /// `0..=i64::MAX`: `wasi:keyvalue@0.2.0-draft` returns the total as a u64, so a negative
    /// total cannot be returned, and must not be written either.
    Unsigned,
}

impl CounterRange {
    /// `total`, or `overflow` if it is outside this range.
    pub fn check(self, total: i64) -> Result<i64> {
        match self {
            CounterRange::Unsigned if total < 0 => Err(KvError::overflow(format!(
                "the counter would be {total}, which the u64 interface of \
                 wasi:keyvalue@0.2.0-draft cannot return; nothing was written"
            ))),
            _ => Ok(total),
        }
    }
}

/// `current + delta` within `range`, or `overflow`.
pub fn add_delta_within(current: i64, delta: i64, range: CounterRange) -> Result<i64> {
    range.check(add_delta(current, delta)?)
}

/// The stored form of a counter.
pub fn encode_counter(value: i64) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn accepts_canonical_decimals() {
        for (text, value) in [
            ("0", 0),
            ("42", 42),
            ("-7", -7),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_counter(text.as_bytes()).unwrap(), value, "{text}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "",
            "-",
            "-0",
            "+5",
            " 42",
            "42 ",
            "007",
            "4.2",
            "1e3",
            "0x10",
            "abc",
            "9223372036854775808",
            "-9223372036854775809",
        ] {
            let err = parse_counter(text.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotAnInteger, "{text:?}");
        }
        assert!(parse_counter(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn overflow_is_classified() {
        assert_eq!(
            add_delta(i64::MAX, 1).unwrap_err().kind(),
            ErrorKind::Overflow
        );
        assert_eq!(
            add_delta(i64::MIN, -1).unwrap_err().kind(),
            ErrorKind::Overflow
        );
        assert_eq!(add_delta(41, 1).unwrap(), 42);
    }
}
