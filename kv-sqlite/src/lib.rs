//! SQLite provider for wasi-kv: a persistent store in one file, with nothing to install
//! (SQLite is bundled). Several `wasi-kv` processes may share the file: WAL mode, a busy
//! timeout, and immediate transactions for increments and swaps.
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod changes;
pub mod client;
pub mod config;
pub mod error;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use kv_core::{ConfigError, Provider, ProviderFactory, StoreSpec};

pub use changes::CHANGE_RETENTION_MS;
pub use config::SqliteConfig;
pub use store::SqliteProvider;

/// Builds SQLite providers from `sqlite:PATH` store specs.
#[derive(Debug, Default)]
pub struct SqliteFactory;

#[async_trait]
impl ProviderFactory for SqliteFactory {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        Ok(SqliteConfig::from_spec(spec)?.connection_key())
    }

    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let config = SqliteConfig::from_spec(spec)?;
        let opened = config.clone();
        let connection = tokio::task::spawn_blocking(move || client::open(&opened))
            .await
            .map_err(|err| ConfigError(format!("sqlite: {err}")))?
            .map_err(|err| {
                ConfigError(format!("sqlite {}: {}", config.path.display(), err.chain()))
            })?;
        Ok(Arc::new(SqliteProvider::new(
            connection,
            config.sweep_interval,
            config.busy_timeout,
        )))
    }
}

/// The version of the SQLite library compiled in, for reports.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// Registers `sqlite` with a registry.
pub fn register(registry: &mut kv_core::ProviderRegistry) {
    registry.register(SqliteFactory);
}
