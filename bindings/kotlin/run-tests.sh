#!/usr/bin/env bash
# Kotlin on the JVM: builds gridwork-ffi and the sync server, generates the Kotlin bindings from
# the built library, starts a real server on loopback with a small district, and runs
# GridworkTest.kt against it. Fails loudly when a toolchain is missing (.ci/run installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
. "$here/toolchain.sh"

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

. "$root/bindings/tests/district-server.sh"
start_district_server

lib="$kotlin_home/lib"
cp="$jna:$lib/kotlin-stdlib.jar:$lib/kotlin-test.jar:$lib/kotlinx-coroutines-core-jvm.jar"
echo "kotlin: compiling the generated bindings and the suite" >&2
"$kotlin_home/bin/kotlinc-jvm" -nowarn -cp "$cp" -d "$work/tests.jar" \
    "$work/gen/uniffi/gridwork_ffi/gridwork_ffi.kt" "$here/GridworkTest.kt" 2>&1 | grep -v '^warning' >&2 || true
[ -f "$work/tests.jar" ] || { echo "run-tests.sh: Kotlin compilation failed" >&2; exit 1; }
java -Djna.library.path="$target/debug" -cp "$cp:$work/tests.jar" GridworkTestKt
