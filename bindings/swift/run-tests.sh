#!/usr/bin/env bash
# Swift on Linux: builds gridwork-ffi and the sync server on the host, generates the Swift
# bindings from the built library, starts a real server on loopback with a small district, and
# runs the XCTest suite (ios/Tests/GridworkTests) with SwiftPM inside a Debian trixie chroot
# (bindings/swift/setup-chroot.sh makes it once; trixie's Swift needs glibc 2.38, the host has
# 2.36). The chroot shares the host's network, so the suite reaches the server on 127.0.0.1.
# Fails loudly when the chroot cannot be made.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

chroot_dir="$("$here/setup-chroot.sh" | tail -1)"
chroot "$chroot_dir" swift --version >/dev/null || { echo "swift: no working Swift in $chroot_dir" >&2; exit 1; }

echo "swift: building gridwork-ffi, uniffi-bindgen and gridwork-sync-server" >&2
(cd "$root" && cargo build -q -p gridwork-ffi -p gridwork-sync-server \
    && cargo build -q -p gridwork-ffi --features uniffi/cli --bin uniffi-bindgen)
work="$(mktemp -d)"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The package is assembled at a fixed place in the chroot so SwiftPM's build cache is reused.
pkg_in_chroot=/build/gridwork-swift
pkg="$chroot_dir$pkg_in_chroot"
mkdir -p "$pkg/Sources/Gridwork" "$pkg/Sources/gridwork_ffiFFI" "$pkg/Tests/GridworkTests" "$pkg/lib" "$pkg/fixtures"
# Generated code is produced here, never edited by hand.
"$target/debug/uniffi-bindgen" generate --no-format --library "$target/debug/libgridwork_ffi.so" \
    --language swift --out-dir "$work/gen" >/dev/null
sync_file() { cmp -s "$1" "$2" || cp "$1" "$2"; }   # unchanged files keep their mtime: no rebuild
sync_file "$here/Package.swift" "$pkg/Package.swift"
sync_file "$work/gen/gridwork_ffi.swift" "$pkg/Sources/Gridwork/gridwork_ffi.swift"
sync_file "$work/gen/gridwork_ffiFFI.h" "$pkg/Sources/gridwork_ffiFFI/gridwork_ffiFFI.h"
sed 's/^\(\s*\)export \*/\1link "gridwork_ffi"\n\1export */' "$work/gen/gridwork_ffiFFI.modulemap" >"$work/module.modulemap"
sync_file "$work/module.modulemap" "$pkg/Sources/gridwork_ffiFFI/module.modulemap"
sync_file "$root/ios/Tests/GridworkTests/GridworkTests.swift" "$pkg/Tests/GridworkTests/GridworkTests.swift"
sync_file "$target/debug/libgridwork_ffi.so" "$pkg/lib/libgridwork_ffi.so"
sync_file "$root/bindings/tests/fixtures/photo.jpg" "$pkg/fixtures/photo.jpg"

. "$root/bindings/tests/district-server.sh"
start_district_server

mountpoint -q "$chroot_dir/proc" || mount -t proc proc "$chroot_dir/proc"
echo "swift: swift build and swift test (Swift 6 language mode) in $chroot_dir" >&2
chroot "$chroot_dir" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 \
    LD_LIBRARY_PATH="$pkg_in_chroot/lib" \
    $(env | grep '^GRIDWORK_[A-Z_]*_CODE=') \
    GRIDWORK_PHOTO="$pkg_in_chroot/fixtures/photo.jpg" \
    bash -c "cd $pkg_in_chroot && swift build --build-tests && swift test --skip-build" 2>&1 | tee "$work/swift.log"
# XCTest prints this summary line only when the suite ran; "0 tests" would not match.
grep -Eq "Executed [1-9][0-9]* tests?, with 0 failures" "$work/swift.log" \
    || { echo "swift: the suite did not pass (see above)" >&2; exit 1; }
