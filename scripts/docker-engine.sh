#!/usr/bin/env bash
# Bring up a Docker engine on this machine, idempotently.
#
# - If `docker info` already answers, there is nothing to do.
# - Else, as root on Debian/Ubuntu: install docker.io (and debootstrap, used by base-image.sh) when
#   missing, start dockerd in the background (log: $SPARKDOCK_DOCKERD_LOG) and wait until it answers.
# - Otherwise fail with a clear message.
#
# The engine runs with `live-restore` (set in daemon.json, merged into what is there), as Docker's live-restore
# documentation describes: without it, a restart of dockerd stops every container, so every running cluster
# would be lost. A dockerd that already runs without it is told to reload its configuration (SIGHUP:
# live-restore is reloadable) when this script may do so (root).
#
# Environment:
#   SPARKDOCK_DOCKERD_LOG      dockerd log file (default /var/log/sparkdock-dockerd.log)
#   SPARKDOCK_DOCKERD_WAIT     seconds to wait for the engine (default 60)
#   SPARKDOCK_DOCKERD_CONFIG   daemon.json to write live-restore into (default /etc/docker/daemon.json)
set -euo pipefail

LOG="${SPARKDOCK_DOCKERD_LOG:-/var/log/sparkdock-dockerd.log}"
WAIT="${SPARKDOCK_DOCKERD_WAIT:-60}"

say() { echo "[docker-engine] $*"; }
die() { echo "[docker-engine] ERROR: $*" >&2; exit 1; }

CONFIG="${SPARKDOCK_DOCKERD_CONFIG:-/etc/docker/daemon.json}"

engine_up() { docker info >/dev/null 2>&1; }
live_restore() { [ "$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)" = "true" ]; }

# Merge "live-restore": true into daemon.json (keeping every other setting). Returns 1 if it cannot.
write_live_restore() {
    mkdir -p "$(dirname "$CONFIG")" || return 1
    python3 - "$CONFIG" <<'PY' || return 1
import json, os, sys
path = sys.argv[1]
try:
    with open(path) as f:
        conf = json.load(f) if os.path.getsize(path) else {}
except FileNotFoundError:
    conf = {}
if conf.get("live-restore") is not True:
    conf["live-restore"] = True
    tmp = path + ".sparkdock.tmp"
    with open(tmp, "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
PY
}

up_message() {
    say "Docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), live-restore: $(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null || echo '?'))."
}

if command -v docker >/dev/null 2>&1 && engine_up; then
    if ! live_restore; then
        if [ "$(id -u)" = "0" ] && pgrep -x dockerd >/dev/null 2>&1 && write_live_restore; then
            say "dockerd runs without live-restore: written to $CONFIG, reloading dockerd (SIGHUP)"
            pkill -HUP -x dockerd || true
            for _ in $(seq 1 10); do live_restore && break; sleep 0.5; done
        fi
        live_restore || say "WARNING: dockerd runs without live-restore: a restart of the engine will stop every cluster (add \"live-restore\": true to its daemon.json)"
    fi
    up_message
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    die "the Docker engine does not answer ('docker info' failed) and this script is not running as root,
so it cannot install or start dockerd. Start Docker yourself (e.g. 'sudo systemctl start docker') or run as root."
fi
if ! command -v apt-get >/dev/null 2>&1; then
    die "the Docker engine does not answer and this is not a Debian/Ubuntu machine (no apt-get): install and start Docker yourself."
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
    say "installing ${pkgs[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" ca-certificates iptables \
        || die "apt-get install ${pkgs[*]} failed"
fi

write_live_restore || say "WARNING: could not write live-restore into $CONFIG"

if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is already running (pid $(pgrep -x dockerd | head -1)); waiting for it to answer"
else
    # containerd is started by dockerd itself when no system containerd runs.
    say "starting dockerd in the background (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
    disown || true
fi

for _ in $(seq 1 "$WAIT"); do
    if engine_up; then
        up_message
        exit 0
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        tail -n 30 "$LOG" >&2 || true
        die "dockerd exited; see $LOG"
    fi
    sleep 1
done
tail -n 30 "$LOG" >&2 || true
die "dockerd did not answer within ${WAIT}s; see $LOG"
