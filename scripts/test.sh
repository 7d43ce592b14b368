#!/usr/bin/env bash
# The whole test job: setup, formatting, lints, every test (including the `wasi-kv serve`
# end-to-end tests), and the conformance suite on every provider whose backend this project
# installs. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

scripts/setup.sh

# Providers whose backend must be reachable: unreachable is a failure, never a skip.
export KV_REQUIRE="${KV_REQUIRE:-memory,redis,dynamodb,gcs,cosmos}"

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== wasi-kv conformance --provider memory"
mkdir -p target/reports
cargo run --quiet --locked -p kv-cli -- conformance --provider memory --report-dir target/reports/memory --jobs 2
echo "== wasi-kv conformance --provider redis --emulator"
cargo run --quiet --locked -p kv-cli -- conformance --provider redis --emulator --report-dir target/reports/redis --jobs 2
echo "== wasi-kv conformance --provider dynamodb --emulator"
cargo run --quiet --locked -p kv-cli -- conformance --provider dynamodb --emulator --report-dir target/reports/dynamodb --jobs 2
echo "== wasi-kv conformance --provider gcs --emulator"
cargo run --quiet --locked -p kv-cli -- conformance --provider gcs --emulator --report-dir target/reports/gcs --jobs 2
echo "== wasi-kv conformance --provider cosmos --emulator"
cargo run --quiet --locked -p kv-cli -- conformance --provider cosmos --emulator --report-dir target/reports/cosmos --jobs 2
