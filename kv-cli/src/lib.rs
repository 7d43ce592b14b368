//! The `wasi-kv` command as a library, so tests can drive it in-process.

pub mod cli;
pub mod conformance;
pub mod outbound;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod spin_config;

use kv_core::{ConfigError, KvConfig, ProviderRegistry};

/// The providers compiled into this build (cargo features add the cloud ones).
pub fn registry() -> ProviderRegistry {
    #[allow(unused_mut)]
    let mut registry = ProviderRegistry::new();
    #[cfg(feature = "redis")]
    kv_redis::register(&mut registry);
    #[cfg(feature = "aws")]
    kv_aws::register(&mut registry);
    #[cfg(feature = "gcp")]
    kv_gcp::register(&mut registry);
    #[cfg(feature = "azure")]
    kv_azure::register(&mut registry);
    #[cfg(feature = "sqlite")]
    kv_sqlite::register(&mut registry);
    registry
}

/// The stores of `--config` and `--store`, connected and seeded (`[stores.NAME.seed]`,
/// `--seed`): what `run` and `serve` offer.
pub async fn open_stores(args: &cli::StoreArgs) -> anyhow::Result<std::sync::Arc<kv_core::Stores>> {
    let mut config = load_config(args.config.as_deref(), &args.stores)?;
    if let Some(path) = &args.spin_runtime_config {
        let mut spin = kv_core::KvConfig::default();
        spin_config::add_spin_runtime_config(&mut spin, path)?;
        // `--store` and `--config` stores of the same name win over Spin's.
        for (name, spec) in spin.stores {
            config.stores.entry(name).or_insert(spec);
        }
    }
    for seed in &args.seeds {
        config.add_seed(seed)?;
    }
    let stores = registry().build(&config).await?;
    stores
        .seed(&config.seeds)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(std::sync::Arc::new(stores))
}

/// Reads `--config` (if any) and applies `--store` short forms on top.
pub fn load_config(
    config: Option<&std::path::Path>,
    stores: &[String],
) -> Result<KvConfig, ConfigError> {
    let mut loaded = match config {
        Some(path) => KvConfig::from_file(path)?,
        None => KvConfig::default(),
    };
    for store in stores {
        loaded.add_short_form(store)?;
    }
    Ok(loaded)
}
