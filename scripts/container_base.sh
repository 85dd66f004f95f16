#!/usr/bin/env bash
# A local stand-in for the official python:3.11-slim-bookworm image, made from Debian's
# packages alone (for machines that reach Debian's archive but no image registry):
#   scripts/container_base.sh            print the base's name, making it first when missing
#   scripts/container_base.sh --name     print the name only
# The base is debootstrap's minbase of Debian 12 "bookworm" plus Debian's python3 (3.11),
# venv and CA certificates, with the same apt sources as Debian's official image, imported
# into podman. The root filesystem is kept as a tar under the cache folder
# (AMS_CONTAINER_CACHE, default .cache/container, git-ignored), so a lost podman store is
# refilled in seconds instead of a new debootstrap (about 2 minutes). Needs root,
# debootstrap and podman. The name carries a hash of this script: editing it makes a new base.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${AMS_CONTAINER_CACHE:-.cache/container}"
suite=bookworm
mirror="${AMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3,python3-venv,python-is-python3,ca-certificates
version="$(sha256sum "$0" | cut -c1-12)"
image="localhost/ams-base:$suite-py3-$version"
tarball="$cache/ams-base-$suite-$version.tar"

log() { echo "container_base: $*" >&2; }

if [ "${1:-}" = "--name" ] || podman image exists "$image"; then
  echo "$image"
  exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$cache/debs"
  log "debootstrap --variant=minbase $suite (+ $packages) into $rootfs"
  start=$SECONDS
  debootstrap --variant=minbase --include="$packages" --cache-dir="$(realpath "$cache/debs")" \
    "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # The apt sources of Debian's official image: the release, its updates and security.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  log "root filesystem made in $((SECONDS - start)) s: $tarball ($(du -h "$tarball" | cut -f1))"
fi
podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $suite + $packages" \
  "$tarball" "$image" >/dev/null
log "imported $image"
echo "$image"
