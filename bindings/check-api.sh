#!/usr/bin/env bash
# Two checks on the generated bindings, run by scripts/test:
# 1. Reproducible: Kotlin and Swift generated twice from the same library are byte-identical.
# 2. Deliberate: the public API they expose (bindings/api/signatures.py) matches the checked-in
#    snapshot, bindings/api/kotlin.api and swift.api. An API change fails here until the
#    snapshot is updated on purpose: `bindings/check-api.sh --update`, then review the diff.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
update=false
[ "${1:-}" = "--update" ] && update=true

(cd "$root" && cargo build -q -p gridwork-ffi && cargo build -q -p gridwork-ffi --features uniffi/cli --bin uniffi-bindgen)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lib="$target/debug/libgridwork_ffi.so"
for run in 1 2; do
    for language in kotlin swift; do
        (cd "$root" && "$target/debug/uniffi-bindgen" generate --no-format --library "$lib" \
            --language "$language" --out-dir "$work/$run/$language" >/dev/null)
    done
done
if ! diff -r "$work/1" "$work/2" >"$work/reproducible.diff"; then
    echo "check-api: generating the bindings twice gave different files:" >&2
    head -40 "$work/reproducible.diff" >&2
    exit 1
fi
echo "check-api: bindings are reproducible ($(find "$work/1" -type f | wc -l) files identical)" >&2

status=0
python3 "$here/api/signatures.py" kotlin "$work/1/kotlin/uniffi/gridwork_ffi/gridwork_ffi.kt" >"$work/kotlin.api"
python3 "$here/api/signatures.py" swift "$work/1/swift/gridwork_ffi.swift" >"$work/swift.api"
for language in kotlin swift; do
    snapshot="$here/api/$language.api"
    if $update; then
        cp "$work/$language.api" "$snapshot"
        echo "check-api: wrote $snapshot ($(wc -l <"$snapshot") declarations)" >&2
    elif ! diff -u "$snapshot" "$work/$language.api" >&2; then
        echo "check-api: the public $language API changed (diff above, - snapshot + now)." >&2
        echo "  If that is intended, run bindings/check-api.sh --update and commit the snapshot." >&2
        status=1
    else
        echo "check-api: $language API matches its snapshot ($(wc -l <"$snapshot") declarations)" >&2
    fi
done
exit $status
