//! Where a history run's hosts connect, and what it can break there: the one place that turns
//! "provider P, on a local emulator / on this URL / in process" into host connections and
//! [`Faults`]. Faults are injected only into backends this process started on loopback.

use std::sync::Arc;

use kv_core::config::{StoreSpec, parse_short_form};
use kv_core::{MemoryProvider, Provider, ProviderRegistry};
use kv_testkit::emulator::Emulator;
use kv_testkit::faults::{FaultProxy, Lossy, LossyState};

use super::nemesis::{Faults, Network};

/// Where the store is.
#[derive(Clone, Debug)]
pub enum Source {
    /// In this process: the in-memory provider, or SQLite on a file in a temporary directory.
    InProcess,
    /// The provider's local emulator, started on loopback (durable when `crash` is asked for).
    Emulator {
        /// Start it so that it can be killed and restarted on its data.
        durable: bool,
    },
    /// A store the user runs: no faults can be injected.
    Url(String),
}

/// Hosts ready to run: one provider connection per host, and the faults available.
pub struct Setup {
    /// One per host.
    pub providers: Vec<Arc<dyn Provider>>,
    /// The store URL host processes use (through the fault proxy when there is one);
    /// `None` for the in-memory store, which lives in this process only.
    pub process_url: Option<String>,
    /// The namespace every host uses.
    pub namespace: String,
    /// What can be broken.
    pub faults: Faults,
    /// The backend, for the report.
    pub backend: String,
    /// Emulators, proxies and directories kept alive for the run.
    pub keep_alive: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Connects `hosts` hosts to a store of `provider` at `source`.
pub async fn setup(
    registry: &ProviderRegistry,
    provider: &str,
    source: Source,
    hosts: u32,
) -> Result<Setup, String> {
    let hosts = hosts.max(1);
    let namespace = format!("check-{:08x}", rand::random::<u32>());
    let connect = |url: String| async move {
        let spec = spec(&url)?;
        registry
            .connect(&spec)
            .await
            .map_err(|err| format!("connecting to {provider}: {err}"))
    };
    match source {
        Source::InProcess if provider == "memory" => {
            let state = Arc::new(LossyState::default());
            let shared = Lossy::provider_with(Arc::new(MemoryProvider::new()), &state);
            Ok(Setup {
                providers: (0..hosts).map(|_| shared.clone()).collect(),
                process_url: None,
                namespace,
                faults: Faults {
                    network: Network::InProcess(state),
                    crash: None,
                    kill_host: None,
                },
                backend: "in-memory (this process)".to_string(),
                keep_alive: Vec::new(),
            })
        }
        Source::InProcess if provider == "sqlite" => {
            let dir = tempfile::tempdir().map_err(|err| format!("temporary directory: {err}"))?;
            let url = format!("sqlite:{}", dir.path().join("check.db").display());
            let state = Arc::new(LossyState::default());
            let mut providers = Vec::new();
            for _ in 0..hosts {
                providers.push(Lossy::provider_with(connect(url.clone()).await?, &state));
            }
            Ok(Setup {
                providers,
                process_url: Some(url),
                namespace,
                faults: Faults {
                    network: Network::InProcess(state),
                    crash: None,
                    kill_host: None,
                },
                backend: "SQLite file, one connection pool per host".to_string(),
                keep_alive: vec![Arc::new(dir)],
            })
        }
        Source::InProcess => Err(format!(
            "{provider} is not in-process: pass --emulator or --store URL"
        )),
        Source::Emulator { durable } => {
            let emulator = Emulator::for_provider(provider)
                .ok_or_else(|| format!("no local emulator is known for provider {provider:?}"))?;
            let started = if durable {
                emulator.start_durable_async().await?
            } else {
                emulator.start_async().await?
            };
            let mut keep_alive: Vec<Arc<dyn std::any::Any + Send + Sync>> =
                vec![started.guard.clone()];
            let (url, network) = match emulator.fault_protocol() {
                Some(protocol) => {
                    let proxy = FaultProxy::start(started.addr(), protocol)
                        .await
                        .map_err(|err| format!("starting the fault proxy: {err}"))?;
                    let proxy = Arc::new(proxy);
                    keep_alive.push(proxy.clone());
                    (started.store_url_via(proxy.addr()), Network::Proxy(proxy))
                }
                None => (started.store_url.clone(), Network::Direct),
            };
            let mut providers = Vec::new();
            for _ in 0..hosts {
                providers.push(connect(url.clone()).await?);
            }
            Ok(Setup {
                providers,
                process_url: Some(url),
                namespace,
                faults: Faults {
                    network,
                    crash: started.crash.clone(),
                    kill_host: None,
                },
                backend: started.backend.clone(),
                keep_alive,
            })
        }
        Source::Url(url) => {
            let mut providers = Vec::new();
            for _ in 0..hosts {
                providers.push(connect(url.clone()).await?);
            }
            Ok(Setup {
                providers,
                process_url: Some(url.clone()),
                namespace,
                faults: Faults::none(),
                backend: format!("{provider} at the given URL"),
                keep_alive: Vec::new(),
            })
        }
    }
}

fn spec(url: &str) -> Result<StoreSpec, String> {
    parse_short_form(&format!("check={url}"))
        .map(|(_, spec)| spec)
        .map_err(|err| err.to_string())
}
