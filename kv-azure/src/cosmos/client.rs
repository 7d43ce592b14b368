//! Building the SDK client: key auth, HTTP/1.1, text JSON, and (when configured) the database
//! and container.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_data_cosmos::models::{ContainerProperties, TimeToLive};
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, EndToEndOperationLatencyPolicy, OperationOptions,
    ReadConsistencyStrategy, ThrottlingRetryOptionsBuilder,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, ContainerClient, CosmosClient, CosmosRuntime,
    RoutingStrategy,
};
use kv_core::KvError;

use super::config::{Auth, Consistency, CosmosConfig};
use super::error::{Outcome, map_error, outcome};

/// The partition key path of containers this provider uses.
pub const PARTITION_KEY_PATH: &str = "/pk";

/// Connects to the account and returns the container's client; creates the database and
/// container first when `create_container` is set.
///
/// The SDK calls the Azure instance metadata service once per process unless
/// `COSMOS_DISABLE_IMDS` is set; tests and CI set it.
pub async fn connect(config: &CosmosConfig) -> Result<ContainerClient, KvError> {
    let account = match config.identity.auth {
        Auth::Key => {
            let key = config
                .identity
                .key
                .as_ref()
                .ok_or_else(|| KvError::internal("cosmos: no account key configured"))?;
            AccountReference::with_authentication_key(
                endpoint(config)?,
                Secret::from(key.expose().to_string()),
            )
        }
        Auth::Entra => AccountReference::with_credential(
            endpoint(config)?,
            config.identity.entra_credential("cosmos")?,
        ),
    };
    connect_account(config, account).await
}

/// [`connect`] with an Entra ID token credential of the caller's choosing.
pub async fn connect_with_credential(
    config: &CosmosConfig,
    credential: Arc<dyn TokenCredential>,
) -> Result<ContainerClient, KvError> {
    connect_account(
        config,
        AccountReference::with_credential(endpoint(config)?, credential),
    )
    .await
}

fn endpoint(config: &CosmosConfig) -> Result<AccountEndpoint, KvError> {
    config
        .endpoint
        .parse()
        .map_err(|err| KvError::internal(format!("cosmos endpoint {}: {err}", config.endpoint)))
}

async fn connect_account(
    config: &CosmosConfig,
    account: AccountReference,
) -> Result<ContainerClient, KvError> {
    // HTTP/1.1: the local server speaks nothing else, and keep-alive pools work the same.
    let pool = ConnectionPoolOptions::builder()
        .with_is_http2_allowed(false)
        .build()
        .map_err(|err| map_error("connection pool", err))?;
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await
        .map_err(|err| map_error("runtime", err))?;
    let mut operation = OperationOptions::default();
    operation.read_consistency_strategy = match config.consistency {
        Consistency::AccountDefault => None,
        Consistency::Session => Some(ReadConsistencyStrategy::Session),
        Consistency::LatestCommitted => Some(ReadConsistencyStrategy::LatestCommitted),
    };
    operation.end_to_end_latency_policy = config.timeout.map(EndToEndOperationLatencyPolicy::new);
    // The host's `KvStore` is the one layer that retries, honouring the service's retry-after:
    // the first 429 comes straight back instead of the driver waiting up to 30 s on its own.
    operation.throttling_retry_options = Some(
        ThrottlingRetryOptionsBuilder::new()
            .with_max_retry_count(0)
            .build(),
    );
    let client = CosmosClient::builder()
        .with_runtime(runtime)
        .with_default_operation_options(operation)
        // Text JSON: values are base64 strings either way, and only the real service
        // understands the binary encoding.
        .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
        .build(
            account,
            RoutingStrategy::ProximityTo(config.region.clone().into()),
        )
        .await
        .map_err(|err| map_error("connect", err))?;
    if config.create_container {
        ensure_container(&client, config).await?;
    }
    client
        .database_client(config.database.as_str())
        .container_client(config.container.as_str(), None)
        .await
        .map_err(|err| map_error("open container", err))
}

/// Creates the database and the container (partition key `/pk`, TTL enabled with no default)
/// unless they exist.
async fn ensure_container(client: &CosmosClient, config: &CosmosConfig) -> Result<(), KvError> {
    match client.create_database(&config.database, None).await {
        Ok(_) => {}
        Err(err) if outcome(&err) == Outcome::Exists => {}
        Err(err) => return Err(map_error("create database", err)),
    }
    let mut properties =
        ContainerProperties::new(config.container.clone(), PARTITION_KEY_PATH.into());
    // Items expire by their own `ttl` field; without a container TTL the field is ignored.
    properties.default_ttl = TimeToLive::NoDefault;
    match client
        .database_client(config.database.as_str())
        .create_container(properties, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if outcome(&err) == Outcome::Exists => Ok(()),
        Err(err) => Err(map_error("create container", err)),
    }
}
