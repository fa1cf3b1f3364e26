#!/usr/bin/env bash
# Generates the Swift bindings and the C header/modulemap from the built Rust library.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build -p gridwork-ffi
cargo run -p gridwork-ffi --features uniffi/cli --bin uniffi-bindgen -- generate \
    --library "$target/debug/libgridwork_ffi.so" --language swift --out-dir "$here/generated"
mkdir -p "$here/Sources/Gridwork"
cp "$here/generated/gridwork_ffi.swift" "$here/Sources/Gridwork/"
