//! Opaque cursors bound to their store (docs/semantics.md S5): a guest can only hand back a
//! cursor this host (or a replica configured with the same `[cursors] secret`) issued for the
//! same store.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{KvError, Result};

/// The configured cursor-signing secret (`[cursors] secret`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorSecret(String);

impl CursorSecret {
    /// Shortest accepted secret, in bytes.
    pub const MIN_BYTES: usize = 16;

    /// `secret`, if it is at least [`CursorSecret::MIN_BYTES`] long.
    pub fn new(secret: impl Into<String>) -> Option<CursorSecret> {
        let secret = secret.into();
        (secret.len() >= Self::MIN_BYTES).then_some(CursorSecret(secret))
    }
}

impl std::fmt::Debug for CursorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSecret(<redacted>)")
    }
}

/// Signs cursors so a guest can only hand back cursors this host issued for the same store:
/// HMAC-SHA-256 over the store's scope and the provider's cursor, truncated to
/// [`CURSOR_TAG_BYTES`], checked in constant time.
#[derive(Clone)]
pub(crate) struct CursorSigner {
    /// The MAC keyed once; each cursor clones it.
    keyed: CursorMac,
}

/// Bytes of the HMAC kept in a cursor: 128 bits, beyond guessing.
const CURSOR_TAG_BYTES: usize = 16;

type CursorMac = Hmac<Sha256>;

impl CursorSigner {
    fn with_key(key: [u8; 32]) -> Self {
        CursorSigner {
            // HMAC accepts keys of any length: this cannot fail.
            keyed: <CursorMac as Mac>::new_from_slice(&key).expect("HMAC takes any key length"),
        }
    }

    pub(crate) fn random() -> Self {
        Self::with_key(rand::random())
    }

    /// A signer every host configured with the same secret shares, so a cursor issued by one
    /// replica is accepted by another.
    pub(crate) fn from_secret(secret: &CursorSecret) -> Self {
        Self::with_key(Sha256::digest(secret.0.as_bytes()).into())
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> CursorMac {
        let mut mac = self.keyed.clone();
        // The scope's length first, so no (scope, payload) pair reads as another.
        mac.update(&(scope.len() as u64).to_le_bytes());
        mac.update(scope.as_bytes());
        mac.update(payload);
        mac
    }

    pub(crate) fn seal(&self, scope: &str, cursor: &str) -> String {
        let tag = self.mac(scope, cursor.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(cursor),
            URL_SAFE_NO_PAD.encode(&tag[..CURSOR_TAG_BYTES])
        )
    }

    pub(crate) fn open(&self, scope: &str, sealed: &str) -> Result<String> {
        let invalid = || KvError::invalid_cursor("the cursor was not issued for this store");
        let (payload, tag) = sealed.rsplit_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        if tag.len() != CURSOR_TAG_BYTES {
            return Err(invalid());
        }
        self.mac(scope, &payload)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        String::from_utf8(payload).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn cursors_are_bound_to_their_scope() {
        let signer = CursorSigner::random();
        let sealed = signer.seal("memory\u{0}a", "k/1");
        assert_eq!(signer.open("memory\u{0}a", &sealed).unwrap(), "k/1");
        assert_eq!(
            signer.open("memory\u{0}b", &sealed).unwrap_err().kind(),
            ErrorKind::InvalidCursor
        );
        for forged in ["", ".", "abc", "a.b", "12345", &sealed[1..]] {
            assert_eq!(
                signer.open("memory\u{0}a", forged).unwrap_err().kind(),
                ErrorKind::InvalidCursor,
                "{forged:?}"
            );
        }
        let other = CursorSigner::random();
        assert!(other.open("memory\u{0}a", &sealed).is_err());
        // A shorter (truncated) tag, even a true prefix of the real one, is refused.
        let (payload, tag) = sealed.rsplit_once('.').unwrap();
        let tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
        let short = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..8]));
        assert!(signer.open("memory\u{0}a", &short).is_err());
        // The tag is the standard HMAC-SHA-256 (RFC 2104) of the length-prefixed scope and
        // the payload, not a hash of the key and the message.
        let key = [7u8; 32];
        let signer = CursorSigner::with_key(key);
        let sealed = signer.seal("memory\u{0}a", "k/1");
        let tag = URL_SAFE_NO_PAD
            .decode(sealed.rsplit_once('.').unwrap().1)
            .unwrap();
        let mut mac = <CursorMac as Mac>::new_from_slice(&key).unwrap();
        mac.update(&8u64.to_le_bytes());
        mac.update(b"memory\0a");
        mac.update(b"k/1");
        let expected = mac.finalize().into_bytes();
        assert_eq!(&tag[..], &expected[..CURSOR_TAG_BYTES]);
        // Replicas configured with one secret accept each other's cursors; others do not.
        let secret = CursorSecret::new("0123456789abcdef").unwrap();
        let replica = CursorSigner::from_secret(&secret);
        let sealed = replica.seal("memory\u{0}a", "k/1");
        let peer = CursorSigner::from_secret(&secret);
        assert_eq!(peer.open("memory\u{0}a", &sealed).unwrap(), "k/1");
        let stranger = CursorSigner::from_secret(&CursorSecret::new("fedcba9876543210").unwrap());
        assert!(stranger.open("memory\u{0}a", &sealed).is_err());
        assert!(CursorSecret::new("short").is_none());
        assert!(!format!("{secret:?}").contains("0123"));
    }
}
