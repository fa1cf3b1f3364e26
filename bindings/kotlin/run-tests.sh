#!/usr/bin/env bash
# Kotlin on the JVM: builds gridwork-ffi and the sync server, generates the Kotlin bindings from
# the built library, starts a real server on loopback with a small district, and runs
# GridworkTest.kt against it. Fails loudly when a toolchain is missing (.ci/run installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
kotlin_home="${KOTLIN_HOME:-${GRIDWORK_TOOLS:-$HOME/.cache/gridwork-tools}/kotlin/node_modules/kotlin-compiler}"
jna="${JNA_JAR:-/usr/share/java/jna.jar}"
for f in "$kotlin_home/bin/kotlinc-jvm" "$jna"; do
    [ -e "$f" ] || { echo "run-tests.sh: $f missing (.ci/run installs kotlin-compiler from npm and libjna-java)" >&2; exit 1; }
done

echo "kotlin: building gridwork-ffi, uniffi-bindgen and gridwork-sync-server" >&2
(cd "$root" && cargo build -q -p gridwork-ffi -p gridwork-sync-server \
    && cargo build -q -p gridwork-ffi --features uniffi/cli --bin uniffi-bindgen)
work="$(mktemp -d)"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Generated code is produced here, never edited by hand.
"$target/debug/uniffi-bindgen" generate --no-format --library "$target/debug/libgridwork_ffi.so" \
    --language kotlin --out-dir "$work/gen" >/dev/null

srv="$target/debug/gridwork-sync-server"
data="$work/server"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
"$srv" --data-dir "$data" admin import-catalog "$root/bindings/tests/fixtures/district.json" >/dev/null
"$srv" --data-dir "$data" admin set-user w1 --role worker --scope grid:g0 >/dev/null
"$srv" --data-dir "$data" admin set-user s1 --role supervisor --scope "community:Community 0" >/dev/null
code() { "$srv" --data-dir "$data" admin enrol-device "$1" --server "$url" | tail -1; }
export GRIDWORK_WORKER_CODE="$(code w1)"
export GRIDWORK_SUPERVISOR_A_CODE="$(code s1)"
export GRIDWORK_SUPERVISOR_B_CODE="$(code s1)"
"$srv" --data-dir "$data" serve --listen "127.0.0.1:$port" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "$url/v1/health" >/dev/null 2>&1 && break
    sleep 0.1
done

lib="$kotlin_home/lib"
cp="$jna:$lib/kotlin-stdlib.jar:$lib/kotlin-test.jar:$lib/kotlinx-coroutines-core-jvm.jar"
echo "kotlin: compiling the generated bindings and the suite" >&2
"$kotlin_home/bin/kotlinc-jvm" -nowarn -cp "$cp" -d "$work/tests.jar" \
    "$work/gen/uniffi/gridwork_ffi/gridwork_ffi.kt" "$here/GridworkTest.kt" 2>&1 | grep -v '^warning' >&2 || true
[ -f "$work/tests.jar" ] || { echo "run-tests.sh: Kotlin compilation failed" >&2; exit 1; }
java -Djna.library.path="$target/debug" -cp "$cp:$work/tests.jar" GridworkTestKt
