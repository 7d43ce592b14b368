//! What the conformance and fault test binaries share: every provider of the workspace, by
//! its store URL.

use std::sync::Arc;

use kv_core::{Provider, ProviderRegistry};

/// Every provider of the workspace.
#[allow(dead_code)] // Not every test binary uses each helper.
pub fn registry() -> ProviderRegistry {
    let mut registry = ProviderRegistry::new();
    kv_redis::register(&mut registry);
    kv_aws::register(&mut registry);
    kv_gcp::register(&mut registry);
    kv_azure::register(&mut registry);
    kv_sqlite::register(&mut registry);
    registry
}

/// Connects to `provider` at `url` through the provider's own factory.
#[allow(dead_code)]
pub async fn connect(provider: &str, url: &str) -> Result<Arc<dyn Provider>, String> {
    let (_, spec) = kv_core::config::parse_short_form(&format!("{provider}={url}"))
        .map_err(|err| err.to_string())?;
    registry()
        .connect(&spec)
        .await
        .map_err(|err| err.to_string())
}
