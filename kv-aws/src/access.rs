//! How every AWS provider reaches AWS: region, endpoint, profile, credentials and the SDK's
//! attempts, parsed from the same store fields and turned into one SDK configuration.
//!
//! Static credentials (tests, emulators) never fall back to the standard chain, so nothing
//! looks for an instance metadata service; without them the standard chain is used
//! (environment, shared config and profile, web identity, container and instance metadata).

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use kv_core::config::ProviderField;
use kv_core::{ConfigError, ConnectionKey, Secret};

/// The settings shared by the AWS providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAccess {
    /// AWS region; the standard chain (env, profile) when unset.
    pub region: Option<String>,
    /// Endpoint override (an emulator, an S3-compatible service); AWS's regional endpoint when
    /// unset.
    pub endpoint: Option<String>,
    /// Shared-config profile name.
    pub profile: Option<String>,
    /// Static access key id (tests); the standard credential chain when unset.
    pub access_key_id: Option<String>,
    /// Static secret (never printed).
    pub secret_access_key: Option<Secret>,
    /// Attempts per request by the SDK (default 1: the host's `KvStore` is the one layer that
    /// retries, knowing which writes are safe to resend; more attempts multiply with it).
    pub max_attempts: u32,
}

impl Default for AwsAccess {
    fn default() -> Self {
        AwsAccess {
            region: None,
            endpoint: None,
            profile: None,
            access_key_id: None,
            secret_access_key: None,
            max_attempts: 1,
        }
    }
}

impl AwsAccess {
    /// Takes `field` if it is one of these settings: `Ok(true)` when it was.
    pub fn apply(&mut self, field: &ProviderField) -> Result<bool, ConfigError> {
        match field.name.as_str() {
            "region" => self.region = Some(field.text()?),
            "endpoint" => self.endpoint = Some(field.text()?),
            "profile" => self.profile = Some(field.text()?),
            "access_key_id" => self.access_key_id = Some(field.text()?),
            "secret_access_key" => self.secret_access_key = Some(field.secret()?),
            "max_attempts" => self.max_attempts = field.integer(1..=10)? as u32,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Both halves of static credentials, or neither.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(ConfigError(
                "set both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        Ok(())
    }

    /// Adds every setting to a client's identity, the secret as a fingerprint.
    pub fn identify(&self, key: ConnectionKey) -> ConnectionKey {
        key.field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("profile", &self.profile)
            .field("access_key_id", &self.access_key_id)
            .secret("secret_access_key", self.secret_access_key.as_ref())
            .field("max_attempts", self.max_attempts)
    }

    /// The SDK configuration these settings describe.
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts));
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "wasi-kv-config",
            ));
        }
        loader.load().await
    }
}
