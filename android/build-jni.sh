#!/usr/bin/env bash
# Builds libgridwork_ffi.so for the three Android ABIs into src/main/jniLibs with cargo-ndk.
# Needs ANDROID_NDK_HOME (not available on the CI machine) and `cargo install cargo-ndk`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ -n "${ANDROID_NDK_HOME:-}" ] || { echo "build-jni.sh: set ANDROID_NDK_HOME to an Android NDK" >&2; exit 1; }
rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
cd "$here/.."
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -o "$here/src/main/jniLibs" build --release -p gridwork-ffi --features vendored-crypto
