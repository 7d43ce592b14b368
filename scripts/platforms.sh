#!/usr/bin/env bash
# wasi-kv on Windows and macOS, from this Linux machine (docs/platforms.md):
#
#   scripts/platforms.sh              # Windows and macOS
#   scripts/platforms.sh --windows    # Windows only (what CI runs)
#   scripts/platforms.sh --macos      # macOS only
#
# Windows (x86_64-pc-windows-gnu): cross-builds `wasi-kv.exe` with Debian's mingw-w64, then runs
# it under wine: the conformance suite on the memory provider and on Redis (a Linux redis-server
# on loopback), the counter example twice on a SQLite file (a Windows path), and kv-core's unit
# tests built for Windows (wine as the cargo runner). The evidence reports land in
# target/reports/windows-*/ and carry OS `windows`.
#
# macOS (x86_64-apple-darwin, aarch64-apple-darwin): cross-builds with cargo-zigbuild and Zig from
# PyPI. Linking the binary needs Apple's SDK frameworks (Security, CoreFoundation), which only
# come with Xcode; when the link fails for that reason the script says so, and builds the kv-cli
# library (every crate of the workspace and its dependencies) for that target instead.
#
# Installs what it needs (pinned, idempotent). Prints one table at the end; exits non-zero if a
# build that should succeed fails or a suite under wine does not pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

do_windows=true
do_macos=true
case "${1:-}" in
    --windows) do_macos=false ;;
    --macos) do_windows=false ;;
    "") ;;
    *) echo "usage: $0 [--windows | --macos]" >&2; exit 2 ;;
esac

WINDOWS=x86_64-pc-windows-gnu
MACOS=(x86_64-apple-darwin aarch64-apple-darwin)
ZIG_VERSION=0.17.0
ZIGBUILD_VERSION=0.24.0
tools="$HOME/.cache/wasi-kv-tools"
reports="${KV_REPORT_DIR:-$PWD/target/reports}"
mkdir -p "$reports"

rows=()          # "target|built|result"
failed=0
row() { rows+=("$1|$2|$3"); }
section_started=$SECONDS
section() {
    printf '== platforms: %s (%d s since the last step)\n' "$1" $((SECONDS - section_started))
    section_started=$SECONDS
}

apt_install() { # package...
    local sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    echo "platforms: installing $*"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@"
}

add_target() { # rustup target
    rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}

# A loopback port nobody listens on.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Outcome counts of a conformance report: "P passed, F failed, S skipped".
summarize_report() { # report.json
    python3 - "$1" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
counts = {}
for result in report["results"]:
    counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
print(f'{counts.get("passed", 0)} passed, {counts.get("failed", 0)} failed, '
      f'{counts.get("ignored", 0)} skipped (os {report["os"]}/{report["arch"]})')
EOF
}

