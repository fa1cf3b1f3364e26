#!/usr/bin/env bash
# Makes (or reuses) a Debian trixie chroot with Swift 6 (Debian's `swiftlang`) for the Swift
# binding suite. The host is bookworm, which has no Swift, and trixie's Swift binaries need
# glibc 2.38, so they run inside this chroot; the Rust library built on the host runs there
# unchanged. Idempotent: a chroot that already has `swift` is reused. Needs root, debootstrap and
# about 3.5 GB. Prints the chroot's path on its last line.
set -euo pipefail
root="${GRIDWORK_SWIFT_CHROOT:-${GRIDWORK_TOOLS:-$HOME/.cache/gridwork-tools}/swift-trixie}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# /usr/bin/swift is an absolute symlink inside the chroot: ask the chroot, not the host's view.
if [ -f "$root/.gridwork-ready" ] && chroot "$root" swift --version >/dev/null 2>&1; then
    echo "$root"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "swift chroot: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 \
        || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
fi
if [ ! -x "$root/usr/bin/apt-get" ] || [ ! -f "$root/.gridwork-bootstrapped" ]; then
    # A half-made chroot from an interrupted run is moved aside, not reused.
    if [ -e "$root" ]; then
        mv "$root" "$root.incomplete.$(date +%s)"
        echo "swift chroot: moved an incomplete chroot aside" >&2
    fi
    mkdir -p "$(dirname "$root")"
    echo "swift chroot: debootstrap trixie into $root (about a minute)" >&2
    debootstrap --variant=minbase trixie "$root" "$mirror" >&2
    touch "$root/.gridwork-bootstrapped"
fi
echo "swift chroot: installing swiftlang (about 2 minutes, 3.3 GB)" >&2
mount_if_needed() {
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
}
mount_if_needed
chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
    'apt-get update -qq && apt-get install -y -qq --no-install-recommends swiftlang libc6-dev ca-certificates' >&2
chroot "$root" swift --version >&2
touch "$root/.gridwork-ready"
echo "$root"
