//! Redis provider for wasi-kv (docs/providers/redis.md): one Redis key per wasi-kv key under a
//! namespace prefix; GET/SET/DEL/EXISTS, `SET PX` for TTL, INCRBY, Lua scripts for CAS, MGET and
//! MSET for batches, SCAN for listing. The same on a Redis Cluster (`redis+cluster://`), with
//! batches split per slot and listing across every primary.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod changes;
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
        let connection = client::connect(&config)?;
        check_eviction_policy(&connection, &config).await?;
        Ok(Arc::new(RedisProvider::new(connection, wait)))
    }
}

/// Refuses a server (or a cluster primary) whose `maxmemory-policy` is `allkeys-*`, unless
/// `allow_eviction` accepts it: such a server may evict stored values and the records that make
/// increments and swaps exactly once. `noeviction` and `volatile-*` are fine: the records have
/// no TTL, so `volatile-*` never evicts them. A server that cannot be reached or asked within
/// the connection's timeouts is not checked (logged), and is connected to lazily as always.
async fn check_eviction_policy(
    connection: &client::RedisConnection,
    config: &RedisConfig,
) -> Result<(), ConfigError> {
    let place = format!("redis {}:{}", config.host, config.port);
    let within = config.connect_timeout + config.response_timeout;
    let policies = match tokio::time::timeout(within, connection.eviction_policies()).await {
        Ok(Ok(policies)) => policies,
        Ok(Err(err)) => {
            tracing::warn!(
                server = %place,
                error = %err,
                "could not read the server's maxmemory-policy; an allkeys-* policy could evict \
                 stored values and the records of applied increments and swaps"
            );
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(
                server = %place,
                "the server did not tell its maxmemory-policy in time; not checked"
            );
            return Ok(());
        }
    };
    for policy in policies {
        if !policy.starts_with("allkeys-") {
            continue;
        }
        if config.allow_eviction {
            tracing::warn!(
                server = %place,
                policy = %policy,
                "maxmemory-policy may evict any key: stored values can disappear, and an \
                 increment or swap retried after its record was evicted can apply twice \
                 (accepted by allow_eviction)"
            );
        } else {
            return Err(ConfigError(format!(
                "{place}: maxmemory-policy is {policy}, which may evict any key: stored values \
                 and the records that keep increments and swaps exactly once. Use noeviction \
                 or a volatile-* policy, or set allow_eviction = true to accept that"
            )));
        }
    }
    Ok(())
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
