//! The `s3` provider (docs/providers/s3.md): one object per key in one bucket, ETags as
//! versions for CAS and exactly-once increments, on Amazon S3 and S3-compatible services that
//! support conditional writes.

pub mod client;
pub mod config;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::S3Config;
pub use store::S3Provider;

/// Builds S3 providers from `s3://BUCKET/PREFIX?...` specs.
#[derive(Debug, Default)]
pub struct S3Factory;

#[async_trait]
impl ProviderFactory for S3Factory {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(S3Config::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = S3Config::from_spec(spec)?;
        let client = client::build_client(&config).await;
        if config.create_bucket {
            client::ensure_bucket(&client, &config)
                .await
                .map_err(|err| ConfigError(format!("s3 bucket {}: {err}", config.bucket)))?;
        }
        Ok(Arc::new(
            S3Provider::new(client, &config.bucket, &config.prefix)
                .with_sdk_resends(config.access.max_attempts > 1),
        ))
    }
}
