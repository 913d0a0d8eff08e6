#!/usr/bin/env bash
# Make Debian's chromium available for the browser test (tests/test_browser.py).
# There is no `playwright install` (no browser download): playwright drives /usr/bin/chromium.
# Idempotent: does nothing when chromium is already there. Installs it with apt-get only as root on Debian;
# otherwise says what to do and exits 1.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

say() { echo "setup-browser: $*"; }

if [ -x "$CHROMIUM" ]; then
  say "$CHROMIUM is present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown')); nothing to do"
  exit 0
fi

if [ "$(id -u)" != "0" ]; then
  say "ERROR: $CHROMIUM is missing and we are not root; install it yourself (Debian: sudo apt-get install -y chromium)" >&2
  exit 1
fi
if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
  say "ERROR: $CHROMIUM is missing and this is not Debian (no apt-get); install chromium and set CHROMIUM=/path" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
say "$CHROMIUM is missing: running apt-get update"
apt-get update -q
say "installing chromium: apt-get install -y chromium"
apt-get install -y -q --no-install-recommends chromium fonts-liberation

if [ ! -x "$CHROMIUM" ]; then
  say "ERROR: apt-get install chromium finished but $CHROMIUM is still missing" >&2
  exit 1
fi
say "installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
