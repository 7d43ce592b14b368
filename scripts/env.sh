# Sourced by the project's scripts: one shared target directory, and no SDK may leave the
# machine (docs/architecture.md): no cloud metadata services, no telemetry.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasi-kv-target}"
export AWS_EC2_METADATA_DISABLED=true
export COSMOS_DISABLE_IMDS=1
export AZURE_COSMOS_CONNECTION_POOL_IS_HTTP2_ALLOWED=false
export AZURE_COSMOS_BINARY_ENCODING_ENABLED=false
# CI builds once from scratch: incremental caches would only cost disk.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi
