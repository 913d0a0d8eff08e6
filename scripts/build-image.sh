#!/usr/bin/env bash
# Build the sparkdock Spark image (docker/Dockerfile), skipping the build when it is up to date.
#
# Usage: scripts/build-image.sh [--check] [TAG]   (default tag: sparkdock/spark:0.1.0)
#   --check   only say whether TAG is up to date (exit 0) or not (exit 1); builds nothing
#
# The content hash of docker/, src/sparkdock/cluster/ and src/sparkdock/spark/ is stored in the image label
# io.sparkdock.context-hash; an image with the tag and the same hash is reused as it is. After a build the
# image is kept as a `docker save` tar named by that hash in $SPARKDOCK_IMAGE_CACHE, so that a fresh engine
# (or one whose image was removed) `docker load`s it instead of building again.
# The build context is a temporary directory holding only those two folders (the Dockerfile's
# paths are relative to the repository root), so it stays small with the legacy builder too.
#
# Environment:
#   SPARKDOCK_VERSION      the version label / build arg (default: from the tag, else 0.1.0)
#   SPARKDOCK_BUILD_ARGS   extra arguments for `docker build` (e.g. "--no-cache")
#   SPARKDOCK_FORCE_BUILD  1 to build even when an image with the same hash exists (or is cached)
#   SPARKDOCK_IMAGE_CACHE  folder of the saved images (default ~/.cache/sparkdock/images; empty: no cache)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHECK=0
if [[ "${1:-}" == "--check" ]]; then CHECK=1; shift; fi
TAG="${1:-sparkdock/spark:0.1.0}"
case "$TAG" in
    *:*) tag_version="${TAG##*:}" ;;
    *) tag_version="" ;;
esac
if [[ -z "${SPARKDOCK_VERSION:-}" ]]; then
    if [[ "$tag_version" =~ ^[0-9]+\.[0-9]+ ]]; then SPARKDOCK_VERSION="$tag_version"; else SPARKDOCK_VERSION=0.1.0; fi
fi

say() { echo "[build-image] $*"; }
die() { echo "[build-image] ERROR: $*" >&2; exit 1; }
# shellcheck source=scripts/image-cache.sh
. "$REPO/scripts/image-cache.sh"

[ -f "$REPO/docker/Dockerfile" ] || die "no docker/Dockerfile under $REPO"
[ -d "$REPO/src/sparkdock/cluster" ] || die "no src/sparkdock/cluster under $REPO"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/docker-engine.sh first"

list_files() {
    (cd "$REPO" && find docker src/sparkdock/cluster src/sparkdock/spark -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '.DS_Store' | LC_ALL=C sort)
}
HASH="$(cd "$REPO" && list_files | while IFS= read -r f; do
            printf '%s\n' "$f"; sha256sum <"$f"; done | sha256sum | cut -c1-16)"
[[ "$CHECK" == 1 ]] || say "context hash: $HASH (docker/ + src/sparkdock/cluster/ + src/sparkdock/spark/, version $SPARKDOCK_VERSION)"

hash_of() { docker image inspect -f '{{ index .Config.Labels "io.sparkdock.context-hash" }}' "$1" 2>/dev/null || true; }

# The image kept as a tar named by its content hash, for a fresh engine.
tar_file="${CACHE:+$CACHE/sparkdock-spark-$HASH.tar}"
have="$(hash_of "$TAG")"
if [[ "$CHECK" == 1 ]]; then
    [[ "$have" == "$HASH" ]] && exit 0
    exit 1
fi
if [[ "${SPARKDOCK_FORCE_BUILD:-0}" != "1" ]]; then
    if [[ "$have" == "$HASH" ]]; then
        say "$TAG is up to date (same context hash); nothing to build."
        [[ -z "$tar_file" || -s "$tar_file" ]] || cache_save "$TAG" "$tar_file"
        exit 0
    fi
    [[ -n "$have" ]] && say "$TAG exists with context hash '$have'"
    if [[ -n "$tar_file" && -s "$tar_file" ]]; then
        say "loading the saved image $tar_file (same context hash)"
        start=$(date +%s)
        if loaded="$(cache_load "$tar_file")"; then
            # The tar holds the tag it was saved with; give the image this TAG too.
            id="$(printf '%s\n' "$loaded" | sed -n 's/^Loaded image\( ID\)\?: //p' | tail -n 1)"
            [[ -n "$id" ]] && docker tag "$id" "$TAG"
            if [[ "$(hash_of "$TAG")" == "$HASH" ]]; then
                say "loaded $TAG from the cache in $(( $(date +%s) - start )) s; nothing to build."
                exit 0
            fi
            say "the saved image did not give $TAG with hash $HASH; removing it and building instead"
            rm -f "$tar_file"
        fi
    fi
fi

CTX="$(mktemp -d /tmp/sparkdock-build.XXXXXX)"
trap 'rm -rf "$CTX"' EXIT
list_files | while IFS= read -r f; do
    mkdir -p "$CTX/$(dirname "$f")"
    cp "$REPO/$f" "$CTX/$f"
done

say "docker build -f docker/Dockerfile -t $TAG (context: $CTX)"
start=$(date +%s)
# The legacy builder is used when buildx is absent (Debian's docker.io); both read this Dockerfile.
# shellcheck disable=SC2086
if ! docker build -f "$CTX/docker/Dockerfile" -t "$TAG" \
        --build-arg "SPARKDOCK_VERSION=$SPARKDOCK_VERSION" \
        --label "io.sparkdock.context-hash=$HASH" \
        ${SPARKDOCK_BUILD_ARGS:-} "$CTX"; then
    die "docker build failed (see the output above). If apt or pip failed on TLS, check that the base
image trusts your proxy's CA (scripts/base-image.sh adds the host's CA bundle when it builds the base image)."
fi
say "built $TAG in $(( $(date +%s) - start )) s."
# An image replaced by this build is left without a tag: remove it (it may still be used by a container).
if [[ -n "$have" ]]; then
    docker image ls -q --filter dangling=true --filter "label=io.sparkdock.context-hash=$have" \
        | xargs -r docker image rm >/dev/null 2>&1 || true
fi

cache_save "$TAG" "$tar_file"
