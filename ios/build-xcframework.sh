#!/usr/bin/env bash
# Builds GridworkFFI.xcframework for devices and simulators. Needs Xcode (macOS).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v xcodebuild >/dev/null || { echo "build-xcframework.sh: needs Xcode (xcodebuild)" >&2; exit 1; }
cd "$here/.."
targets="aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios"
rustup target add $targets
for t in $targets; do cargo build --release -p gridwork-ffi --features vendored-crypto --target "$t"; done
"$here/generate.sh"
lipo -create target/aarch64-apple-ios-sim/release/libgridwork_ffi.a target/x86_64-apple-ios/release/libgridwork_ffi.a \
    -output "$here/generated/libgridwork_ffi_sim.a"
mkdir -p "$here/generated/include"
cp "$here/generated/gridwork_ffiFFI.h" "$here/generated/include/"
cp "$here/generated/gridwork_ffiFFI.modulemap" "$here/generated/include/module.modulemap"
rm -rf "$here/GridworkFFI.xcframework"
xcodebuild -create-xcframework \
    -library target/aarch64-apple-ios/release/libgridwork_ffi.a -headers "$here/generated/include" \
    -library "$here/generated/libgridwork_ffi_sim.a" -headers "$here/generated/include" \
    -output "$here/GridworkFFI.xcframework"
