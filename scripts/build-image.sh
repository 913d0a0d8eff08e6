#!/usr/bin/env bash
# Build the sparkdock Spark image (docker/Dockerfile), skipping the build when it is up to date.
#
# Usage: scripts/build-image.sh [TAG]          (default tag: sparkdock/spark:0.1.0)
#
# The content hash of docker/ and src/sparkdock/cluster src/sparkdock/spark/ is stored in the image label
# io.sparkdock.context-hash; an image with the tag and the same hash is reused as it is.
# The build context is a temporary directory holding only those two folders (the Dockerfile's
# paths are relative to the repository root), so it stays small with the legacy builder too.
#
# Environment:
#   SPARKDOCK_VERSION      the version label / build arg (default: from the tag, else 0.1.0)
#   SPARKDOCK_BUILD_ARGS   extra arguments for `docker build` (e.g. "--no-cache")
#   SPARKDOCK_FORCE_BUILD  1 to build even when an image with the same hash exists
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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

[ -f "$REPO/docker/Dockerfile" ] || die "no docker/Dockerfile under $REPO"
[ -d "$REPO/src/sparkdock/cluster" ] || die "no src/sparkdock/cluster under $REPO"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/docker-engine.sh first"

list_files() {
    (cd "$REPO" && find docker src/sparkdock/cluster src/sparkdock/spark -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '.DS_Store' | LC_ALL=C sort)
}
HASH="$(cd "$REPO" && list_files | while IFS= read -r f; do
            printf '%s\n' "$f"; sha256sum <"$f"; done | sha256sum | cut -c1-16)"
say "context hash: $HASH (docker/ + src/sparkdock/cluster/ + src/sparkdock/spark/, version $SPARKDOCK_VERSION)"

if [[ "${SPARKDOCK_FORCE_BUILD:-0}" != "1" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    have="$(docker image inspect -f '{{ index .Config.Labels "io.sparkdock.context-hash" }}' "$TAG" 2>/dev/null || true)"
    if [[ "$have" == "$HASH" ]]; then
        say "$TAG is up to date (same context hash); nothing to build."
        exit 0
    fi
    say "$TAG exists with context hash '${have:-none}'; rebuilding"
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
