//! The set of stores a host offers to its components, and the factories that build providers
//! from configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::config::{ConfigError, KvConfig, StoreSpec};
use crate::cursor::{CursorSecret, CursorSigner};
use crate::error::{ErrorKind, KvError, Result};
use crate::limits::Limits;
use crate::memory::MemoryProvider;
use crate::observe::Observer;
use crate::provider::{Bucket, Provider};
use crate::store::{Access, KvStore, KvStoreParts};

/// Builds a provider from a [`StoreSpec`]; one per provider crate.
#[async_trait]
pub trait ProviderFactory: Send + Sync + 'static {
    /// The provider name used in configuration (`provider = "..."`, the URL scheme).
    fn name(&self) -> &'static str;

    /// Validates the spec's URL and options and returns the identity of the backend
    /// connection it describes: stores with equal keys share one provider (and its pool).
    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError>;

    /// Creates the provider. Connecting may be lazy; an unreachable backend shows up as
    /// `unavailable` on the first operation, not here.
    async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError>;
}

/// The in-memory provider's factory: `memory:` with no options. Every memory store of one host
/// shares one map, isolated by namespace.
#[derive(Default)]
pub struct MemoryFactory {
    provider: MemoryProvider,
}

#[async_trait]
impl ProviderFactory for MemoryFactory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        if let Some(url) = &spec.url {
            let bare = url.host().is_none()
                && url.path().trim_matches('/').is_empty()
                && url.query().is_none()
                && url.username().is_empty();
            if !bare {
                return Err(ConfigError(
                    "the memory provider takes no URL options (use `memory:`)".to_string(),
                ));
            }
        }
        if let Some(field) = spec.options.keys().next() {
            return Err(ConfigError(format!(
                "unknown field `{field}` for the memory provider"
            )));
        }
        Ok("memory".to_string())
    }

    async fn connect(&self, _spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        Ok(Arc::new(self.provider.clone()))
    }
}

/// The providers a host knows how to build.
#[derive(Clone)]
pub struct ProviderRegistry {
    factories: BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        let mut registry = ProviderRegistry {
            factories: BTreeMap::new(),
        };
        registry.register(MemoryFactory::default());
        registry
    }
}

impl ProviderRegistry {
    /// A registry with the in-memory provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a provider factory.
    pub fn register(&mut self, factory: impl ProviderFactory) -> &mut Self {
        self.factories.insert(factory.name(), Arc::new(factory));
        self
    }

    /// The registered provider names.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Creates the provider one spec describes (for tools that drive a provider directly).
    pub async fn connect(&self, spec: &StoreSpec) -> Result<Arc<dyn Provider>, ConfigError> {
        let factory = self.factory(&spec.provider)?;
        factory.connection_key(spec)?;
        factory.connect(spec).await
    }

    /// The identity of the backend and its settings `spec` describes, as stores share a
    /// connection by it (secrets only as fingerprints): what a tool keeps to recognise the
    /// same store in a later run.
    pub fn connection_key(&self, spec: &StoreSpec) -> Result<String, ConfigError> {
        let factory = self.factory(&spec.provider)?;
        Ok(format!(
            "{}\u{0}{}",
            factory.name(),
            factory.connection_key(spec)?
        ))
    }

    fn factory(&self, provider: &str) -> Result<&Arc<dyn ProviderFactory>, ConfigError> {
        self.factories.get(provider).ok_or_else(|| {
            ConfigError(format!(
                "unknown provider {provider:?} (this build knows: {})",
                self.names().join(", ")
            ))
        })
    }

    /// Builds every configured store; with no store configured, `default` is in-memory.
    pub async fn build(&self, config: &KvConfig) -> Result<Stores, ConfigError> {
        self.build_observed(config, None).await
    }

