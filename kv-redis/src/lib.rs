//! Redis provider for wasi-kv (docs/providers/redis.md): one Redis key per wasi-kv key under a namespace
//! prefix; GET/SET/DEL/EXISTS, `SET PX` for TTL, INCRBY, Lua scripts for CAS, MGET and
//! pipelines for batches, SCAN for listing.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use config::RedisConfig;
pub use store::{RedisProvider, key_prefix};

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
        Ok(Arc::new(RedisProvider::new(client::connect(&config)?)))
    }
}

/// Registers `redis` and `rediss` (TLS) with a registry.
pub fn register(registry: &mut kv_core::ProviderRegistry) {
    registry.register(RedisFactory);
    registry.register(TlsAlias);
}

/// `rediss://` URLs name the provider `rediss`; they are the same provider with TLS.
#[derive(Debug, Default)]
struct TlsAlias;

#[async_trait]
impl ProviderFactory for TlsAlias {
    fn name(&self) -> &'static str {
        "rediss"
    }
    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        RedisFactory.connection_key(spec)
    }
    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        RedisFactory.connect(spec).await
    }
}
