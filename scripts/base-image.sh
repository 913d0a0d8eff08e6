#!/usr/bin/env bash
# Make sure the base image of docker/Dockerfile (debian:bookworm-slim) exists locally, idempotently.
#
# 1. If the image is already there, nothing to do.
# 2. Else, if an earlier run saved it ($SPARKDOCK_IMAGE_CACHE, keyed by the hash of this script and its
#    inputs), `docker load` it.
# 3. Else try `docker pull` (bounded by $SPARKDOCK_PULL_TIMEOUT seconds).
# 4. Else (no registry reachable) build an equivalent: `debootstrap --variant=minbase bookworm` piped
#    into `docker import`, and save it to the cache. The host's CA bundle is added to the root file system (as a local CA for
#    update-ca-certificates and as /etc/ssl/certs/ca-certificates.crt) so that apt and pip inside
#    `docker build` work behind a TLS-intercepting proxy.
#
# Environment:
#   SPARKDOCK_BASE_IMAGE     image to provide (default debian:bookworm-slim)
#   SPARKDOCK_PULL_TIMEOUT   seconds allowed for `docker pull` (default 60)
#   SPARKDOCK_DEBIAN_MIRROR  mirror for debootstrap (default http://deb.debian.org/debian)
#   SPARKDOCK_HOST_CA        CA bundle to trust inside the image (default /etc/ssl/certs/ca-certificates.crt)
#   SPARKDOCK_IMAGE_CACHE    folder of saved images (default ~/.cache/sparkdock/images; empty: no cache)
set -euo pipefail

IMAGE="${SPARKDOCK_BASE_IMAGE:-debian:bookworm-slim}"
PULL_TIMEOUT="${SPARKDOCK_PULL_TIMEOUT:-60}"
MIRROR="${SPARKDOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA="${SPARKDOCK_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"

say() { echo "[base-image] $*"; }
die() { echo "[base-image] ERROR: $*" >&2; exit 1; }
# shellcheck source=scripts/image-cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-cache.sh"

docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/docker-engine.sh first"

# What the image is made of: this script, the image name, the mirror and the CA bundle it trusts.
KEY="$( { cat "${BASH_SOURCE[0]}"; echo "$IMAGE $MIRROR"; cat "$HOST_CA" 2>/dev/null || true; } \
        | sha256sum | cut -c1-16)"
SAFE_NAME="$(printf '%s' "$IMAGE" | tr -c 'A-Za-z0-9._-' '_')"
TAR="${CACHE:+$CACHE/base-$SAFE_NAME-$KEY.tar}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE is present locally."
    # Keep it for a fresh engine (an image built before the cache existed, or pulled by hand).
    [ -z "$TAR" ] || [ -s "$TAR" ] || cache_save "$IMAGE" "$TAR"
    exit 0
fi

if [ -n "$TAR" ] && [ -s "$TAR" ]; then
    say "loading the saved $IMAGE from $TAR"
    if cache_load "$TAR" >/dev/null && docker image inspect "$IMAGE" >/dev/null 2>&1; then
        say "loaded $IMAGE from the cache."
        exit 0
    fi
fi

say "trying: docker pull $IMAGE (timeout ${PULL_TIMEOUT}s)"
if timeout "$PULL_TIMEOUT" docker pull "$IMAGE"; then
    say "pulled $IMAGE."
    cache_save "$IMAGE" "$TAR"
    exit 0
fi
say "docker pull failed; building $IMAGE locally with debootstrap"

[ "$(id -u)" = "0" ] || die "building the base image with debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it"
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
        || die "apt-get install debootstrap failed"
fi

case "$IMAGE" in
    *bookworm*) SUITE=bookworm ;;
    *) die "do not know which Debian suite $IMAGE is; set SPARKDOCK_BASE_IMAGE to a bookworm image" ;;
esac

WORK="$(mktemp -d /tmp/sparkdock-rootfs.XXXXXX)"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

say "debootstrap --variant=minbase $SUITE $ROOTFS $MIRROR (about 30-60 s)"
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed"
fi

say "configuring the root file system (apt sources, slim settings, host CA bundle)"
rm -f "$ROOTFS/etc/apt/sources.list"
mkdir -p "$ROOTFS/etc/apt/sources.list.d"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# Same space-saving settings as the official -slim images.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
if [ -s "$HOST_CA" ]; then
    # As a local CA: the ca-certificates package's update-ca-certificates keeps it in the bundle it
    # regenerates. As the bundle itself: trusted before ca-certificates is installed.
    mkdir -p "$ROOTFS/usr/local/share/ca-certificates" "$ROOTFS/etc/ssl/certs"
    cp "$HOST_CA" "$ROOTFS/usr/local/share/ca-certificates/sparkdock-host-ca.crt"
    cp "$HOST_CA" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
else
    say "warning: no host CA bundle at $HOST_CA; pip inside docker build may fail behind a TLS proxy"
fi
rm -rf "$ROOTFS/var/lib/apt/lists/"* "$ROOTFS/var/cache/apt/"*.bin "$ROOTFS/tmp/"*

say "docker import -> $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "sparkdock: debootstrap --variant=minbase $SUITE" \
    - "$IMAGE" >/dev/null || die "docker import failed"
say "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)."
cache_save "$IMAGE" "$TAR"
