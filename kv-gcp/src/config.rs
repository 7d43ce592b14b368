//! Configuration: `gcs://BUCKET[/PREFIX]?endpoint=..&create_bucket=true`, or a `[stores.NAME]`
//! table with `bucket`, `prefix`, `endpoint`, `create_bucket`, `project`, `credentials_file`,
//! `anonymous`.

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, StoreSpec};

/// Where the objects go and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Object name prefix for every store of this bucket ("" or ending in `/`).
    pub prefix: String,
    /// JSON API endpoint; `STORAGE_EMULATOR_HOST` is *not* read implicitly.
    pub endpoint: Option<String>,
    /// Create the bucket if it is missing.
    pub create_bucket: bool,
    /// Project for bucket creation.
    pub project: Option<String>,
    /// Service account key file; the default chain when unset (unless anonymous).
    pub credentials_file: Option<String>,
    /// No credentials at all (emulators); implied by an `http://` endpoint.
    pub anonymous: bool,
}

impl GcsConfig {
    /// Parses a store spec.
    pub fn from_spec(spec: &StoreSpec) -> Result<GcsConfig, ConfigError> {
        let mut config = GcsConfig {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            create_bucket: false,
            project: None,
            credentials_file: None,
            anonymous: false,
        };
        if let Some(url) = &spec.url {
            let shown = redact_url(url);
            if url.scheme() != "gcs" {
                return Err(ConfigError(format!("{shown}: expected a gcs:// URL")));
            }
            config.bucket = url.host_str().unwrap_or_default().to_string();
            config.prefix = url.path().trim_start_matches('/').to_string();
        }
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        if config.bucket.is_empty() {
            return Err(ConfigError(
                "the gcs provider needs a bucket: gcs://BUCKET/PREFIX".into(),
            ));
        }
        if !config.prefix.is_empty() && !config.prefix.ends_with('/') {
            config.prefix.push('/');
        }
        if config
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            config.anonymous = true;
        }
        Ok(config)
    }

    /// Identity of the client: every setting that changes it. Stores with equal keys share
    /// one client.
    pub fn connection_key(&self) -> String {
        ConnectionKey::new("gcs")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("create_bucket", self.create_bucket)
            .field("project", &self.project)
            .field("credentials_file", &self.credentials_file)
            .field("anonymous", self.anonymous)
            .finish()
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        match field.name.as_str() {
            "bucket" => self.bucket = field.text()?,
            "prefix" => self.prefix = field.text()?,
            "endpoint" => self.endpoint = Some(field.text()?.trim_end_matches('/').to_string()),
            "project" => self.project = Some(field.text()?),
            "credentials_file" => self.credentials_file = Some(field.text()?),
            "create_bucket" => self.create_bucket = field.flag()?,
            "anonymous" => self.anonymous = field.flag()?,
            _ => return Err(field.unknown("gcs")),
        }
        Ok(())
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
        let config = GcsConfig::from_spec(&spec(
            "gcs://b/apps/kv?endpoint=http://127.0.0.1:9023&create_bucket=true",
        ))
        .unwrap();
        assert_eq!(config.bucket, "b");
        assert_eq!(config.prefix, "apps/kv/");
        assert!(config.create_bucket && config.anonymous);
        assert!(GcsConfig::from_spec(&spec("gcs://b?colour=1")).is_err());
        assert!(GcsConfig::from_spec(&spec("gcs:///x")).is_err());
    }
}
