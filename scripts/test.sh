#!/usr/bin/env bash
# The whole test job: setup, formatting, lints, and every test — the conformance suite on every
# provider whose backend this project installs (once each, writing the evidence reports), the
# CLI and `wasi-kv serve` end-to-end tests, the provider-level tests. `.ci/run` calls exactly
# this. The workspace is compiled once (`cargo test --workspace`, one feature set); each step
# prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

job_started=$SECONDS
step_started=$SECONDS
step_name=""
finish_step() {
    if [ -n "$step_name" ]; then
        printf '== %s: %d s\n' "$step_name" $((SECONDS - step_started))
    fi
}
step() {
    finish_step
    step_name="$1"
    step_started=$SECONDS
    echo "== $step_name"
}
trap 'finish_step; printf "== total: %d s\n" $((SECONDS - job_started))' EXIT

step "setup"
scripts/setup.sh

# Providers whose backend must be reachable: unreachable is a failure, never a skip.
export KV_REQUIRE="${KV_REQUIRE:-memory,sqlite,redis,redis-cluster,dynamodb,gcs,cosmos,s3,s3-moto,azblob}"
# Tools some tests drive (a Prometheus server, headless Chromium): missing is a failure.
export KV_REQUIRE_TOOLS="${KV_REQUIRE_TOOLS:-prometheus,chromium}"
# The conformance harness writes each provider's evidence (json, JUnit, Markdown) here.
export KV_REPORT_DIR="${KV_REPORT_DIR:-$PWD/target/reports}"
mkdir -p "$KV_REPORT_DIR"

step "cargo fmt"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test (build)"
cargo test --workspace --locked --no-run
step "cargo test (run)"
cargo test --workspace --locked
# Windows: wasi-kv.exe cross-built with mingw-w64, its memory and Redis suites, the counter
# example and kv-core's unit tests run under wine (scripts/platforms.sh, docs/platforms.md).
step "windows (cross build, suites under wine)"
scripts/platforms.sh --windows
# Every provider's and platform's report, the fault matrices and history checks on one page
# (the binary the test run built).
step "evidence page"
"$CARGO_TARGET_DIR/debug/wasi-kv" report "$KV_REPORT_DIR" -o "$KV_REPORT_DIR/index.html"
