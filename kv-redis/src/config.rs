//! Configuration: `redis://[user[:password]@]host[:port][/db]` or `rediss://` for TLS;
//! `redis+cluster://host:port[,host:port…]/` (or `rediss+cluster://`) for a Redis Cluster,
//! whose seed nodes the client uses to discover every node. Fields, as URL query parameters or
//! `[stores.NAME]` fields: `username`, `password`, `connect_timeout_ms`, `response_timeout_ms`,
//! `nodes` (more cluster seed nodes), `wait_replicas` and `wait_timeout_ms` (acknowledge a write
//! only once that many replicas have it, Redis `WAIT`), `allow_eviction` (accept a server whose
//! `maxmemory-policy` is `allkeys-*`, which is refused otherwise).

use std::time::Duration;

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, Secret, StoreSpec};
use url::Url;

/// The longest timeout a field may set: ten minutes.
const MAX_TIMEOUT_MS: i64 = 600_000;
/// The most replicas `wait_replicas` may ask for.
const MAX_WAIT_REPLICAS: i64 = 16;

/// How to reach one Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Host name or address (for a cluster: the first seed node).
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// A Redis Cluster (`redis+cluster://`): keys spread over the cluster's slots.
    pub cluster: bool,
    /// More cluster seed nodes, `(host, port)`, after `host:port`.
    pub nodes: Vec<(String, u16)>,
    /// Database number (default 0; a cluster has only database 0).
    pub db: i64,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<Secret>,
    /// `rediss://`: TLS with the web PKI roots.
    pub tls: bool,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time to wait for one reply.
    pub response_timeout: Duration,
    /// Replicas that must have a write before it is acknowledged (0: the primary's reply
    /// suffices, Redis's default asynchronous replication).
    pub wait_replicas: u32,
    /// How long a write waits for those replicas before it fails as `timeout`.
    pub wait_timeout: Duration,
    /// Accept a server whose `maxmemory-policy` may evict any key (`allkeys-*`): stored values
    /// and the records of applied increments and swaps alike. Refused unless set.
    pub allow_eviction: bool,
}

impl RedisConfig {
    /// Parses a store spec: the URL, then its provider fields (URL query parameters, then the
    /// file's fields; unknown fields are errors).
    pub fn from_spec(spec: &StoreSpec) -> Result<RedisConfig, ConfigError> {
        let url = spec.url.as_ref().ok_or_else(|| {
            ConfigError("the redis provider needs `url = \"redis://HOST:PORT/DB\"`".into())
        })?;
        let mut config = Self::from_url(url)?;
        // `provider = "redis-cluster"` with a `redis://` URL means a cluster too.
        config.cluster |= spec.provider == "redis-cluster";
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        if config.cluster && config.db != 0 {
            return Err(ConfigError(format!(
                "{}: a Redis Cluster has only database 0",
                redact_url(url)
            )));
        }
        if !config.nodes.is_empty() && !config.cluster {
            return Err(ConfigError(format!(
                "{}: `nodes` lists cluster seed nodes; use a redis+cluster:// URL",
                redact_url(url)
            )));
        }
        Ok(config)
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        match field.name.as_str() {
            "username" => self.username = Some(field.text()?),
            "password" => self.password = Some(field.secret()?),
            "connect_timeout_ms" => self.connect_timeout = field.millis(MAX_TIMEOUT_MS)?,
            "response_timeout_ms" => self.response_timeout = field.millis(MAX_TIMEOUT_MS)?,
            "nodes" => {
                for node in field.list()? {
                    self.nodes.push(parse_node(&node)?);
                }
            }
            "wait_replicas" => {
                self.wait_replicas = u32::try_from(field.integer(0..=MAX_WAIT_REPLICAS)?)
                    .map_err(|_| ConfigError("`wait_replicas` is out of range".into()))?;
            }
            "wait_timeout_ms" => self.wait_timeout = field.millis(MAX_TIMEOUT_MS)?,
            "allow_eviction" => self.allow_eviction = field.flag()?,
            _ => return Err(field.unknown("redis")),
        }
        Ok(())
    }

