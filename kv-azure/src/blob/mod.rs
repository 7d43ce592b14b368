//! The `azblob` provider (docs/providers/azblob.md): one block blob per key in one container,
//! ETags as versions for CAS and exactly-once increments.

pub mod client;
pub mod config;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::AzblobConfig;
pub use store::AzblobProvider;

/// Builds Blob Storage providers from `azblob://ACCOUNT/CONTAINER/PREFIX` specs.
#[derive(Debug, Default)]
pub struct AzblobFactory;

#[async_trait]
impl ProviderFactory for AzblobFactory {
    fn name(&self) -> &'static str {
        "azblob"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(AzblobConfig::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = AzblobConfig::from_spec(spec)?;
        let failed = |err| ConfigError(format!("azblob {}: {err}", config.container));
        let container = client::container_client(&config).map_err(failed)?;
        if config.create_container {
            client::ensure_container(&container).await.map_err(failed)?;
        }
        Ok(Arc::new(AzblobProvider::new(
            Arc::new(container),
            &config.prefix,
        )))
    }
}
