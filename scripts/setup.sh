#!/usr/bin/env bash
# Installs what the tests need on a fresh machine (Rust toolchain, apt, npm and pip available).
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
# Provider backends (Redis, DynamoDB Local, the Cosmos server, fake-gcs-server) are installed
# here by their provider issues; the core suite needs nothing but the target.