windows() {
    section "windows: setup"
    add_target "$WINDOWS"
    add_target wasm32-wasip2
    local missing=()
    command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(mingw-w64)
    [ -x /usr/lib/wine/wine64 ] || command -v wine64 >/dev/null || missing+=(wine64)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
    local wine=/usr/lib/wine/wine64
    [ -x "$wine" ] || wine="$(command -v wine64)"

    section "windows: cross build of wasi-kv.exe"
    if ! cargo build --locked --target "$WINDOWS" -p kv-cli; then
        row "$WINDOWS" "no" "the cross build failed"
        failed=1
        return
    fi
    local out="$CARGO_TARGET_DIR/$WINDOWS/debug"
    local exe="$out/wasi-kv.exe"

    # The test environment: its own wine prefix, quiet, no Mono/Gecko installers, and the
    # ProcessPrng stand-in (scripts/windows/bcryptprimitives.c) next to every exe we run.
    local shim="$out/bcryptprimitives.dll"
    x86_64-w64-mingw32-gcc -shared -O2 -o "$shim" scripts/windows/bcryptprimitives.c
    cp "$shim" "$out/deps/bcryptprimitives.dll"
    export WINEPREFIX="$HOME/.cache/wasi-kv-wine"
    export WINEDEBUG=-all
    export WINEDLLOVERRIDES="mscoree,mshtml="
    mkdir -p "$WINEPREFIX"
    # The reports name the commit; git is not visible from inside wine.
    KV_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    export KV_COMMIT
    run_wine() { "$wine" "$@"; }

    section "windows: conformance on memory under wine"
    local memory="$reports/windows-memory"
    rm -rf "$memory"
    if run_wine "$exe" conformance --provider memory --report-dir "$memory" >/dev/null; then
        row "$WINDOWS" "yes" "memory suite: $(summarize_report "$memory/report.json")"
    else
        row "$WINDOWS" "yes" "memory suite FAILED: $(summarize_report "$memory/report.json" 2>/dev/null || echo no report)"
        failed=1
    fi

    section "windows: conformance on redis under wine"
    local port redis_pid redis_dir
    port=$(free_port)
    redis_dir=$(mktemp -d)
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$redis_dir" \
        >"$redis_dir/log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    local redis="$reports/windows-redis"
    rm -rf "$redis"
    if run_wine "$exe" conformance --provider redis \
        --store "kv-under-test=redis://127.0.0.1:$port/0" --report-dir "$redis" >/dev/null; then
        row "$WINDOWS" "yes" "redis suite: $(summarize_report "$redis/report.json")"
    else
        row "$WINDOWS" "yes" "redis suite FAILED: $(summarize_report "$redis/report.json" 2>/dev/null || echo no report)"
        failed=1
    fi
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$redis_dir"

    section "windows: the counter example under wine"
    cargo build --locked -q -p counter --release --target wasm32-wasip2
    local counter="$CARGO_TARGET_DIR/wasm32-wasip2/release/counter.wasm"
    local db_dir
    db_dir=$(mktemp -d)
    # A Windows path (wine maps Z: to /), so SQLite opens its file through Windows' file API.
    local db="Z:${db_dir//\//\\}\\counter.db"
    local first second
    first=$(run_wine "$exe" run --store "default=sqlite:$db" "$counter" | tr -d '\r')
    second=$(run_wine "$exe" run --store "default=sqlite:$db" "$counter" | tr -d '\r')
    rm -rf "$db_dir"
    if [ "$first" = "this component has run 1 time" ] && [ "$second" = "this component has run 2 times" ]; then
        row "$WINDOWS" "yes" "counter example on a SQLite file: 1, then 2"
    else
        row "$WINDOWS" "yes" "counter example FAILED: printed '$first', then '$second'"
        failed=1
    fi

    section "windows: wasi-kv watch under wine"
    # The watch-audit example on SQLite files (Windows paths): a change made with
    # `wasi-kv store set` reaches the audit log; the watcher is killed, the key deleted while
    # none runs, and a new watcher resumes from the checkpoint: the delete is entry 2, and the
    # set is not logged twice.
    cargo build --locked -q -p watch-audit --release --target wasm32-wasip2
    local audit_wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/watch_audit.wasm"
    local watch_dir
    watch_dir=$(mktemp -d)
    local wdir="Z:${watch_dir//\//\\}"
    local data_spec="data=sqlite:$wdir\\data.db" audit_spec="audit=sqlite:$wdir\\audit.db"
    local stores=(--store "$data_spec" --store "$audit_spec"
        --store "state=sqlite:$wdir\\audit.db?namespace=watch")
    audit_entry() { # waits up to 30 s for audit key $1; prints it
        local value=""
        for _ in $(seq 150); do
            value=$(run_wine "$exe" store get --store "$audit_spec" "$1" 2>/dev/null | tr -d '\r') && break
            sleep 0.2
        done
        printf '%s' "$value"
    }
    local watch_pid first_entry second_entry entries
    # Started as wine itself (not through a function's subshell), so that $! is the process.
    "$wine" "$exe" watch "${stores[@]}" --state state --watch data "$audit_wasm" >"$watch_dir/out1" 2>&1 &
    watch_pid=$!
    for _ in $(seq 150); do grep -q '^watching' "$watch_dir/out1" && break; sleep 0.2; done
    run_wine "$exe" store set --store "$data_spec" greeting hello >/dev/null
    first_entry=$(audit_entry log/000000000001)
    sleep 2 # the checkpoint is saved after the batch
    kill -KILL "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
    # Deleted while no watcher runs: only a watcher resuming from its checkpoint sees it.
    run_wine "$exe" store delete --store "$data_spec" greeting >/dev/null
    "$wine" "$exe" watch "${stores[@]}" --state state --watch data "$audit_wasm" >"$watch_dir/out2" 2>&1 &
    watch_pid=$!
    second_entry=$(audit_entry log/000000000002)
    sleep 1
    entries=$(run_wine "$exe" store get --store "$audit_spec" entries 2>/dev/null | tr -d '\r')
    kill -KILL "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
    if [ "$first_entry" = "set greeting (5 bytes)" ] && [ "$second_entry" = "delete greeting" ] && [ "$entries" = "2" ]; then
        row "$WINDOWS" "yes" "watch: the audit example logged a set, then a delete made while killed (resumed; 2 entries)"
    else
        tail -20 "$watch_dir/out1" "$watch_dir/out2"
        row "$WINDOWS" "yes" "watch FAILED: entries '$first_entry', '$second_entry', count '$entries'"
        failed=1
    fi
    rm -rf "$watch_dir"

    section "windows: kv-core unit tests under wine"
    local unit_log
    unit_log=$(mktemp)
    if CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$wine" \
        cargo test --locked --target "$WINDOWS" -p kv-core --lib -- --test-threads 2 >"$unit_log" 2>&1; then
        row "$WINDOWS" "yes" "kv-core unit tests: $(grep -o '[0-9]* passed; [0-9]* failed' "$unit_log" | tail -1)"
    else
        tail -30 "$unit_log"
        row "$WINDOWS" "yes" "kv-core unit tests FAILED: $(grep -o '[0-9]* passed; [0-9]* failed' "$unit_log" | tail -1)"
        failed=1
    fi
    if CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$wine" \
        cargo test --locked --target "$WINDOWS" -p kv-watch -- --test-threads 2 >"$unit_log" 2>&1; then
        row "$WINDOWS" "yes" "kv-watch delivery tests: $(grep -o '[0-9]* passed; [0-9]* failed' "$unit_log" | awk '{p+=$1; f+=$3} END {print p " passed; " f " failed"}')"
    else
        tail -30 "$unit_log"
        row "$WINDOWS" "yes" "kv-watch delivery tests FAILED"
        failed=1
    fi
    rm -f "$unit_log"
}

