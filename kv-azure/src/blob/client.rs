//! Building the SDK client: the account key signed into short-lived account SAS tokens (the
//! official crate has no shared-key signing), a SAS token as given, or an Entra ID token; no
//! SDK retries (the host's `KvStore` is the one layer that retries); container provisioning.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Request, RetryOptions, Url};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use kv_core::{KvError, Secret};
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::config::AzblobConfig;
use super::error::{Outcome, map_error, outcome};
use crate::identity::Auth;

/// The SAS version signed: the first with the encryption-scope field in the string to sign.
const SAS_VERSION: &str = "2020-12-06";
/// What a signed token allows: read, write, delete, list, add, create, update, process, tags;
/// on the blob service, for the service, containers and objects.
const SAS_PERMISSIONS: &str = "rwdlacupt";
/// How long a signed token is valid; it is replaced when less than [`SAS_RENEW_BEFORE`] is left.
const SAS_LIFETIME: Duration = Duration::hours(8);
/// A token is replaced this long before it expires, so no request carries one about to expire.
const SAS_RENEW_BEFORE: Duration = Duration::hours(1);
/// Tokens start this long in the past, for servers whose clocks are behind ours.
const SAS_CLOCK_SKEW: Duration = Duration::minutes(15);

/// The container's client for `config`.
pub fn container_client(config: &AzblobConfig) -> Result<BlobContainerClient, KvError> {
    let endpoint = Url::parse(&config.endpoint)
        .map_err(|err| KvError::internal(format!("azblob endpoint {}: {err}", config.endpoint)))?;
    let mut client_options = ClientOptions {
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    };
    let credential = match (&config.sas_token, config.identity.auth) {
        (Some(token), _) => {
            client_options
                .per_try_policies
                .push(Arc::new(SasPolicy::given(token.clone())));
            None
        }
        (None, Auth::Key) => {
            let key = config
                .identity
                .key
                .as_ref()
                .ok_or_else(|| KvError::internal("azblob: no account key configured"))?;
            let policy = SasPolicy::signed(&config.account, key, endpoint.scheme() == "https")?;
            client_options.per_try_policies.push(Arc::new(policy));
            None
        }
        (None, Auth::Entra) => Some(config.identity.entra_credential("azblob")?),
    };
    let options = BlobServiceClientOptions {
        client_options,
        ..BlobServiceClientOptions::default()
    };
    let service = BlobServiceClient::new(endpoint, credential, Some(options))
        .map_err(|err| map_error("client", err))?;
    Ok(service.blob_container_client(&config.container))
}

/// Creates the container unless it exists.
pub async fn ensure_container(client: &BlobContainerClient) -> Result<(), KvError> {
    match client.create(None).await {
        Ok(_) => Ok(()),
        Err(err) if outcome(&err) == Outcome::Exists => Ok(()),
        Err(err) => Err(map_error("create container", err)),
    }
}

/// Adds a SAS token to every request's query.
pub struct SasPolicy {
    source: SasSource,
    /// The signed token and when it expires.
    signed: Mutex<Option<(Arc<str>, OffsetDateTime)>>,
}

enum SasSource {
    /// An account SAS signed with the account key.
    Account {
        account: String,
        key: Vec<u8>,
        protocols: &'static str,
    },
    /// A token the configuration gave.
    Given(Secret),
}

impl std::fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SasPolicy { <redacted> }")
    }
}

impl SasPolicy {
    /// Signs account SAS tokens with `key` (base64, as the portal shows it). `https_only`
    /// limits them to HTTPS, as every endpoint but a loopback emulator is.
    pub fn signed(account: &str, key: &Secret, https_only: bool) -> Result<SasPolicy, KvError> {
        let key = STANDARD.decode(key.expose().trim()).map_err(|_| {
            KvError::internal("azblob: the account key is not base64 (copy it from the portal)")
        })?;
        Ok(SasPolicy {
            source: SasSource::Account {
                account: account.to_string(),
                key,
                protocols: if https_only { "https" } else { "https,http" },
            },
            signed: Mutex::new(None),
        })
    }

