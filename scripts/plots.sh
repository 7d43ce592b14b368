#!/usr/bin/env bash
# Regenerates the curves of docs/benchmarks.md: runs the curve rows of both benches and draws
# them as PNG files into docs/img (or the directory given). Every server is a local process on
# loopback, started by the benches and stopped by PID. Takes about 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-docs/img}"
mkdir -p "$dir"
# The benches run in kv-cli/: give them an absolute path.
dir="$(cd "$dir" && pwd)"
scripts/setup.sh --bench
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo bench -p kv-cli --bench kv -- --rows listing,clients,get-many --plots "$dir"
cargo bench -p kv-cli --bench serve -- --curve --plots "$dir"
