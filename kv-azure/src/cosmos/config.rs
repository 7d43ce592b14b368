//! Configuration: `cosmos://ACCOUNT_HOST/DATABASE/CONTAINER?key=..&endpoint=..&region=..
//! &create_container=true`, or a `[stores.NAME]` table with the same fields.

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, StoreSpec};

pub use crate::identity::Auth;
use crate::identity::{AzureIdentity, check_scheme};

/// The environment variable read for the account key when the config has none.
pub const KEY_ENV: &str = "AZURE_COSMOS_KEY";

/// The region the local server (and a single-region account) reports.
pub const DEFAULT_REGION: &str = "South Central US";

/// The read consistency requested per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The account's default level (Session for new accounts).
    AccountDefault,
    /// Session: a client reads its own writes.
    Session,
    /// The latest committed write in the region (needs Bounded Staleness or Strong accounts).
    LatestCommitted,
}

/// Where the container is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosmosConfig {
    /// Account endpoint, e.g. `https://acct.documents.azure.com:443/`. Plain `http://` is
    /// accepted only for loopback (the local server).
    pub endpoint: String,
    /// Database id.
    pub database: String,
    /// Container id (one container per deployment; stores are partition-key prefixes).
    pub container: String,
    /// The account key (`key =` or `$AZURE_COSMOS_KEY`) or an Entra ID identity.
    pub identity: AzureIdentity,
    /// The region the client runs in or nearest to; requests prefer it.
    pub region: String,
    /// Read consistency (`consistency = "default" | "session" | "latest-committed"`).
    pub consistency: Consistency,
    /// End-to-end limit of one SDK operation, retries included (`timeout_ms`); the host's own
    /// `operation_timeout_ms` applies on top.
    pub timeout: Option<std::time::Duration>,
    /// Create the database and container (partition key `/pk`, TTL on) if missing.
    pub create_container: bool,
}

impl CosmosConfig {
    /// Parses a store spec: URL first, then file fields (unknown fields are errors); the key
    /// falls back to `$AZURE_COSMOS_KEY`.
    pub fn from_spec(spec: &StoreSpec) -> Result<CosmosConfig, ConfigError> {
        Self::from_spec_with_env(spec, &|name| std::env::var(name).ok())
    }

