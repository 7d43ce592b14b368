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
    } else if let Some(file) = &config.credentials_file {
        // This store's own key file, handed to its client only: never through the
        // process-wide GOOGLE_APPLICATION_CREDENTIALS, which every other store would inherit.
        let credentials = gcloud_auth::credentials::CredentialsFile::new_from_file(file.clone())
            .await
            .map_err(|err| ConfigError(format!("gcs credentials_file {file}: {err}")))?;
        ClientConfig::default()
            .with_credentials(credentials)
            .await
            .map_err(|err| ConfigError(format!("gcs credentials: {err}")))?
    } else {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's key file is read for that store's client alone; the process environment is
    /// never changed (another store would otherwise authenticate as this account).
    #[tokio::test]
    async fn credentials_file_stays_with_its_store() {
        let config = GcsConfig {
            bucket: "b".to_string(),
            prefix: String::new(),
            endpoint: None,
            create_bucket: false,
            project: None,
            credentials_file: Some("/does/not/exist/key.json".to_string()),
            anonymous: false,
        };
        let before = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS");
        let err = build_client(&config).await.err().expect("no such key file");
        assert!(
            err.to_string().contains("/does/not/exist/key.json"),
            "{err}"
        );
        assert_eq!(std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS"), before);
    }
}
