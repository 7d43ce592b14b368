//! AWS providers for wasi-kv: `dynamodb` (docs/providers/dynamodb.md), one table per
//! deployment with consistent reads everywhere, and `s3` (docs/providers/s3.md), one object
//! per key. Both reach AWS the same way ([`access`]).
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod access;
pub mod dynamodb;
pub mod s3;
mod sdk_error;

pub use dynamodb::{DynamoConfig, DynamoFactory, DynamoProvider};
pub use s3::{S3Config, S3Factory, S3Provider};

/// Registers `dynamodb` and `s3` with a registry.
pub fn register(registry: &mut kv_core::ProviderRegistry) {
    registry.register(DynamoFactory);
    registry.register(S3Factory);
}
