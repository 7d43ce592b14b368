//! The `cosmos` provider (docs/providers/cosmos.md): one container per deployment, an item
//! per key, stores spread over several logical partitions.

pub mod client;
pub mod config;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::CosmosConfig;
pub use store::CosmosProvider;

/// Builds Cosmos DB providers from `cosmos://ACCOUNT_HOST/DATABASE/CONTAINER` specs.
#[derive(Debug, Default)]
pub struct CosmosFactory;

#[async_trait]
impl ProviderFactory for CosmosFactory {
    fn name(&self) -> &'static str {
        "cosmos"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(CosmosConfig::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = CosmosConfig::from_spec(spec)?;
        let container = client::connect(&config).await.map_err(|err| {
            ConfigError(format!(
                "cosmos {}/{}: {err}",
                config.database, config.container
            ))
        })?;
        Ok(Arc::new(CosmosProvider::new(container)))
    }
}
