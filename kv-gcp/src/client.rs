//! Client construction and bucket provisioning.

use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::buckets::insert::{
    BucketCreationConfig, InsertBucketParam, InsertBucketRequest,
};

use crate::config::GcsConfig;
use crate::error::map_error;
use kv_core::{ConfigError, Result};

/// A JSON-API client: anonymous for emulators (no credential lookup, so no metadata server),
/// otherwise a service-account file or the default chain.
pub async fn build_client(config: &GcsConfig) -> Result<Client, ConfigError> {
    let mut client_config = if config.anonymous {
        ClientConfig::default().anonymous()
    } else {
        if let Some(file) = &config.credentials_file {
            // SAFETY: set once while the configuration is loaded, before clients exist.
            unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", file) };
        }
        ClientConfig::default()
            .with_auth()
            .await
            .map_err(|err| ConfigError(format!("gcs credentials: {err}")))?
    };
    if let Some(endpoint) = &config.endpoint {
        client_config.storage_endpoint = endpoint.clone();
    }
    if let Some(project) = &config.project {
        client_config.project_id = Some(project.clone());
    }
    Ok(Client::new(client_config))
}

/// Creates the bucket if it does not exist (409 = exists).
pub async fn ensure_bucket(client: &Client, config: &GcsConfig) -> Result<()> {
    let request = InsertBucketRequest {
        name: config.bucket.clone(),
        param: InsertBucketParam {
            project: config
                .project
                .clone()
                .unwrap_or_else(|| "wasi-kv".to_string()),
            ..Default::default()
        },
        bucket: BucketCreationConfig::default(),
    };
    match client.insert_bucket(&request).await {
        Ok(_) => Ok(()),
        Err(gcloud_storage::http::Error::Response(response)) if response.code == 409 => Ok(()),
        Err(err) => Err(map_error("create bucket", err)),
    }
}
