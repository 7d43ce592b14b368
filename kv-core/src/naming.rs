//! How providers name things in a backend: namespaces that can never see each other's keys,
//! and keys encoded for backends that forbid some characters or limit name length (S1, S10).
//!
//! - [`namespace_prefix`] is prefix-free: no namespace's prefix is a prefix of another's, so
//!   a prefix scan or listing of `a` never returns keys of `a/b` or `ab`, whatever bytes the
//!   namespaces and keys hold.
//! - A [`KeyCodec`] encodes keys bijectively into a backend's alphabet; a name that would
//!   exceed the backend's limit is replaced by a marker and the key's SHA-256
//!   ([`KeyCodec::name`]), and the provider keeps the original key beside the value so listing
//!   returns it byte for byte ([`KeyCodec::key_of`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The prefix of every name in `namespace`: its byte length, `/`, the namespace, `/`.
///
/// Prefix-free because the decimal length ends at the first `/`: two prefixes that start
/// alike have the same length field, so the same namespace.
pub fn namespace_prefix(namespace: &str) -> String {
    format!("{}/{namespace}/", namespace.len())
}

/// A key's name in a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredName {
    /// The name: the encoded key, or the hash marker and the key's SHA-256 in hex.
    pub name: String,
    /// Whether the name is a hash: the provider must then store the key itself.
    pub hashed: bool,
}

/// A bijective key encoding into a backend's alphabet, with a marker for hashed names that no
/// encoded key can start with.
#[derive(Debug, Clone, Copy)]
pub struct KeyCodec {
    encode: fn(&str) -> String,
    decode: fn(&str) -> Option<String>,
    /// Starts every hashed name; never the start of an encoded key.
    pub hash_marker: &'static str,
}

impl KeyCodec {
    /// `%` and control characters as `%XX` (UTF-8 bytes): short for ordinary keys, and safe
    /// for object stores that forbid CR and LF. Hashed names start with `%h`.
    pub const PERCENT: KeyCodec = KeyCodec {
        encode: percent_encode,
        decode: percent_decode,
        hash_marker: "%h",
    };

    /// Unpadded base64url of the key's bytes: only `A-Z a-z 0-9 - _`, for backends whose
    /// identifiers forbid `/ \ ? #`. Hashed names start with `~`.
    pub const BASE64URL: KeyCodec = KeyCodec {
        encode: |key| URL_SAFE_NO_PAD.encode(key.as_bytes()),
        decode: |text| String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok(),
        hash_marker: "~",
    };

    /// The encoded key.
    pub fn encode(&self, key: &str) -> String {
        (self.encode)(key)
    }

    /// The key of an encoded name; `None` for text this codec never produces.
    pub fn decode(&self, encoded: &str) -> Option<String> {
        (self.decode)(encoded)
    }

    /// The name of `key` when at most `budget` bytes are left for it: the encoded key if it
    /// fits, otherwise the hash marker and the key's SHA-256 (which must fit the budget).
    pub fn name(&self, key: &str, budget: usize) -> StoredName {
        let encoded = self.encode(key);
        if encoded.len() <= budget {
            StoredName {
                name: encoded,
                hashed: false,
            }
        } else {
            StoredName {
                name: format!("{}{:x}", self.hash_marker, Sha256::digest(key.as_bytes())),
                hashed: true,
            }
        }
    }

    /// Whether a name (without its namespace prefix) is a hashed one.
    pub fn is_hashed(&self, name: &str) -> bool {
        name.starts_with(self.hash_marker)
    }

    /// The key a name stands for: decoded, or for a hashed name the original the provider
    /// stored beside the value (`stored_key`). `None` for names this codec never produced.
    pub fn key_of(
        &self,
        name: &str,
        stored_key: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        if self.is_hashed(name) {
            stored_key()
        } else {
            self.decode(name)
        }
    }
}

/// The length of a hashed name of `codec`: its marker and 64 hex digits.
pub fn hashed_name_len(codec: &KeyCodec) -> usize {
    codec.hash_marker.len() + 64
}

fn percent_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn percent_decode(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [KeyCodec; 2] = [KeyCodec::PERCENT, KeyCodec::BASE64URL];

    /// Keys biased towards the characters that break encodings.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[%/\\\\?#~.\\r\\n\\x00 a-z]{1,40}",
            "\\PC{1,40}",
            any::<String>().prop_filter("1..=1024 bytes", |k| !k.is_empty() && k.len() <= 1024),
        ]
    }

    proptest! {
        #[test]
        fn namespace_prefixes_are_prefix_free(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            prop_assume!(a != b);
            let (pa, pb) = (namespace_prefix(&a), namespace_prefix(&b));
            prop_assert!(!pb.starts_with(&pa), "{pa:?} is a prefix of {pb:?}");
        }

        #[test]
        fn names_in_prefix_namespaces_never_collide(
            (a, b) in ("\\PC{1,8}", "[/:]\\PC{0,4}").prop_map(|(a, tail)| (a.clone(), a + &tail)),
            ka in key(),
            kb in key(),
        ) {
            // Namespaces that are prefixes of each other (`x` and `x/1`, `a` and `a:b`).
            let name_a = namespace_prefix(&a) + &KeyCodec::PERCENT.encode(&ka);
            let name_b = namespace_prefix(&b) + &KeyCodec::PERCENT.encode(&kb);
            prop_assert_ne!(&name_a, &name_b);
            prop_assert!(!name_a.starts_with(&namespace_prefix(&b)));
            prop_assert!(!name_b.starts_with(&namespace_prefix(&a)));
        }

        #[test]
        fn codecs_are_bijective(key in key()) {
            for codec in CODECS {
                let encoded = codec.encode(&key);
                prop_assert_eq!(codec.decode(&encoded), Some(key.clone()));
                prop_assert!(!codec.is_hashed(&encoded), "{encoded:?}");
                prop_assert!(!encoded.contains(['\r', '\n']));
            }
            let b64 = KeyCodec::BASE64URL.encode(&key);
            prop_assert!(!b64.contains(['/', '\\', '?', '#']));
        }

        #[test]
        fn distinct_keys_have_distinct_names(a in key(), b in key(), budget in 70usize..300) {
            prop_assume!(a != b);
            for codec in CODECS {
                prop_assert_ne!(codec.name(&a, budget), codec.name(&b, budget));
            }
        }

        #[test]
        fn long_names_are_hashed_within_budget(key in key(), budget in 66usize..200) {
            for codec in CODECS {
                let name = codec.name(&key, budget);
                prop_assert!(name.name.len() <= budget.max(hashed_name_len(&codec)));
                prop_assert_eq!(name.hashed, codec.encode(&key).len() > budget);
                let original = key.clone();
                prop_assert_eq!(codec.key_of(&name.name, || Some(original)), Some(key.clone()));
            }
        }
    }

    #[test]
    fn known_encodings_are_stable() {
        // Stored layouts: changing these strands existing data.
        assert_eq!(namespace_prefix("team-a"), "6/team-a/");
        assert_eq!(KeyCodec::PERCENT.encode("a%b\nc"), "a%25b%0Ac");
        assert_eq!(KeyCodec::BASE64URL.encode("a/b"), "YS9i");
        assert_eq!(KeyCodec::PERCENT.decode("%zz"), None);
        assert_eq!(KeyCodec::PERCENT.decode("%2f"), None);
        let hashed = KeyCodec::PERCENT.name(&"x".repeat(100), 10);
        assert!(hashed.hashed && hashed.name.starts_with("%h") && hashed.name.len() == 66);
    }
}
