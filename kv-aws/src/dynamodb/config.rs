//! Configuration: `dynamodb://TABLE?region=..&endpoint=..&profile=..&create_table=true`, or a
//! `[stores.NAME]` table with the same fields.

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, StoreSpec};

use crate::access::AwsAccess;

/// Where the table is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    /// Table name (one table per deployment; stores are partitions).
    pub table: String,
    /// Region, endpoint (DynamoDB Local), credentials and the SDK's attempts.
    pub access: AwsAccess,
    /// Create the table (and enable TTL) if it does not exist.
    pub create_table: bool,
}

impl DynamoConfig {
    /// Parses a store spec: URL first, then file fields (unknown fields are errors).
    pub fn from_spec(spec: &StoreSpec) -> Result<DynamoConfig, ConfigError> {
        let mut config = DynamoConfig {
            table: String::new(),
            access: AwsAccess::default(),
            create_table: false,
        };
        if let Some(url) = &spec.url {
            let shown = redact_url(url);
            if url.scheme() != "dynamodb" {
                return Err(ConfigError(format!("{shown}: expected a dynamodb:// URL")));
            }
            config.table = url.host_str().unwrap_or_default().to_string();
            if !url.path().trim_matches('/').is_empty() {
                return Err(ConfigError(format!(
                    "{shown}: expected dynamodb://TABLE?region=.."
                )));
            }
        }
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        if config.table.is_empty() {
            return Err(ConfigError(
                "the dynamodb provider needs a table: dynamodb://TABLE or `table = ...`".into(),
            ));
        }
        config.access.validate()?;
        Ok(config)
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        if self.access.apply(field)? {
            return Ok(());
        }
        match field.name.as_str() {
            "table" => self.table = field.text()?,
            "create_table" => self.create_table = field.flag()?,
            _ => return Err(field.unknown("dynamodb")),
        }
        Ok(())
    }

    /// Identity of the client: every setting that changes it, the secret as a fingerprint.
    /// Stores with equal keys share one SDK client.
    pub fn connection_key(&self) -> String {
        self.access
            .identify(ConnectionKey::new("dynamodb").field("table", &self.table))
            .field("create_table", self.create_table)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> StoreSpec {
        kv_core::config::parse_short_form(&format!("s={url}"))
            .unwrap()
            .1
    }

    #[test]
    fn parses_short_form() {
        let config = DynamoConfig::from_spec(&spec(
            "dynamodb://kv?region=eu-west-1&endpoint=http://127.0.0.1:8000&create_table=true",
        ))
        .unwrap();
        assert_eq!(config.table, "kv");
        assert_eq!(config.access.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            config.access.endpoint.as_deref(),
            Some("http://127.0.0.1:8000")
        );
        assert!(config.create_table);
    }

    #[test]
    fn rejects_unknown_and_incomplete() {
        assert!(DynamoConfig::from_spec(&spec("dynamodb://kv?colour=red")).is_err());
        assert!(DynamoConfig::from_spec(&spec("dynamodb://?region=x")).is_err());
        assert!(DynamoConfig::from_spec(&spec("dynamodb://kv?access_key_id=a")).is_err());
    }

    #[test]
    fn parses_file_form() {
        let config = kv_core::KvConfig::from_toml(
            "[stores.users]\nprovider = \"dynamodb\"\ntable = \"kv\"\nregion = \"us-east-1\"\n\
             create_table = true\nmax_attempts = 1\nsecret_access_key = \"${SECRET}\"\naccess_key_id = \"id\"\n",
            &|name| (name == "SECRET").then(|| "s3cr3t".to_string()),
        )
        .unwrap();
        let parsed = DynamoConfig::from_spec(&config.stores["users"]).unwrap();
        assert_eq!(parsed.table, "kv");
        assert!(parsed.create_table);
        assert_eq!(parsed.access.max_attempts, 1);
        assert_eq!(
            parsed
                .access
                .secret_access_key
                .as_ref()
                .map(kv_core::Secret::expose),
            Some("s3cr3t")
        );
        let bad = kv_core::KvConfig::from_toml(
            "[stores.u]\nprovider = \"dynamodb\"\ntable = \"kv\"\ncreate_table = \"yes\"\n",
            &|_| None,
        )
        .unwrap();
        assert!(DynamoConfig::from_spec(&bad.stores["u"]).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let config = DynamoConfig::from_spec(&spec(
            "dynamodb://kv?access_key_id=a&secret_access_key=hunter2",
        ))
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.connection_key().contains("hunter2"));
        let other = DynamoConfig::from_spec(&spec(
            "dynamodb://kv?access_key_id=a&secret_access_key=hunter3",
        ))
        .unwrap();
        assert_ne!(config.connection_key(), other.connection_key());
    }
}
