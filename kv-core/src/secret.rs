//! Secrets in configuration, and the identity of a backend connection.
//!
//! Every credential a provider reads (passwords, keys, tokens) is a [`Secret`]: its `Debug`
//! and `Display` print `<redacted>`, so a config struct can derive `Debug` and no log line,
//! error or panic message can show the value. A [`ConnectionKey`] names a connection by every
//! setting that changes it, with secrets as a fingerprint, so two stores share a client only
//! when they would have built the same one.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};

/// A credential that is never printed.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The value, for the one place that hands it to an SDK.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short one-way digest, to tell two secrets apart without showing either.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.expose().as_bytes());
        digest[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret read from configuration. Only a string is accepted, and a value of another type is
/// refused without quoting it (serde's own type errors quote numbers and booleans).
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretText;
        impl serde::de::Visitor<'_> for SecretText {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Secret, E> {
                Ok(Secret::new(text.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Secret, E> {
                Ok(Secret::new(text))
            }
        }
        deserializer
            .deserialize_any(SecretText)
            .map_err(|_: D::Error| serde::de::Error::custom("must be a string"))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The identity of a backend connection: the provider and every setting that changes the
/// connection, secrets included as fingerprints. Stores with equal keys share one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionKey(String);

impl ConnectionKey {
    /// A key for `provider`; add every connection setting with [`Self::field`] and
    /// [`Self::secret`].
    pub fn new(provider: &str) -> ConnectionKey {
        ConnectionKey(provider.to_string())
    }

    /// Adds a plain setting (`None` and absent are the same).
    pub fn field(mut self, name: &str, value: impl fmt::Debug) -> ConnectionKey {
        self.0.push_str(&format!(";{name}={value:?}"));
        self
    }

    /// Adds a secret setting by its fingerprint.
    pub fn secret(mut self, name: &str, secret: Option<&Secret>) -> ConnectionKey {
        let shown = secret.map_or_else(|| "-".to_string(), Secret::fingerprint);
        self.0.push_str(&format!(";{name}#{shown}"));
        self
    }

    /// The key as text.
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            password: Option<Secret>,
        }
        let shown = format!(
            "{:?}",
            Config {
                password: Some(secret.clone())
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn connection_keys_tell_every_setting_apart() {
        let key = |host: &str, password: Option<&str>, timeout: u64| {
            ConnectionKey::new("redis")
                .field("host", host)
                .secret("password", password.map(Secret::new).as_ref())
                .field("timeout_ms", timeout)
                .finish()
        };
        let base = key("h", Some("a"), 5);
        assert_eq!(base, key("h", Some("a"), 5));
        assert_ne!(base, key("h", Some("b"), 5));
        assert_ne!(base, key("h", None, 5));
        assert_ne!(base, key("h", Some("a"), 6));
        assert_ne!(base, key("g", Some("a"), 5));
        assert!(!key("h", Some("hunter2"), 5).contains("hunter2"));
    }
}
