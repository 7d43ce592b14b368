//! The `dynamodb` provider (docs/providers/dynamodb.md): one table per deployment, partition
//! key = namespace, sort key = key; consistent reads everywhere.

pub(crate) mod changes;
pub mod client;
pub mod config;
pub mod counter;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::DynamoConfig;
pub use store::DynamoProvider;

/// Builds DynamoDB providers from `dynamodb://TABLE?...` specs.
#[derive(Debug, Default)]
pub struct DynamoFactory;

#[async_trait]
impl ProviderFactory for DynamoFactory {
    fn name(&self) -> &'static str {
        "dynamodb"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(DynamoConfig::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = DynamoConfig::from_spec(spec)?;
        let (client, streams) = client::build_clients(&config).await;
        if config.create_table {
            client::ensure_table(&client, &config.table)
                .await
                .map_err(|err| ConfigError(format!("dynamodb table {}: {err}", config.table)))?;
        }
        Ok(Arc::new(
            DynamoProvider::new(client, &config.table)
                .with_sdk_resends(config.access.max_attempts > 1)
                .with_change_feed(streams, config.create_table),
        ))
    }
}
