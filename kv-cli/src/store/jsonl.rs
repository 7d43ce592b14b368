//! The export format: one JSON object per line, one key per object.
//!
//! ```text
//! {"key":"user:1","value":"ada"}
//! {"key":"avatar:1","value_base64":"iVBORw0KGgo=","ttl_ms":86400000}
//! ```
//!
//! `value` holds a value that is UTF-8 text, `value_base64` any other (exactly one of the two);
//! `ttl_ms` is the time the key had left when it was exported, absent for a key without a TTL.

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
}

impl Record {
    /// The record of `key` holding `stored` (a TTL under a millisecond counts as one).
    pub fn new(key: String, stored: StoredValue) -> Record {
        let ttl_ms = stored
            .ttl
            .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        match String::from_utf8(stored.value) {
            Ok(text) => Record {
                key,
                value: Some(text),
                value_base64: None,
                ttl_ms,
            },
            Err(err) => Record {
                key,
                value: None,
                value_base64: Some(STANDARD.encode(err.into_bytes())),
                ttl_ms,
            },
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
            )
            .to_line();
            assert!(!line.contains('\n'), "{line}");
            let entry = Record::parse(&line).unwrap();
            assert_eq!(entry.key, "k\n1");
            assert_eq!(entry.value, value, "{line}");
            assert_eq!(entry.ttl_ms, ttl.map(|ttl| (ttl.as_millis() as u64).max(1)));
        }
        assert!(
            Record::new(
                "k".into(),
                StoredValue {
                    value: b"ada".to_vec(),
                    ttl: None
                }
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
