//! Configuration: `redis://[user[:password]@]host[:port][/db]` or `rediss://` for TLS, plus
//! optional fields in the config file.

use std::fmt;
use std::time::Duration;

use kv_core::config::redact_url;
use kv_core::{ConfigError, StoreSpec};
use url::Url;

/// How to reach one Redis server.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// Database number (default 0).
    pub db: i64,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<String>,
    /// `rediss://`: TLS with the web PKI roots.
    pub tls: bool,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time to wait for one reply.
    pub response_timeout: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Parses a store spec: the URL, then the file fields `username`, `password`,
    /// `connect_timeout_ms`, `response_timeout_ms` (unknown fields are errors).
    /// Without a password in the URL or the fields, `REDIS_PASSWORD` is used if set.
    pub fn from_spec(spec: &StoreSpec) -> Result<RedisConfig, ConfigError> {
        let url = spec.url.as_ref().ok_or_else(|| {
            ConfigError("the redis provider needs `url = \"redis://HOST:PORT/DB\"`".into())
        })?;
        let mut config = Self::from_url(url)?;
        for (field, value) in &spec.options {
            let text = || {
                value
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ConfigError(format!("`{field}` must be a string")))
            };
            let millis = || {
                value
                    .as_integer()
                    .filter(|n| *n > 0)
                    .map(|n| Duration::from_millis(n as u64))
                    .ok_or_else(|| ConfigError(format!("`{field}` must be a positive integer")))
            };
            match field.as_str() {
                "username" => config.username = Some(text()?),
                "password" => config.password = Some(text()?),
                "connect_timeout_ms" => config.connect_timeout = millis()?,
                "response_timeout_ms" => config.response_timeout = millis()?,
                other => {
                    return Err(ConfigError(format!(
                        "unknown field `{other}` for the redis provider"
                    )));
                }
            }
        }
        if config.password.is_none() {
            config.password = std::env::var("REDIS_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty());
        }
        Ok(config)
    }

    /// Parses a `redis://` or `rediss://` URL.
    pub fn from_url(url: &Url) -> Result<RedisConfig, ConfigError> {
        let shown = redact_url(url);
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(ConfigError(format!(
                    "{shown}: scheme {other:?} is not redis:// or rediss://"
                )));
            }
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| ConfigError(format!("{shown}: missing host")))?
            .to_string();
        let db = match url.path().trim_matches('/') {
            "" => 0,
            path => path
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| {
                    ConfigError(format!("{shown}: database {path:?} is not a number"))
                })?,
        };
        if let Some((name, _)) = url.query_pairs().next() {
            return Err(ConfigError(format!(
                "{shown}: unknown URL parameter `{name}`"
            )));
        }
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        Ok(RedisConfig {
            host,
            port: url.port().unwrap_or(6379),
            db,
            username: Some(url.username()).filter(|u| !u.is_empty()).map(decode),
            password: url.password().map(decode),
            tls,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        })
    }

    /// Identity of the server connection (stores on the same server and db share it).
    pub fn connection_key(&self) -> String {
        format!(
            "{}://{}@{}:{}/{}",
            if self.tls { "rediss" } else { "redis" },
            self.username.as_deref().unwrap_or(""),
            self.host,
            self.port,
            self.db
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RedisConfig, ConfigError> {
        RedisConfig::from_url(&Url::parse(text).unwrap())
    }

    #[test]
    fn parses_urls() {
        let config = parse("rediss://app:p%40ss@cache.example:6380/3").unwrap();
        assert_eq!(config.host, "cache.example");
        assert_eq!(config.port, 6380);
        assert_eq!(config.db, 3);
        assert!(config.tls);
        assert_eq!(config.username.as_deref(), Some("app"));
        assert_eq!(config.password.as_deref(), Some("p@ss"));
        assert!(!format!("{config:?}").contains("p@ss"));
        let plain = parse("redis://127.0.0.1").unwrap();
        assert_eq!((plain.port, plain.db, plain.tls), (6379, 0, false));
    }

    #[test]
    fn rejects_bad_urls_without_leaking_passwords() {
        for bad in [
            "redis://:secret@h/x",
            "redis://:secret@h/0?tls=1",
            "http://h/0",
            "redis:///0",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
