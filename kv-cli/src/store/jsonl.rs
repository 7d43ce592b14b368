//! The export format: one JSON object per line, one key per object.
//!
//! ```text
//! {"key":"user:1","value":"ada"}
//! {"key":"avatar:1","value_base64":"iVBORw0KGgo=","ttl_ms":86400000,"expires_at_ms":1796601600000}
//! ```
//!
//! `value` holds a value that is UTF-8 text, `value_base64` any other (exactly one of the two);
//! `ttl_ms` is the time the key had left when it was exported and `expires_at_ms` when it
//! expires (Unix milliseconds), both absent for a key without a TTL. An import counts from
//! `expires_at_ms` when it is there, so an old export does not bring expired keys back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kv_core::StoredValue;
use serde::{Deserialize, Serialize};

/// One exported key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The value, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in standard base64, when it is not UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Milliseconds the key had left, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// When it expires, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// A record read back: the key, its bytes and its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Milliseconds left, if it expires.
    pub ttl_ms: Option<u64>,
    /// When it expires, in Unix milliseconds, if the record says.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    /// The time the key has left at `now_ms`: `Some(None)` for no TTL, `None` once expired.
    pub fn ttl_left(&self, now_ms: u64) -> Option<Option<u64>> {
        match (self.expires_at_ms, self.ttl_ms) {
            (Some(at), _) if at <= now_ms => None,
            (Some(at), _) => Some(Some(at - now_ms)),
            (None, ttl) => Some(ttl),
        }
    }
}

impl Record {
    /// The record of `key` holding `stored`, read at `now_ms` (a TTL under a millisecond
    /// counts as one).
    pub fn new(key: String, stored: StoredValue, now_ms: u64) -> Record {
        let ttl_ms = stored
            .ttl
            .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let expires_at_ms = ttl_ms.map(|ttl| now_ms.saturating_add(ttl));
        let (value, value_base64) = match String::from_utf8(stored.value) {
            Ok(text) => (Some(text), None),
            Err(err) => (None, Some(STANDARD.encode(err.into_bytes()))),
        };
        Record {
            key,
            value,
            value_base64,
            ttl_ms,
            expires_at_ms,
        }
    }

    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Result<Entry, String> {
        let record: Record = serde_json::from_str(line).map_err(|err| err.to_string())?;
        let value = match (record.value, record.value_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => STANDARD
                .decode(encoded.as_bytes())
                .map_err(|err| format!("value_base64: {err}"))?,
            (Some(_), Some(_)) => {
                return Err("both `value` and `value_base64`: give one".to_string());
            }
            (None, None) => return Err("no `value` or `value_base64`".to_string()),
        };
        if record.ttl_ms == Some(0) {
            return Err("ttl_ms: must be at least 1".to_string());
        }
        Ok(Entry {
            key: record.key,
            value,
            ttl_ms: record.ttl_ms,
            expires_at_ms: record.expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Text stays readable, bytes survive, TTLs round up to a millisecond; a line that does not
    /// say exactly one value is refused with the reason.
    #[test]
    fn round_trip_and_refusals() {
        for (value, ttl) in [
            (b"ada".to_vec(), None),
            (vec![0xff, 0x00, 0x10], Some(Duration::from_micros(10))),
            (Vec::new(), Some(Duration::from_secs(3600))),
            ("line\nbreak \"quoted\" é".as_bytes().to_vec(), None),
        ] {
            let line = Record::new(
                "k\n1".to_string(),
                StoredValue {
                    value: value.clone(),
                    ttl,
                },
                1_000,
            )
            .to_line();
            assert!(!line.contains('\n'), "{line}");
            let entry = Record::parse(&line).unwrap();
            assert_eq!(entry.key, "k\n1");
            assert_eq!(entry.value, value, "{line}");
            let ttl_ms = ttl.map(|ttl| (ttl.as_millis() as u64).max(1));
            assert_eq!(entry.ttl_ms, ttl_ms);
            assert_eq!(entry.expires_at_ms, ttl_ms.map(|ms| 1_000 + ms));
            // Imported later, the time left counts from the export; past it, the key is gone.
            assert_eq!(entry.ttl_left(1_000), Some(ttl_ms));
            if let Some(ms) = ttl_ms {
                assert_eq!(entry.ttl_left(1_000 + ms), None);
            }
        }
        assert!(
            Record::new(
                "k".into(),
                StoredValue {
                    value: b"ada".to_vec(),
                    ttl: None
                },
                0
            )
            .to_line()
                == r#"{"key":"k","value":"ada"}"#
        );
        for (bad, reason) in [
            (r#"{"key":"k"}"#, "no `value`"),
            (r#"{"key":"k","value":"a","value_base64":"YQ=="}"#, "both"),
            (r#"{"key":"k","value_base64":"!!"}"#, "value_base64"),
            (r#"{"key":"k","value":"a","ttl_ms":0}"#, "at least 1"),
            (r#"{"key":"k","value":"a","ttl_ms":-5}"#, "invalid value"),
            (r#"{"key":"k","value":"a","extra":1}"#, "unknown field"),
            (r#"{"value":"a"}"#, "missing field `key`"),
            ("not json", "expected"),
        ] {
            let err = Record::parse(bad).unwrap_err();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }
}
