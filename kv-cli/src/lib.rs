//! The `wasi-kv` command as a library, so tests can drive it in-process.

pub mod check;
pub mod cli;
pub mod conformance;
pub mod metrics;
pub mod outbound;
pub mod run;
pub mod serve;
pub mod spin_config;
pub mod store;
pub mod traces;
pub mod watch;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kv_core::config::{CursorsTable, LimitsTable, StoreTable};
use kv_core::{ConfigError, KvConfig, ProviderRegistry, Stores};
use outbound::OutboundTable;
use serde::Deserialize;

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

/// Checks a `--provider` name: a provider this build knows, or with `--emulator` also the name
/// of a local emulator run (`s3-moto`: the `s3` provider on moto).
pub fn known_provider(
    registry: &ProviderRegistry,
    name: &str,
    emulator: bool,
) -> anyhow::Result<()> {
    let emulated = emulator && kv_testkit::emulator::Emulator::for_provider(name).is_some();
    if !registry.names().contains(&name) && !emulated {
        anyhow::bail!(
            "unknown provider {name:?} (this build knows: {})",
            registry.names().join(", ")
        );
    }
    Ok(())
}

/// The `--config` file: kv-core's tables and serve's `[outbound]`, one document that refuses
/// any other top-level key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct ConfigFile {
    #[serde(default)]
    limits: LimitsTable,
    cursors: Option<CursorsTable>,
    #[serde(default)]
    stores: BTreeMap<String, StoreTable>,
    #[serde(default)]
    outbound: OutboundTable,
}

/// What the store flags configure, each file read once.
#[derive(Debug, Default)]
pub struct Config {
    /// Stores, limits, cursor secret and seeds.
    pub kv: KvConfig,
    /// The config file's `[outbound]`, for `serve`.
    pub outbound: OutboundTable,
}

/// `--config`, `--store`, `--spin-runtime-config` and `--seed` together.
pub fn load(args: &cli::StoreArgs) -> Result<Config, ConfigError> {
    let mut config = load_file(args.config.as_deref(), &args.stores)?;
    if let Some(path) = &args.spin_runtime_config {
        let mut spin = KvConfig::default();
        spin_config::add_spin_runtime_config(&mut spin, path)?;
        // `--store` and `--config` stores of the same name win over Spin's.
        for (name, spec) in spin.stores {
            config.kv.stores.entry(name).or_insert(spec);
        }
    }
    for seed in &args.seeds {
        config.kv.add_seed(seed)?;
    }
    Ok(config)
}

/// The configured stores, connected and seeded: what `run` and `serve` offer.
pub async fn open_stores(config: &KvConfig) -> anyhow::Result<Arc<Stores>> {
    open_stores_observed(config, None).await
}

/// [`open_stores`], with every store operation handed to `observer` (metrics, spans).
pub async fn open_stores_observed(
    config: &KvConfig,
    observer: Option<Arc<dyn kv_core::observe::Observer>>,
) -> anyhow::Result<Arc<Stores>> {
    let stores = registry().build_observed(config, observer).await?;
    stores
        .seed(&config.seeds)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(Arc::new(stores))
}

/// Reads `--config` (if any) and applies `--store` short forms on top.
pub fn load_config(config: Option<&Path>, stores: &[String]) -> Result<KvConfig, ConfigError> {
    Ok(load_file(config, stores)?.kv)
}

fn load_file(path: Option<&Path>, stores: &[String]) -> Result<Config, ConfigError> {
    let mut config = match path {
        Some(path) => {
            let file: ConfigFile = kv_core::config::read_toml(path)?;
            let tables = kv_core::config::ConfigFile {
                limits: file.limits,
                cursors: file.cursors,
                stores: file.stores,
            };
            let kv = tables
                .resolve(&|name| std::env::var(name).ok(), path.parent())
                .map_err(|err| ConfigError::at(path.display(), err))?;
            Config {
                kv,
                outbound: file.outbound,
            }
        }
        None => Config::default(),
    };
    for store in stores {
        config.kv.add_short_form(store)?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One read of the file gives kv-core's tables and serve's `[outbound]`; each refuses keys
    /// it does not know, naming the file and the key.
    #[test]
    fn outbound_and_stores_from_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasi-kv.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load_file(Some(&path), &[])
        };
        let config = load(
            "[outbound]\nallowed_hosts = [\"https://api.example.com\", \"http://127.0.0.1:*\"]\n\
             [stores.c]\nurl = \"memory:\"\n",
        )
        .unwrap();
        assert_eq!(
            config.outbound.allowed_hosts,
            ["https://api.example.com", "http://127.0.0.1:*"]
        );
        assert!(config.kv.stores.contains_key("c"));
        assert!(load("").unwrap().outbound.allowed_hosts.is_empty());
        for (bad, expected) in [
            (
                "[outbound]\nallowed_hosts = \"https://x\"\n",
                "outbound.allowed_hosts: invalid type: a string, expected a sequence (line 2",
            ),
            (
                "[outbound]\nallowed_hosts = [1]\n",
                "outbound.allowed_hosts[0]: invalid type: integer `1`",
            ),
            (
                "[outbound]\nallow = []\n",
                "outbound.allow: unknown field `allow`, expected `allowed_hosts` (line 2",
            ),
            ("outbound = 1\n", "outbound: invalid type: integer `1`"),
            ("[outbund]\n", "outbund: unknown field `outbund`"),
            (
                "[stores.c]\nprovider = \"memory\"\nx = \"${KV_CLI_UNSET_VAR}\"\n",
                "stores.c.x: environment variable KV_CLI_UNSET_VAR is not set",
            ),
        ] {
            let err = load(bad).unwrap_err().to_string();
            let expected = format!("{}: {expected}", path.display());
            assert!(err.starts_with(&expected), "{bad:?} gave {err:?}");
        }
    }
}
