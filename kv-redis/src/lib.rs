//! Redis provider for wasi-kv (docs/providers/redis.md): one Redis key per wasi-kv key under a
//! namespace prefix; GET/SET/DEL/EXISTS, `SET PX` for TTL, INCRBY, Lua scripts for CAS, MGET and
//! MSET for batches, SCAN for listing. The same on a Redis Cluster (`redis+cluster://`), with
//! batches split per slot and listing across every primary.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod error;
pub mod slot;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::RedisConfig;
pub use store::{RedisProvider, ReplicaWait, key_prefix};

/// Builds Redis providers from `redis://` / `rediss://` store specs.
#[derive(Debug, Default)]
pub struct RedisFactory;

#[async_trait]
impl ProviderFactory for RedisFactory {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(RedisConfig::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = RedisConfig::from_spec(spec)?;
        let wait = ReplicaWait {
            replicas: config.wait_replicas,
            timeout: config.wait_timeout,
        };
        Ok(Arc::new(RedisProvider::new(
            client::connect(&config)?,
            wait,
        )))
    }
}

/// Registers `redis`, `rediss` (TLS), `redis+cluster` and `rediss+cluster` (Redis Cluster;
/// `redis-cluster` is the same for a `provider = ` field) with a registry: one provider, the
/// URL's scheme says which.
pub fn register(registry: &mut kv_core::ProviderRegistry) {
    registry.register(RedisFactory);
    for name in ["rediss", "redis+cluster", "rediss+cluster", "redis-cluster"] {
        registry.register(Alias(name));
    }
}

/// Another name of the Redis provider (URL schemes name providers).
#[derive(Debug)]
struct Alias(&'static str);

#[async_trait]
impl ProviderFactory for Alias {
    fn name(&self) -> &'static str {
        self.0
    }
    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        RedisFactory.connection_key(spec)
    }
    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        RedisFactory.connect(spec).await
    }
}
