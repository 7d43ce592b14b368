//! Configuration: `sqlite:PATH` (a file, created if missing; relative paths are relative to the
//! working directory), or a `[stores.NAME]` table with `url`, plus the fields
//! `busy_timeout_ms` and `sweep_interval_ms` as URL query parameters or table fields.

use std::path::PathBuf;
use std::time::Duration;

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, StoreSpec};

/// The longest wait a field may set: ten minutes.
const MAX_MS: i64 = 600_000;

/// Where the database file is and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file.
    pub path: PathBuf,
    /// How long a write waits for another process's write lock before failing `unavailable`.
    pub busy_timeout: Duration,
    /// How often expired keys and old request ids are deleted.
    pub sweep_interval: Duration,
}

impl SqliteConfig {
    /// Parses a store spec: the URL's path, then the provider fields (unknown ones are errors).
    pub fn from_spec(spec: &StoreSpec) -> Result<SqliteConfig, ConfigError> {
        let url = spec.url.as_ref().ok_or_else(|| {
            ConfigError("the sqlite provider needs `url = \"sqlite:PATH\"`".into())
        })?;
        if url.scheme() != "sqlite" {
            return Err(ConfigError(format!(
                "{}: expected a sqlite:PATH URL",
                redact_url(url)
            )));
        }
        let path = url.path();
        if path.is_empty() || path == "/" {
            return Err(ConfigError(format!(
                "{}: the sqlite provider needs a file: sqlite:PATH",
                redact_url(url)
            )));
        }
        // Percent-decoded as a path: `+` stays a plus and `&` is part of the name (decoding
        // it as form data made `a+b.db` open `a b.db` and `a&b.db` open `a`).
        let path = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| {
                ConfigError(format!(
                    "{}: the path is not UTF-8 once decoded",
                    redact_url(url)
                ))
            })?
            .into_owned();
        let mut config = SqliteConfig {
            path: PathBuf::from(path),
            busy_timeout: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(60),
        };
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        Ok(config)
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        match field.name.as_str() {
            "busy_timeout_ms" => self.busy_timeout = field.millis(MAX_MS)?,
            "sweep_interval_ms" => self.sweep_interval = field.millis(MAX_MS)?,
            _ => return Err(field.unknown("sqlite")),
        }
        Ok(())
    }

    /// Identity of the connection: stores on the same file share one.
    pub fn connection_key(&self) -> String {
        ConnectionKey::new("sqlite")
            .field("path", &self.path)
            .field("busy_timeout", self.busy_timeout)
            .field("sweep_interval", self.sweep_interval)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<SqliteConfig, ConfigError> {
        let (_, spec) = kv_core::config::parse_short_form(&format!("s={url}"))?;
        SqliteConfig::from_spec(&spec)
    }

    #[test]
    fn parses_paths_and_fields() {
        let config = parse("sqlite:/var/lib/kv/data.db?busy_timeout_ms=250").unwrap();
        assert_eq!(config.path, PathBuf::from("/var/lib/kv/data.db"));
        assert_eq!(config.busy_timeout, Duration::from_millis(250));
        assert_eq!(
            parse("sqlite:data.db").unwrap().path,
            PathBuf::from("data.db")
        );
        for (url, path) in [
            ("sqlite:/tmp/a+b.db", "/tmp/a+b.db"),
            ("sqlite:/tmp/a&b.db", "/tmp/a&b.db"),
            ("sqlite:/tmp/a%20b.db", "/tmp/a b.db"),
            ("sqlite:/tmp/d%2Edb", "/tmp/d.db"),
        ] {
            assert_eq!(parse(url).unwrap().path, PathBuf::from(path), "{url}");
        }
        for bad in [
            "sqlite:",
            "sqlite:/x.db?colour=red",
            "sqlite:x.db?busy_timeout_ms=0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_ne!(
            parse("sqlite:a.db").unwrap().connection_key(),
            parse("sqlite:b.db").unwrap().connection_key()
        );
    }
}
