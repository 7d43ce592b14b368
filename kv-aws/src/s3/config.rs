//! Configuration: `s3://BUCKET[/PREFIX]?region=..&endpoint=..&force_path_style=true&create_bucket=true`,
//! or a `[stores.NAME]` table with `bucket`, `prefix` and the same fields.

use kv_core::config::{ProviderField, redact_url};
use kv_core::{ConfigError, ConnectionKey, StoreSpec};

use crate::access::AwsAccess;

/// Where the objects go and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Object key prefix for every store of this bucket ("" or ending in `/`).
    pub prefix: String,
    /// Region, endpoint (an emulator, MinIO, R2), credentials and the SDK's attempts.
    pub access: AwsAccess,
    /// Address buckets as `ENDPOINT/BUCKET` instead of `BUCKET.ENDPOINT`: what emulators and
    /// most S3-compatible services on an IP address need.
    pub force_path_style: bool,
    /// Create the bucket if it is missing.
    pub create_bucket: bool,
}

impl S3Config {
    /// Parses a store spec: URL first, then file fields (unknown fields are errors).
    pub fn from_spec(spec: &StoreSpec) -> Result<S3Config, ConfigError> {
        let mut config = S3Config {
            bucket: String::new(),
            prefix: String::new(),
            access: AwsAccess::default(),
            force_path_style: false,
            create_bucket: false,
        };
        if let Some(url) = &spec.url {
            let shown = redact_url(url);
            if url.scheme() != "s3" {
                return Err(ConfigError(format!("{shown}: expected an s3:// URL")));
            }
            config.bucket = url.host_str().unwrap_or_default().to_string();
            config.prefix = url.path().trim_start_matches('/').to_string();
        }
        for field in spec.provider_fields() {
            config.apply(&field)?;
        }
        if config.bucket.is_empty() {
            return Err(ConfigError(
                "the s3 provider needs a bucket: s3://BUCKET/PREFIX".into(),
            ));
        }
        if !config.prefix.is_empty() && !config.prefix.ends_with('/') {
            config.prefix.push('/');
        }
        config.access.validate()?;
        Ok(config)
    }

    fn apply(&mut self, field: &ProviderField) -> Result<(), ConfigError> {
        if self.access.apply(field)? {
            return Ok(());
        }
        match field.name.as_str() {
            "bucket" => self.bucket = field.text()?,
            "prefix" => self.prefix = field.text()?,
            "force_path_style" => self.force_path_style = field.flag()?,
            "create_bucket" => self.create_bucket = field.flag()?,
            _ => return Err(field.unknown("s3")),
        }
        Ok(())
    }

    /// Identity of the client: every setting that changes it, the secret as a fingerprint.
    /// Stores with equal keys share one SDK client.
    pub fn connection_key(&self) -> String {
        self.access
            .identify(
                ConnectionKey::new("s3")
                    .field("bucket", &self.bucket)
                    .field("prefix", &self.prefix),
            )
            .field("force_path_style", self.force_path_style)
            .field("create_bucket", self.create_bucket)
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
        let config = S3Config::from_spec(&spec(
            "s3://kv/app?region=eu-west-1&endpoint=http://127.0.0.1:4566&force_path_style=true\
             &create_bucket=true",
        ))
        .unwrap();
        assert_eq!(config.bucket, "kv");
        assert_eq!(config.prefix, "app/");
        assert_eq!(config.access.region.as_deref(), Some("eu-west-1"));
        assert!(config.force_path_style && config.create_bucket);
        assert_eq!(S3Config::from_spec(&spec("s3://kv")).unwrap().prefix, "");
    }

    #[test]
    fn rejects_unknown_and_incomplete() {
        assert!(S3Config::from_spec(&spec("s3://kv?colour=red")).is_err());
        assert!(S3Config::from_spec(&spec("s3://?region=x")).is_err());
        assert!(S3Config::from_spec(&spec("s3://kv?access_key_id=a")).is_err());
        assert!(S3Config::from_spec(&spec("dynamodb://kv")).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let config =
            S3Config::from_spec(&spec("s3://kv?access_key_id=a&secret_access_key=hunter2"))
                .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.connection_key().contains("hunter2"));
    }
}
