//! How a client proves who it is to Azure, shared by Cosmos DB and Blob Storage: the account
//! key, or a Microsoft Entra ID token credential. Parsed from the same store fields for both.

use std::sync::Arc;

use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_identity::{
    ClientSecretCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use kv_core::config::ProviderField;
use kv_core::{ConfigError, ConnectionKey, KvError, Secret};

/// How the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The account key (`key`, or the service's environment variable).
    Key,
    /// Microsoft Entra ID: a service principal when `tenant_id`, `client_id` and
    /// `client_secret` are set; otherwise workload identity when `$AZURE_FEDERATED_TOKEN_FILE`
    /// is set (AKS); otherwise managed identity (`client_id` picks a user-assigned one).
    Entra,
}

/// The identity fields of an Azure store: `auth`, `key`, `tenant_id`, `client_id`,
/// `client_secret`. Secrets are never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureIdentity {
    /// How to authenticate (`auth = "key" | "entra"`, default `key`).
    pub auth: Auth,
    /// Account key; from `key =` or the service's environment variable.
    pub key: Option<Secret>,
    /// Entra ID tenant (service principal).
    pub tenant_id: Option<String>,
    /// Entra ID application (service principal) or user-assigned managed identity.
    pub client_id: Option<String>,
    /// Service principal secret.
    pub client_secret: Option<Secret>,
}

impl Default for AzureIdentity {
    fn default() -> Self {
        AzureIdentity {
            auth: Auth::Key,
            key: None,
            tenant_id: None,
            client_id: None,
            client_secret: None,
        }
    }
}

impl AzureIdentity {
    /// Takes `field` if it is one of these settings: `Ok(true)` when it was.
    pub fn apply(&mut self, service: &str, field: &ProviderField) -> Result<bool, ConfigError> {
        match field.name.as_str() {
            "key" => self.key = Some(field.secret()?).filter(|key| !key.expose().is_empty()),
            "auth" => {
                self.auth = match field.text()?.as_str() {
                    "key" => Auth::Key,
                    "entra" => Auth::Entra,
                    other => {
                        return Err(ConfigError(format!(
                            "{service}: auth must be \"key\" or \"entra\", not {other:?}"
                        )));
                    }
                }
            }
            "tenant_id" => self.tenant_id = Some(field.text()?),
            "client_id" => self.client_id = Some(field.text()?),
            "client_secret" => self.client_secret = Some(field.secret()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Falls back to the environment variable `key_env` for a missing key (key auth only).
    pub fn key_from_env(&mut self, key_env: &str, env: &dyn Fn(&str) -> Option<String>) {
        if self.key.is_none() && self.auth == Auth::Key {
            self.key = env(key_env).filter(|key| !key.is_empty()).map(Secret::new);
        }
    }

    /// The combinations that cannot work. `key_needed`: whether key auth needs a key (Blob
    /// Storage can take a SAS instead).
    pub fn validate(
        &self,
        service: &str,
        key_env: &str,
        key_needed: bool,
    ) -> Result<(), ConfigError> {
        match self.auth {
            Auth::Key if key_needed && self.key.is_none() => Err(ConfigError(format!(
                "the {service} provider needs an account key: `key = \"${{{key_env}}}\"` or \
                 ${key_env} (or auth = \"entra\")"
            ))),
            Auth::Entra if self.key.is_some() => Err(ConfigError(format!(
                "{service}: `key` and auth = \"entra\" exclude each other"
            ))),
            Auth::Entra
                if self.client_secret.is_some()
                    && (self.tenant_id.is_none() || self.client_id.is_none()) =>
            {
                Err(ConfigError(format!(
                    "{service}: client_secret needs tenant_id and client_id"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Adds every setting to a client's identity, secrets as fingerprints.
    pub fn identify(&self, key: ConnectionKey) -> ConnectionKey {
        key.field("auth", self.auth)
            .secret("key", self.key.as_ref())
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .secret("client_secret", self.client_secret.as_ref())
    }

    /// The Entra ID credential these settings ask for (see [`Auth::Entra`]).
    pub fn entra_credential(&self, service: &str) -> Result<Arc<dyn TokenCredential>, KvError> {
        let failed = |err: azure_core::Error| {
            KvError::internal(format!("{service}: Entra ID credential: {err}"))
        };
        if let (Some(tenant), Some(client), Some(secret)) =
            (&self.tenant_id, &self.client_id, &self.client_secret)
        {
            let credential = ClientSecretCredential::new(
                tenant,
                client.clone(),
                AzureSecret::from(secret.expose().to_string()),
                None,
            )
            .map_err(failed)?;
            return Ok(credential);
        }
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            let options = WorkloadIdentityCredentialOptions {
                client_id: self.client_id.clone(),
                tenant_id: self.tenant_id.clone(),
                ..Default::default()
            };
            return Ok(WorkloadIdentityCredential::new(Some(options)).map_err(failed)?);
        }
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: self.client_id.clone().map(UserAssignedId::ClientId),
            ..Default::default()
        };
        Ok(ManagedIdentityCredential::new(Some(options)).map_err(failed)?)
    }
}

/// Whether `endpoint` may use plain `http://`: only on loopback (emulators).
pub fn check_scheme(service: &str, endpoint: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(endpoint)
        .map_err(|err| ConfigError(format!("{service} endpoint {endpoint}: {err}")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(ConfigError(format!(
            "{service} endpoint {endpoint}: use https:// (plain http only on loopback)"
        ))),
    }
}
