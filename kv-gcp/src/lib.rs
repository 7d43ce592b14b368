//! Google Cloud Storage provider for wasi-kv (docs/providers/gcs.md), over the JSON API
//! (`gcloud-storage`): one object per key, generation preconditions for CAS and increment.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod batch;
pub mod client;
pub mod config;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::GcsConfig;
pub use store::GcsProvider;

/// Builds Cloud Storage providers from `gcs://BUCKET/PREFIX?...` specs.
#[derive(Debug, Default)]
pub struct GcsFactory;

#[async_trait]
impl ProviderFactory for GcsFactory {
    fn name(&self) -> &'static str {
        "gcs"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(GcsConfig::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = GcsConfig::from_spec(spec)?;
        let client = client::build_client(&config).await?;
        if config.create_bucket {
            client::ensure_bucket(&client, &config)
                .await
                .map_err(|err| ConfigError(format!("gcs bucket {}: {err}", config.bucket)))?;
        }
        Ok(Arc::new(GcsProvider::new(
            client,
            &config.bucket,
            &config.prefix,
        )))
    }
}

/// Registers `gcs` with a registry.
pub fn register(registry: &mut kv_core::ProviderRegistry) {
    registry.register(GcsFactory);
}
