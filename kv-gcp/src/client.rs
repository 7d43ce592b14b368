//! Client construction and bucket provisioning.

use std::sync::Arc;

use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::buckets::insert::{
    BucketCreationConfig, InsertBucketParam, InsertBucketRequest,
};

use crate::batch::{Authorizer, BatchClient};
use crate::config::GcsConfig;
use crate::error::map_error;
use kv_core::{ConfigError, Result};

/// The provider's connection to one endpoint: the SDK's JSON-API client, and the batch
/// endpoint (`gcloud-storage` has no batch API) with the same endpoint and credentials.
#[derive(Clone)]
pub struct GcsClient {
    storage: Client,
    batch: BatchClient,
}

impl std::fmt::Debug for GcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsClient")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl GcsClient {
    /// The SDK client.
    pub fn storage(&self) -> &Client {
        &self.storage
    }

    /// The batch endpoint (`delete-many`).
    pub fn batch(&self) -> &BatchClient {
        &self.batch
    }
}

/// A JSON-API client: anonymous for emulators (no credential lookup, so no metadata server),
/// otherwise a service-account file or the default chain. Batch requests authenticate with the
/// client's own token source (one token cache for both).
pub async fn build_client(config: &GcsConfig) -> Result<GcsClient, ConfigError> {
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
    // The provider hands out one shared token source (gcloud-auth's `DefaultTokenSourceProvider`
    // returns the same `Arc` every time), so the SDK client built below and the batch requests
    // use one cached, refreshed token. Anonymous: no provider, no `Authorization` header. Every
    // branch above sets gcloud-auth's provider (never the SDK's placeholder, which panics). The
    // calls go through the `token-source` trait objects, so that crate needs no naming here.
    let auth = client_config
        .token_source_provider
        .as_ref()
        .map(|provider| {
            let source = provider.token_source();
            let auth: Authorizer = Arc::new(move || {
                let source = source.clone();
                Box::pin(async move { source.token().await })
            });
            auth
        });
    let batch = BatchClient::new(&client_config.storage_endpoint, auth)
        .map_err(|err| ConfigError(format!("gcs batch endpoint: {err}")))?;
    Ok(GcsClient {
        storage: Client::new(client_config),
        batch,
    })
}

/// Creates the bucket if it does not exist (409 = exists), with a lifecycle rule that removes
/// expired objects and tombstones a day after their expiry (`customTime`, `crate::store`). An
/// existing bucket is left as it is (docs/providers/gcs.md says how to add the rule).
pub async fn ensure_bucket(client: &GcsClient, config: &GcsConfig) -> Result<()> {
    use gcloud_storage::http::buckets::Lifecycle;
    use gcloud_storage::http::buckets::lifecycle::Rule;
    use gcloud_storage::http::buckets::lifecycle::rule::{Action, ActionType, Condition};
    let expired_a_day_ago = Rule {
        action: Some(Action {
            r#type: ActionType::Delete,
            storage_class: None,
        }),
        condition: Some(Condition {
            days_since_custom_time: Some(1),
            ..Default::default()
        }),
    };
    let request = InsertBucketRequest {
        name: config.bucket.clone(),
        param: InsertBucketParam {
            project: config
                .project
                .clone()
                .unwrap_or_else(|| "wasi-kv".to_string()),
            ..Default::default()
        },
        bucket: BucketCreationConfig {
            lifecycle: Some(Lifecycle {
                rule: vec![expired_a_day_ago],
            }),
            ..Default::default()
        },
    };
    match client.storage.insert_bucket(&request).await {
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
        let err = build_client(&config).await.expect_err("no such key file");
        assert!(
            err.to_string().contains("/does/not/exist/key.json"),
            "{err}"
        );
        assert_eq!(std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS"), before);
    }

    /// A loopback stand-in for Google's token endpoint (`/token` issues `test-token`) and for
    /// the batch endpoint (records each request's `Authorization` and answers its one copy).
    async fn serve(listener: tokio::net::TcpListener, seen: Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                let head = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break head.to_string();
                    }
                };
                let (content_type, body) = if head.starts_with("POST /token ") {
                    (
                        "application/json",
                        r#"{"access_token":"test-token","token_type":"Bearer","expires_in":3600}"#
                            .to_string(),
                    )
                } else {
                    let authorization = head
                        .lines()
                        .find_map(|line| line.strip_prefix("authorization: "))
                        .unwrap_or("(none)");
                    seen.lock().unwrap().push(authorization.to_string());
                    (
                        "multipart/mixed; boundary=b",
                        "--b\r\nContent-Type: application/http\r\nContent-ID: \
                         <response-kv-delete-0>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--b--\r\n"
                            .to_string(),
                    )
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    }

    /// With real credentials (a service-account key whose token endpoint is on loopback),
    /// batch requests carry the SDK's own bearer token. Needs `openssl` for a throwaway key.
    #[tokio::test]
    async fn batch_requests_carry_the_clients_token() {
        let dir = std::env::temp_dir().join(format!("kv-gcp-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        let generated = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key)
            .output();
        assert!(
            generated.is_ok_and(|out| out.status.success()),
            "openssl is needed to generate a throwaway service-account key"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn(serve(listener, seen.clone()));
        let pem = std::fs::read_to_string(&key).unwrap();
        // Debug-quoting a PEM (ASCII, newlines) gives a valid JSON string.
        let credentials = format!(
            r#"{{"type":"service_account","project_id":"p","private_key_id":"k1",
                "private_key":{pem:?},"client_email":"kv@p.iam.gserviceaccount.com",
                "token_uri":"http://{addr}/token"}}"#
        );
        let file = dir.join("credentials.json");
        std::fs::write(&file, credentials).unwrap();
        let config = GcsConfig {
            bucket: "b".to_string(),
            prefix: String::new(),
            endpoint: Some(format!("http://{addr}")),
            create_bucket: false,
            project: None,
            credentials_file: Some(file.display().to_string()),
            anonymous: false,
        };
        let client = build_client(&config).await.unwrap();
        client
            .batch()
            .copy_onto("b", "kv-tombstone", &["x".to_string()], "{}")
            .await
            .result
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(*seen.lock().unwrap(), vec!["Bearer test-token".to_string()]);
    }
}
