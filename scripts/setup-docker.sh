#!/usr/bin/env bash
# Make the Docker backend usable on this machine: engine, base image, sparkdock image.
# Usage: scripts/setup-docker.sh [TAG]     (TAG is passed to build-image.sh)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/docker-engine.sh"
"$HERE/base-image.sh"
"$HERE/build-image.sh" "$@"
