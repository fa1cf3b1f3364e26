#!/usr/bin/env bash
# Builds the release gridwork-ffi, generates its Kotlin, compiles CaptureBench.kt and runs it with
# the arguments given (see CaptureBench.kt). Called by `gridwork-bench ffi`; progress on stderr,
# the result line on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
. "$here/toolchain.sh"
echo "kotlin bench: building the release gridwork-ffi and generating its Kotlin" >&2
(cd "$root" && cargo build -q --release -p gridwork-ffi \
    && cargo build -q -p gridwork-ffi --features uniffi/cli --bin uniffi-bindgen)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$root" && "$target/debug/uniffi-bindgen" generate --no-format \
    --library "$target/release/libgridwork_ffi.so" --language kotlin --out-dir "$work/gen" >/dev/null)
lib="$kotlin_home/lib"
cp="$jna:$lib/kotlin-stdlib.jar"
echo "kotlin bench: compiling" >&2
"$kotlin_home/bin/kotlinc-jvm" -nowarn -cp "$cp" -d "$work/bench.jar" \
    "$work/gen/uniffi/gridwork_ffi/gridwork_ffi.kt" "$here/CaptureBench.kt" 2>&1 | grep -v '^warning' >&2 || true
[ -f "$work/bench.jar" ] || { echo "bench.sh: Kotlin compilation failed" >&2; exit 1; }
echo "kotlin bench: capturing" >&2
# GRIDWORK_BENCH_JVM_OPTS: extra JVM options for experiments (e.g. -XX:+UseSerialGC, so the
# collector's threads do not compete with the capture on a 2-core machine). Empty by default.
java ${GRIDWORK_BENCH_JVM_OPTS:-} -Djna.library.path="$target/release" -cp "$cp:$work/bench.jar" CaptureBenchKt "$@"