    /// [`CosmosConfig::from_spec`] with an explicit environment (for tests).
    pub fn from_spec_with_env(
        spec: &StoreSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CosmosConfig, ConfigError> {
        let mut config = CosmosConfig {
            endpoint: String::new(),
            database: String::new(),
            container: String::new(),
            identity: AzureIdentity::default(),
            region: DEFAULT_REGION.to_string(),
            consistency: Consistency::AccountDefault,
            timeout: None,
            create_container: false,
        };
        if let Some(url) = &spec.url {
            let shown = redact_url(url);
            if url.scheme() != "cosmos" {
                return Err(ConfigError(format!("{shown}: expected a cosmos:// URL")));
            }
            if let Some(host) = url.host_str().filter(|host| !host.is_empty()) {
                let port = url.port().unwrap_or(443);
                config.endpoint = format!("https://{host}:{port}/");
            }
            let path: Vec<&str> = url.path().trim_matches('/').split('/').collect();
            match path.as_slice() {
                [database, container] if !database.is_empty() && !container.is_empty() => {
                    config.database = database.to_string();
                    config.container = container.to_string();
                }
                [""] => {}
                _ => {
                    return Err(ConfigError(format!(
                        "{shown}: expected cosmos://ACCOUNT_HOST/DATABASE/CONTAINER"
                    )));
                }
            }
        }
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        config.identity.key_from_env(KEY_ENV, env);
        if config.endpoint.is_empty() || config.database.is_empty() || config.container.is_empty() {
            return Err(ConfigError(
                "the cosmos provider needs an account, a database and a container: \
                 cosmos://ACCOUNT_HOST/DATABASE/CONTAINER"
                    .into(),
            ));
        }
        check_scheme("cosmos", &config.endpoint)?;
        config.identity.validate("cosmos", KEY_ENV, true)?;
        Ok(config)
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        if self.identity.apply("cosmos", field)? {
            return Ok(());
        }
        match field.name.as_str() {
            "endpoint" => self.endpoint = field.text()?,
            "database" => self.database = field.text()?,
            "container" => self.container = field.text()?,
            "consistency" => {
                self.consistency = match field.text()?.as_str() {
                    "default" => Consistency::AccountDefault,
                    "session" => Consistency::Session,
                    "latest-committed" => Consistency::LatestCommitted,
                    "eventual" => {
                        return Err(ConfigError(
                            "cosmos: consistency \"eventual\" would break read-your-writes \
                             (docs/semantics.md); use session or stronger"
                                .into(),
                        ));
                    }
                    other => {
                        return Err(ConfigError(format!(
                            "cosmos: consistency must be default, session or latest-committed, \
                             not {other:?}"
                        )));
                    }
                }
            }
            "timeout_ms" => {
                let ms = field.integer(1..=600_000)? as u64;
                self.timeout = Some(std::time::Duration::from_millis(ms));
            }
            "region" => self.region = field.text()?,
            "create_container" => self.create_container = field.flag()?,
            _ => return Err(field.unknown("cosmos")),
        }
        Ok(())
    }

    /// Identity of the client: every setting that changes it, secrets as fingerprints.
    /// Stores with equal keys share one SDK client.
    pub fn connection_key(&self) -> String {
        self.identity
            .identify(
                ConnectionKey::new("cosmos")
                    .field("endpoint", &self.endpoint)
                    .field("database", &self.database)
                    .field("container", &self.container),
            )
            .field("region", &self.region)
            .field("consistency", self.consistency)
            .field("timeout", self.timeout)
            .field("create_container", self.create_container)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_core::Secret;

    fn spec(url: &str) -> StoreSpec {
        kv_core::config::parse_short_form(&format!("s={url}"))
            .unwrap()
            .1
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_short_form_and_endpoint_override() {
        let config = CosmosConfig::from_spec_with_env(
            &spec("cosmos://acct.documents.azure.com/db/kv?key=c2VjcmV0&create_container=true"),
            &no_env,
        )
        .unwrap();
        assert_eq!(config.endpoint, "https://acct.documents.azure.com:443/");
        assert_eq!(
            (config.database.as_str(), config.container.as_str()),
            ("db", "kv")
        );
        assert!(config.create_container);
        let local = CosmosConfig::from_spec_with_env(
            &spec("cosmos:///db/kv?endpoint=http://127.0.0.1:8081/&key=a2V5"),
            &no_env,
        )
        .unwrap();
        assert_eq!(local.endpoint, "http://127.0.0.1:8081/");
    }

    #[test]
    fn key_from_environment_and_errors() {
        let env = |name: &str| (name == KEY_ENV).then(|| "ZW52".to_string());
        let config =
            CosmosConfig::from_spec_with_env(&spec("cosmos://a.example/db/kv"), &env).unwrap();
        assert_eq!(
            config.identity.key.as_ref().map(Secret::expose),
            Some("ZW52")
        );
        for bad in [
            "cosmos://a.example/db/kv",
            "cosmos://a.example/db?key=k",
            "cosmos://a.example/db/kv?key=k&colour=red",
            "cosmos:///db/kv?key=k&endpoint=http://example.com/",
            "cosmos://a.example/db/kv?key=k&create_container=yes",
        ] {
            assert!(
                CosmosConfig::from_spec_with_env(&spec(bad), &no_env).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn file_form_and_entra() {
        let config = kv_core::KvConfig::from_toml(
            "[stores.users]\nprovider = \"cosmos\"\nendpoint = \"https://a.example:443/\"\n\
             database = \"db\"\ncontainer = \"kv\"\nauth = \"entra\"\ntenant_id = \"t\"\n\
             client_id = \"c\"\nclient_secret = \"${SECRET}\"\ncreate_container = true\n",
            &|name| (name == "SECRET").then(|| "s3cr3t".to_string()),
        )
        .unwrap();
        let parsed = CosmosConfig::from_spec_with_env(&config.stores["users"], &no_env).unwrap();
        assert_eq!(parsed.identity.auth, Auth::Entra);
        assert_eq!(
            parsed.identity.client_secret.as_ref().map(Secret::expose),
            Some("s3cr3t")
        );
        assert!(parsed.create_container);
        assert!(!format!("{parsed:?}").contains("s3cr3t"));
        // Managed identity needs nothing else; a key and entra together are refused.
        assert!(
            CosmosConfig::from_spec_with_env(&spec("cosmos://a.example/db/kv?auth=entra"), &no_env)
                .is_ok()
        );
        let tuned = CosmosConfig::from_spec_with_env(
            &spec("cosmos://a.example/db/kv?key=k&consistency=session&timeout_ms=5000"),
            &no_env,
        )
        .unwrap();
        assert_eq!(tuned.consistency, Consistency::Session);
        assert_eq!(tuned.timeout, Some(std::time::Duration::from_secs(5)));
        for bad in [
            "cosmos://a.example/db/kv?key=k&consistency=eventual",
            "cosmos://a.example/db/kv?key=k&timeout_ms=0",
            "cosmos://a.example/db/kv?auth=entra&key=k",
            "cosmos://a.example/db/kv?auth=entra&client_secret=s",
            "cosmos://a.example/db/kv?auth=password",
        ] {
            assert!(
                CosmosConfig::from_spec_with_env(&spec(bad), &no_env).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_is_redacted() {
        let config = CosmosConfig::from_spec_with_env(
            &spec("cosmos://a.example/db/kv?key=hunter2"),
            &no_env,
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
