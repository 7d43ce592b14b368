//! The conformance suite against every provider this workspace builds, one trial per
//! provider x case. Backends the harness can start (redis-server) are started on a free loopback
//! port; unreachable backends are ignored unless named in `KV_REQUIRE`.

use std::process::ExitCode;
use std::sync::Arc;

use kv_conformance::emulator::{
    COSMOS_EMULATOR_KEY, CosmosServer, DynamoDbLocal, FakeGcsServer, RedisServer,
};
use kv_conformance::harness::{self, TargetSource};
use kv_conformance::{Profile, Target};
use kv_core::{MemoryProvider, ProviderFactory};

fn main() -> ExitCode {
    harness::stay_on_loopback();
    harness::main(vec![
        TargetSource::new("memory", || async {
            Ok(Target::new(
                "memory",
                Arc::new(MemoryProvider::new()),
                Profile::memory(),
            ))
        }),
        TargetSource::new("redis", || async {
            let server = tokio::task::spawn_blocking(RedisServer::start)
                .await
                .map_err(|err| err.to_string())??;
            let (_, spec) = kv_core::config::parse_short_form(&format!("redis={}", server.url()))
                .map_err(|err| err.to_string())?;
            let provider = kv_redis::RedisFactory
                .connect(&spec)
                .await
                .map_err(|err| err.to_string())?;
            let mut profile = Profile::redis();
            profile.backend = server.version().to_string();
            let mut target = Target::new("redis", provider, profile);
            target.keep_alive.push(Arc::new(server));
            Ok(target)
        }),
        TargetSource::new("dynamodb", || async {
            let local = tokio::task::spawn_blocking(DynamoDbLocal::start)
                .await
                .map_err(|err| err.to_string())??;
            let url = format!(
                "dynamodb=dynamodb://wasikv?region=us-east-1&endpoint={}&create_table=true\
                 &access_key_id=test&secret_access_key=test&max_attempts=1",
                local.endpoint()
            );
            let (_, spec) =
                kv_core::config::parse_short_form(&url).map_err(|err| err.to_string())?;
            let provider = kv_aws::DynamoFactory
                .connect(&spec)
                .await
                .map_err(|err| err.to_string())?;
            let mut profile =
                Profile::bundled("dynamodb-local").ok_or("no dynamodb-local profile")?;
            profile.backend = local.version();
            let mut target = Target::new("dynamodb", provider, profile);
            target.keep_alive.push(Arc::new(local));
            Ok(target)
        }),
        TargetSource::new("gcs", || async {
            let server = tokio::task::spawn_blocking(FakeGcsServer::start)
                .await
                .map_err(|err| err.to_string())??;
            let url = format!(
                "gcs=gcs://wasikv/conformance?endpoint={}&create_bucket=true",
                server.endpoint()
            );
            let (_, spec) =
                kv_core::config::parse_short_form(&url).map_err(|err| err.to_string())?;
            let provider = kv_gcp::GcsFactory
                .connect(&spec)
                .await
                .map_err(|err| err.to_string())?;
            let mut profile = Profile::bundled("fake-gcs").ok_or("no fake-gcs profile")?;
            profile.backend = server.version();
            let mut target = Target::new("gcs", provider, profile);
            target.keep_alive.push(Arc::new(server));
            Ok(target)
        }),
        TargetSource::new("cosmos", || async {
            let server = tokio::task::spawn_blocking(CosmosServer::start)
                .await
                .map_err(|err| err.to_string())??;
            let spec = cosmos_spec(&server.endpoint())?;
            let provider = kv_azure::CosmosFactory
                .connect(&spec)
                .await
                .map_err(|err| err.to_string())?;
            let mut profile = Profile::bundled("cosmos-local").ok_or("no cosmos-local profile")?;
            profile.backend = server.version();
            let mut target = Target::new("cosmos", provider, profile);
            target.keep_alive.push(Arc::new(server));
            Ok(target)
        }),
    ])
}

/// A spec for the local Cosmos DB server: explicit loopback endpoint, its well-known key.
fn cosmos_spec(endpoint: &str) -> Result<kv_core::StoreSpec, String> {
    let key = COSMOS_EMULATOR_KEY
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let url = format!(
        "cosmos=cosmos:///wasikv/conformance?endpoint={endpoint}&create_container=true\
         &consistency=session&timeout_ms=10000&key={key}"
    );
    let (_, spec) = kv_core::config::parse_short_form(&url).map_err(|err| err.to_string())?;
    Ok(spec)
}