    /// [`ProviderRegistry::build`], with every operation handed to `observer`.
    pub async fn build_observed(
        &self,
        config: &KvConfig,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Stores, ConfigError> {
        let mut specs = config.stores.clone();
        if specs.is_empty() {
            let (name, spec) = crate::config::parse_short_form("default=memory:")?;
            specs.insert(name, spec);
        }
        let mut connections: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        let mut builder =
            Stores::builder(config.limits.clone()).cursor_secret(config.cursor_secret.clone());
        if let Some(observer) = observer {
            builder = builder.observer(observer);
        }
        for (name, spec) in &specs {
            let place = format!("store {name:?}");
            let factory = self
                .factory(&spec.provider)
                .map_err(|err| ConfigError::at(&place, err))?;
            let key = factory
                .connection_key(spec)
                .map_err(|err| ConfigError::at(&place, err))?;
            let key = format!("{}\u{0}{key}", factory.name());
            let provider = match connections.get(&key) {
                Some(provider) => provider.clone(),
                None => {
                    let provider = factory
                        .connect(spec)
                        .await
                        .map_err(|err| ConfigError::at(&place, err))?;
                    connections.insert(key, provider.clone());
                    provider
                }
            };
            builder = builder.store(name, provider, &spec.namespace, spec.access);
        }
        Ok(builder.build())
    }
}

struct Binding {
    provider: Arc<dyn Provider>,
    namespace: String,
    access: Access,
    bucket: OnceCell<Arc<dyn Bucket>>,
}

/// The stores one host offers, by identifier. Shared by every instance of the host, so an
/// opened bucket (and its connection) is reused.
pub struct Stores {
    bindings: HashMap<String, Binding>,
    limits: Limits,
    cursors: CursorSigner,
    observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.bindings.keys().collect();
        names.sort();
        f.debug_struct("Stores").field("names", &names).finish()
    }
}

/// Builder for [`Stores`], for hosts that construct providers themselves.
pub struct StoresBuilder {
    bindings: HashMap<String, Binding>,
    limits: Limits,
    cursor_secret: Option<CursorSecret>,
    observer: Option<Arc<dyn Observer>>,
}

impl StoresBuilder {
    /// Offers `provider`'s `namespace` as store `name`.
    pub fn store(
        mut self,
        name: &str,
        provider: Arc<dyn Provider>,
        namespace: &str,
        access: Access,
    ) -> Self {
        self.bindings.insert(
            name.to_string(),
            Binding {
                provider,
                namespace: namespace.to_string(),
                access,
                bucket: OnceCell::new(),
            },
        );
        self
    }

    /// Signs list cursors with `secret` instead of a per-process random one, so every host
    /// configured with it (replicas behind a load balancer) accepts the others' cursors.
    pub fn cursor_secret(mut self, secret: Option<CursorSecret>) -> Self {
        self.cursor_secret = secret;
        self
    }

    /// Hands every operation of every store to `observer` (metrics, traces).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The finished set.
    pub fn build(self) -> Stores {
        let cursors = match &self.cursor_secret {
            Some(secret) => CursorSigner::from_secret(secret),
            None => CursorSigner::random(),
        };
        Stores {
            bindings: self.bindings,
            limits: self.limits,
            cursors,
            observer: self.observer,
        }
    }
}

impl Stores {
    /// An empty set with the given limits ([`Limits::effective`]: the operation timeout is
    /// clamped so retries end before the records of applied increments and swaps expire).
    pub fn builder(limits: Limits) -> StoresBuilder {
        StoresBuilder {
            bindings: HashMap::new(),
            limits: limits.effective(),
            cursor_secret: None,
            observer: None,
        }
    }

    /// The configured store identifiers, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.bindings.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The host limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether stores `a` and `b` are the same keys: one provider (connection) and namespace,
    /// whatever their names (`""` is the default store). A store reached over two different
    /// connections to one backend is not recognised.
    pub fn same_keys(&self, a: &str, b: &str) -> bool {
        match (self.binding(a), self.binding(b)) {
            (Some(a), Some(b)) => {
                Arc::ptr_eq(&a.provider, &b.provider) && a.namespace == b.namespace
            }
            _ => false,
        }
    }

    /// The binding of `name`; `""` is the default store unless configured itself.
    fn binding(&self, name: &str) -> Option<&Binding> {
        self.bindings.get(name).or_else(|| {
            name.is_empty()
                .then(|| self.bindings.get(crate::config::DEFAULT_STORE))
                .flatten()
        })
    }

    /// Opens store `name`: `no-such-store` if unknown, `access-denied` if not granted.
    pub async fn open(&self, name: &str) -> Result<KvStore> {
        self.open_as(name, None).await
    }