    /// Uses `token` (without the leading `?`) as given.
    pub fn given(token: Secret) -> SasPolicy {
        SasPolicy {
            source: SasSource::Given(token),
            signed: Mutex::new(None),
        }
    }

    /// The token for a request sent now.
    fn token(&self) -> Result<Arc<str>, KvError> {
        let (account, key, protocols) = match &self.source {
            SasSource::Given(token) => return Ok(token.expose().into()),
            SasSource::Account {
                account,
                key,
                protocols,
            } => (account, key, *protocols),
        };
        let now = OffsetDateTime::now_utc();
        let mut signed = self
            .signed
            .lock()
            .map_err(|_| KvError::internal("azblob: the SAS cache is poisoned"))?;
        if let Some((token, expires)) = signed.as_ref()
            && *expires - now > SAS_RENEW_BEFORE
        {
            return Ok(token.clone());
        }
        let expires = now + SAS_LIFETIME;
        let token: Arc<str> =
            sign_account_sas(account, key, protocols, now - SAS_CLOCK_SKEW, expires)?.into();
        *signed = Some((token.clone(), expires));
        Ok(token)
    }
}

/// An account SAS for the blob service (version 2020-12-06), valid from `start` to `expiry`;
/// `protocols` is `https` or `https,http`.
pub fn sign_account_sas(
    account: &str,
    key: &[u8],
    protocols: &str,
    start: OffsetDateTime,
    expiry: OffsetDateTime,
) -> Result<String, KvError> {
    let time = |at: OffsetDateTime| {
        at.replace_nanosecond(0)
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
            .ok_or_else(|| KvError::internal("azblob: cannot format a SAS time"))
    };
    let (start, expiry) = (time(start)?, time(expiry)?);
    let (services, resource_types) = ("b", "sco");
    // Ten fields, each ending in a newline: account, permissions, services, resource types,
    // start, expiry, IP range, protocols, version, encryption scope.
    let to_sign = format!(
        "{account}\n{SAS_PERMISSIONS}\n{services}\n{resource_types}\n{start}\n{expiry}\n\n\
         {protocols}\n{SAS_VERSION}\n\n"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| KvError::internal("azblob: the account key cannot sign"))?;
    mac.update(to_sign.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    Ok(url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", services)
        .append_pair("srt", resource_types)
        .append_pair("sp", SAS_PERMISSIONS)
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", protocols)
        .append_pair("sig", &signature)
        .finish())
}

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let url = request.url_mut();
        if !url.query_pairs().any(|(name, _)| name == "sig") {
            let token = self.token().map_err(|err| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    err.to_string(),
                )
            })?;
            let query = match url.query() {
                Some(query) if !query.is_empty() => format!("{query}&{token}"),
                _ => token.to_string(),
            };
            url.set_query(Some(&query));
        }
        match next.split_first() {
            Some((policy, rest)) => policy.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "azblob: the SAS policy is the last in the pipeline",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the service's documentation for an account SAS cannot be used (it
    /// predates the encryption-scope field); this pins the string we sign instead, checked
    /// against Azurite by the provider tests.
    #[test]
    fn signs_the_ten_fields() {
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let token =
            sign_account_sas("acct", b"key", "https", start, start + Duration::hours(1)).unwrap();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(token.as_bytes())
            .into_owned()
            .collect();
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("st"), "2027-01-15T08:00:00Z");
        assert_eq!(field("se"), "2027-01-15T09:00:00Z");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(
            b"acct\nrwdlacupt\nb\nsco\n2027-01-15T08:00:00Z\n2027-01-15T09:00:00Z\n\nhttps\n2020-12-06\n\n",
        );
        assert_eq!(field("sig"), STANDARD.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn tokens_are_reused_until_renewal_and_never_printed() {
        let key = Secret::new(STANDARD.encode(b"hunter2-key"));
        let policy = SasPolicy::signed("acct", &key, true).unwrap();
        let first = policy.token().unwrap();
        assert_eq!(first, policy.token().unwrap());
        assert!(!format!("{policy:?}").contains("sig"));
        assert!(SasPolicy::signed("acct", &Secret::new("not base64!"), true).is_err());
    }
}
