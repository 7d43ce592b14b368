//! Azure providers for wasi-kv: `cosmos` (Cosmos DB for NoSQL, docs/providers/cosmos.md) and
//! `azblob` (Blob Storage, docs/providers/azblob.md), sharing one identity (account key or
//! Microsoft Entra ID).
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod blob;
pub mod cosmos;
pub mod identity;

pub use blob::{AzblobConfig, AzblobFactory, AzblobProvider};
pub use cosmos::{CosmosConfig, CosmosFactory, CosmosProvider};

/// Registers `cosmos` and `azblob` with a registry.
pub fn register(registry: &mut kv_core::ProviderRegistry) {
    registry.register(CosmosFactory);
    registry.register(AzblobFactory);
}
