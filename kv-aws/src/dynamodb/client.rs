//! SDK client construction and table provisioning.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};

use super::config::DynamoConfig;
use super::error::map_sdk_error;
use super::store::{ATTR_EXPIRES, ATTR_KEY, ATTR_NAMESPACE};
use kv_core::{KvError, Result};

/// An SDK client ([`crate::access`]: static credentials when configured, else the standard
/// chain; disable instance metadata with `AWS_EC2_METADATA_DISABLED=true` where it cannot
/// exist).
pub async fn build_client(config: &DynamoConfig) -> Client {
    Client::new(&config.access.sdk_config().await)
}

/// The table client and the DynamoDB Streams client (`wasi-kv watch`), from one SDK
/// configuration.
pub async fn build_clients(config: &DynamoConfig) -> (Client, aws_sdk_dynamodbstreams::Client) {
    let sdk = config.access.sdk_config().await;
    (
        Client::new(&sdk),
        aws_sdk_dynamodbstreams::Client::new(&sdk),
    )
}

/// Creates the table (partition key `ns`, sort key `k`, on-demand billing) if it is missing,
/// waits until it is active and enables TTL on `exp`.
pub async fn ensure_table(client: &Client, table: &str) -> Result<()> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(err) => return Err(map_sdk_error("DescribeTable", err)),
    }
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|err| KvError::internal(format!("table definition: {err}")))
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|err| KvError::internal(format!("table definition: {err}")))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(ATTR_NAMESPACE)?)
        .attribute_definitions(attribute(ATTR_KEY)?)
        .key_schema(key(ATTR_NAMESPACE, KeyType::Hash)?)
        .key_schema(key(ATTR_KEY, KeyType::Range)?)
        .send()
        .await;
    if let Err(err) = created {
        // Another host may have created it meanwhile.
        if !err
            .as_service_error()
            .is_some_and(|e| e.is_resource_in_use_exception())
        {
            return Err(map_sdk_error("CreateTable", err));
        }
    }
    // The SDK waiter polls for 20 s or more; poll DescribeTable quickly instead.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|err| map_sdk_error("DescribeTable", err))?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            break;
        }
        if Instant::now() > deadline {
            return Err(KvError::unavailable(format!(
                "table {table} did not become active"
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(ATTR_EXPIRES)
        .enabled(true)
        .build()
        .map_err(|err| KvError::internal(format!("TTL specification: {err}")))?;
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already enabled (a concurrent creator) is fine.
        Err(err) if format!("{err:?}").contains("already enabled") => Ok(()),
        Err(err) => Err(map_sdk_error("UpdateTimeToLive", err)),
    }
}