    /// Parses the address part of a `redis://`, `rediss://`, `redis+cluster://` or
    /// `rediss+cluster://` URL (its query parameters are provider fields, read by
    /// [`RedisConfig::from_spec`], which also checks the whole).
    pub fn from_url(url: &Url) -> Result<RedisConfig, ConfigError> {
        let shown = redact_url(url);
        let (tls, cluster) = match url.scheme() {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            other => {
                return Err(ConfigError(format!(
                    "{shown}: scheme {other:?} is not redis://, rediss://, redis+cluster:// \
                     or rediss+cluster://"
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
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        Ok(RedisConfig {
            host,
            port: url.port().unwrap_or(6379),
            cluster,
            nodes: Vec::new(),
            db,
            username: Some(url.username()).filter(|u| !u.is_empty()).map(decode),
            password: url.password().map(|password| Secret::new(decode(password))),
            tls,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            allow_eviction: false,
        })
    }

    /// Every node address the client is given: `host:port`, then `nodes`.
    pub fn seed_nodes(&self) -> Vec<(String, u16)> {
        let mut all = vec![(self.host.clone(), self.port)];
        all.extend(self.nodes.iter().cloned());
        all
    }

    /// Identity of the connection: every setting that changes it, the password as a
    /// fingerprint. Stores with equal keys share one connection.
    pub fn connection_key(&self) -> String {
        ConnectionKey::new("redis")
            .field("tls", self.tls)
            .field("cluster", self.cluster)
            .field("nodes", self.seed_nodes())
            .field("db", self.db)
            .field("username", &self.username)
            .secret("password", self.password.as_ref())
            .field("connect_timeout", self.connect_timeout)
            .field("response_timeout", self.response_timeout)
            .field("wait_replicas", self.wait_replicas)
            .field("wait_timeout", self.wait_timeout)
            .field("allow_eviction", self.allow_eviction)
            .finish()
    }
}

/// `host:port` of a seed node (the port is required: cluster nodes rarely use 6379 alone).
fn parse_node(text: &str) -> Result<(String, u16), ConfigError> {
    let invalid = || ConfigError(format!("`nodes`: {text:?} is not HOST:PORT"));
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(invalid)?;
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err(invalid());
    }
    Ok((host.to_string(), port))
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
        assert_eq!(config.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert!(!format!("{config:?}").contains("p@ss"));
        let plain = parse("redis://127.0.0.1").unwrap();
        assert_eq!((plain.port, plain.db, plain.tls), (6379, 0, false));
    }

    #[test]
    fn rejects_bad_urls_without_leaking_passwords() {
        for bad in [
            "redis://:secret@h/x",
            "redis://:secret@h/0?tls=1",
            "redis://:secret@h/0?connect_timeout_ms=0",
            "http://h/0",
            "redis:///0",
        ] {
            let err = from_spec(bad).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    fn from_spec(url: &str) -> Result<RedisConfig, ConfigError> {
        let (_, spec) = kv_core::config::parse_short_form(&format!("s={url}"))?;
        RedisConfig::from_spec(&spec)
    }

    #[test]
    fn fields_come_from_the_url_or_the_file() {
        let config = from_spec("redis://h/0?response_timeout_ms=250&password=pw").unwrap();
        assert_eq!(config.response_timeout, Duration::from_millis(250));
        assert!(!config.allow_eviction);
        assert!(
            from_spec("redis://h/0?allow_eviction=true")
                .unwrap()
                .allow_eviction
        );
        assert!(from_spec("redis://h/0?allow_eviction=yes").is_err());
        assert_eq!(config.password.as_ref().map(Secret::expose), Some("pw"));
        let file = kv_core::KvConfig::from_toml(
            "[stores.c]\nurl = \"redis://h:6390/2\"\npassword = \"${PW}\"\nconnect_timeout_ms = 100\n",
            &|name| (name == "PW").then(|| "from-env".to_string()),
        )
        .unwrap();
        let config = RedisConfig::from_spec(&file.stores["c"]).unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(100));
        assert_eq!(
            config.password.as_ref().map(Secret::expose),
            Some("from-env")
        );
        assert!(!format!("{config:?}").contains("from-env"));
    }

    #[test]
    fn cluster_urls_list_seed_nodes() {
        let config = from_spec(
            "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/?nodes=h:7002&wait_replicas=1",
        )
        .unwrap();
        assert!(config.cluster && !config.tls);
        assert_eq!(
            config.seed_nodes(),
            [
                ("127.0.0.1".to_string(), 7000),
                ("h".to_string(), 7002),
                ("127.0.0.1".to_string(), 7001)
            ]
        );
        assert_eq!(config.wait_replicas, 1);
        assert!(from_spec("rediss+cluster://h:7000").unwrap().tls);
        let table = |url: &str| {
            kv_core::KvConfig::from_toml(
                &format!("[stores.c]\nprovider = \"redis-cluster\"\nurl = \"{url}\"\n"),
                &|_| None,
            )
            .unwrap()
        };
        let config = table("redis://h:7000/0");
        assert!(RedisConfig::from_spec(&config.stores["c"]).unwrap().cluster);
        let config = table("redis://h:7000/1");
        assert!(RedisConfig::from_spec(&config.stores["c"]).is_err());
        for bad in [
            "redis+cluster://h:7000/1",
            "redis://h:7000/?nodes=h:7001",
            "redis+cluster://h:7000,h/",
            "redis+cluster://h:7000/?nodes=h:0",
            "redis+cluster://h:7000/?wait_replicas=-1",
            "redis+cluster://h:7000/?wait_replicas=17",
        ] {
            assert!(from_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connections_differ_by_every_setting() {
        let key = |url: &str| from_spec(url).unwrap().connection_key();
        let base = key("redis://:a@h:6379/0");
        assert_eq!(base, key("redis://:a@h:6379/0"));
        for other in [
            "redis://:b@h:6379/0",
            "redis://h:6379/0",
            "redis://:a@h:6379/1",
            "rediss://:a@h:6379/0",
            "redis://:a@h:6379/0?response_timeout_ms=100",
            "redis://:a@h:6379/0?connect_timeout_ms=100",
            "redis://:a@h:6379/0?wait_replicas=1",
            "redis://:a@h:6379/0?wait_timeout_ms=100",
            "redis://:a@h:6379/0?allow_eviction=true",
            "redis+cluster://:a@h:6379/0",
            "redis+cluster://:a@h:6379,h:6380/0",
        ] {
            assert_ne!(base, key(other), "{other}");
        }
        assert!(!base.contains(":a@"));
    }
}