macos() {
    section "macos: setup"
    if [ ! -x "$tools/zig/ziglang/zig" ]; then
        echo "platforms: installing ziglang==$ZIG_VERSION (PyPI) into $tools/zig"
        python3 -m pip install --quiet --disable-pip-version-check --target "$tools/zig" "ziglang==$ZIG_VERSION"
    fi
    if ! "$tools/bin/cargo-zigbuild" --version 2>/dev/null | grep -q "$ZIGBUILD_VERSION"; then
        cargo install --locked --root "$tools" cargo-zigbuild --version "$ZIGBUILD_VERSION"
    fi
    # cargo-zigbuild finds Zig on PATH (the PyPI package ships the binary as ziglang/zig).
    export PATH="$tools/bin:$tools/zig/ziglang:$PATH"
    for target in "${MACOS[@]}"; do
        add_target "$target"
        section "macos: $target"
        local log
        log=$(mktemp)
        if cargo zigbuild --locked --target "$target" -p kv-cli >"$log" 2>&1; then
            row "$target" "yes" "not run (no macOS here)"
        elif grep -q 'unable to find .*framework' "$log"; then
            # Every crate compiled; only the binary's link needs Apple's SDK frameworks.
            local frameworks
            frameworks=$(grep -o 'framework "[A-Za-z]*"' "$log" | sort -u | paste -sd ' ' -)
            echo "platforms: $target: linking wasi-kv needs Apple SDK frameworks ($frameworks), which only come with Xcode; building the kv-cli library (every crate) instead"
            if cargo zigbuild --locked --target "$target" -p kv-cli --lib >"$log" 2>&1; then
                row "$target" "check only" "every crate built; the link needs Apple's SDK ($frameworks)"
            else
                tail -30 "$log"
                row "$target" "no" "the library build failed"
                failed=1
            fi
        else
            tail -30 "$log"
            row "$target" "no" "the build failed (see above)"
            failed=1
        fi
        rm -f "$log"
    done
}

$do_windows && windows
$do_macos && macos
section "done"

printf '\n%-26s | %-10s | %s\n' "target" "built" "result"
printf '%s\n' "---------------------------+------------+------------------------------------------------"
for line in "${rows[@]}"; do
    IFS='|' read -r target built result <<<"$line"
    printf '%-26s | %-10s | %s\n' "$target" "$built" "$result"
done
exit $failed
