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
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Where systemd runs, the package starts a service on 6379; the tests do not need it.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        $sudo_cmd systemctl stop redis-server || true
    fi
fi