    /// Writes every seed into its store before a component runs. The host writes, so seeds
    /// reach read-only stores too; keys and values are checked like a guest's.
    pub async fn seed(&self, seeds: &[crate::config::Seed]) -> Result<()> {
        for seed in seeds {
            let store = self.open_as(&seed.store, Some(Access::ReadWrite)).await?;
            store
                .set(&seed.key, seed.value.clone())
                .await
                .map_err(|err| {
                    KvError::new(
                        err.kind(),
                        format!(
                            "seeding {:?} in store {:?}: {}",
                            seed.key,
                            seed.store,
                            err.message()
                        ),
                    )
                })?;
        }
        Ok(())
    }

    /// Opens `name` with its configured access, or with `access` when the host itself writes.
    async fn open_as(&self, name: &str, access: Option<Access>) -> Result<KvStore> {
        // `""` is the only identifier wasmtime's keyvalue host knows: unless it is configured
        // itself, it is the default store, so components written for wasmtime run here.
        let binding = self.binding(name).ok_or_else(|| {
            KvError::new(
                ErrorKind::NoSuchStore,
                format!("no store named {name:?} is configured"),
            )
        })?;
        if access.is_none() && binding.access == Access::Denied {
            return Err(KvError::new(
                ErrorKind::AccessDenied,
                format!("this component may not use store {name:?}"),
            ));
        }
        let bucket = binding
            .bucket
            .get_or_try_init(|| binding.provider.open(&binding.namespace))
            .await
            .inspect_err(|err| tracing::warn!(store = name, error = %err.chain(), "open failed"))?
            .clone();
        let parts = KvStoreParts {
            name: name.to_string(),
            namespace: binding.namespace.clone(),
            provider: binding.provider.name().to_string(),
            capabilities: binding.provider.capabilities(),
            access: access.unwrap_or(binding.access),
            limits: self.limits.clone(),
            observer: self.observer.clone(),
        };
        Ok(KvStore::with_signer(parts, bucket, self.cursors.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvConfig;

    async fn build(args: &[&str]) -> Stores {
        let mut config = KvConfig::default();
        for arg in args {
            config.add_short_form(arg).unwrap();
        }
        ProviderRegistry::new().build(&config).await.unwrap()
    }

    /// `open("")` (wasmtime's only identifier) reaches `default` unless `""` is configured.
    #[tokio::test]
    async fn the_empty_identifier_is_the_default_store() {
        let stores = build(&[]).await;
        stores
            .open("default")
            .await
            .unwrap()
            .set("k", b"v".to_vec())
            .await
            .unwrap();
        let empty = stores.open("").await.unwrap();
        assert_eq!(empty.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(empty.name(), "");

        // Configured like any other store: here it is read-only over `default`'s data.
        let stores = stores_with_empty().await;
        let empty = stores.open("").await.unwrap();
        let err = empty.set("k", b"w".to_vec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);

        // Without `default` or `""`, it is unknown like any other name.
        let stores = build(&["cache=memory:"]).await;
        let err = stores.open("").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSuchStore);
    }

    #[tokio::test]
    async fn seeds_reach_every_store_before_the_component() {
        let mut config = KvConfig::default();
        config.add_short_form("default=memory:").unwrap();
        config
            .add_short_form("ro=memory:?access=read-only")
            .unwrap();
        config.add_seed("n=41").unwrap();
        config.add_seed("ro::k=v").unwrap();
        let stores = ProviderRegistry::new().build(&config).await.unwrap();
        stores.seed(&config.seeds).await.unwrap();
        let default = stores.open("").await.unwrap();
        assert_eq!(default.increment("n", 1).await.unwrap(), 42);
        let read_only = stores.open("ro").await.unwrap();
        assert_eq!(read_only.get("k").await.unwrap(), Some(b"v".to_vec()));
        // A seed for an unknown store, or an invalid key, is refused with its class.
        config.add_seed("nowhere::k=v").unwrap();
        let err = stores.seed(&config.seeds).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSuchStore);
        let err = stores
            .seed(&[crate::config::Seed {
                store: String::new(),
                key: String::new(),
                value: Vec::new(),
            }])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
    }

    async fn stores_with_empty() -> Stores {
        build(&["default=memory:", "=memory:?access=read-only"]).await
    }
}
