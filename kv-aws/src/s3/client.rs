//! SDK client construction and bucket provisioning.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, Tag,
};
use kv_core::{KvError, Result};

use super::config::S3Config;
use super::error::map_sdk_error;
use super::store::{TOMBSTONE_TAG, TOMBSTONE_TAG_VALUE};

/// An SDK client ([`crate::access`]: static credentials when configured, else the standard
/// chain). Checksums only where an operation requires them: S3-compatible services and
/// emulators differ in which of the newer checksum trailers they accept, and every write is
/// conditioned or journaled anyway.
pub async fn build_client(config: &S3Config) -> Client {
    let sdk = config.access.sdk_config().await;
    let s3 = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(config.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(s3)
}

/// Creates the bucket if it is missing, with a lifecycle rule that removes tombstones
/// (objects tagged [`TOMBSTONE_TAG`]) a day after they were written, if it has no lifecycle
/// rules yet. An existing bucket's rules are never replaced (docs/providers/s3.md says how to
/// add ours).
pub async fn ensure_bucket(client: &Client, config: &S3Config) -> Result<()> {
    let mut request = client.create_bucket().bucket(&config.bucket);
    // us-east-1 takes no location constraint; every other region needs its own.
    if let Some(region) = config
        .access
        .region
        .as_deref()
        .filter(|r| *r != "us-east-1")
    {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(err)
            if err.as_service_error().is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            }) =>
        {
            return Ok(());
        }
        Err(err) => return Err(map_sdk_error("CreateBucket", err)),
    }
    // us-east-1 answers 200 to creating a bucket its caller already owns: a rule set by its
    // owner must not be replaced, so ours goes only where there is none.
    match client
        .get_bucket_lifecycle_configuration()
        .bucket(&config.bucket)
        .send()
        .await
    {
        Ok(_) => return Ok(()),
        Err(err) if err.code() == Some("NoSuchLifecycleConfiguration") => {}
        Err(err) => return Err(map_sdk_error("GetBucketLifecycleConfiguration", err)),
    }
    let tag = Tag::builder()
        .key(TOMBSTONE_TAG)
        .value(TOMBSTONE_TAG_VALUE)
        .build()
        .map_err(|err| KvError::internal(format!("s3 lifecycle rule: {err}")))?;
    let rule = LifecycleRule::builder()
        .id("wasi-kv-tombstones")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().tag(tag).build())
        .expiration(LifecycleExpiration::builder().days(1).build())
        .build()
        .map_err(|err| KvError::internal(format!("s3 lifecycle rule: {err}")))?;
    let lifecycle = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(|err| KvError::internal(format!("s3 lifecycle rule: {err}")))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(&config.bucket)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|err| map_sdk_error("PutBucketLifecycleConfiguration", err))?;
    Ok(())
}
