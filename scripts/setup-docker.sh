#!/usr/bin/env bash
# Make the Docker backend usable on this machine: engine, base image, sparkdock image. Each step is skipped
# when it is already done, and says how long it took (scripts/timed.sh).
# Usage: scripts/setup-docker.sh [TAG]     (TAG is passed to build-image.sh)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/timed.sh" engine "$HERE/docker-engine.sh"
"$HERE/timed.sh" "base image" "$HERE/base-image.sh"
"$HERE/timed.sh" "sparkdock image" "$HERE/build-image.sh" "$@"
