#!/usr/bin/env bash
# Run a set-up step and say how long it took.
#
# Usage: scripts/timed.sh STEP COMMAND [ARG...]
#
# Prints "==> STEP: N s" (or "FAILED after N s") when the command ends, and appends "STEP<TAB>N<TAB>ok|failed"
# to $SPARKDOCK_TIMINGS when that is set (`make test` prints the table at the end). Exits with the command's
# status.
set -uo pipefail
step="$1"; shift
start=$(date +%s)
"$@"
rc=$?
secs=$(( $(date +%s) - start ))
if [ "$rc" -eq 0 ]; then status=ok; echo "==> $step: ${secs} s"; else status=failed; echo "==> $step: FAILED (exit $rc) after ${secs} s"; fi
if [ -n "${SPARKDOCK_TIMINGS:-}" ]; then
    mkdir -p "$(dirname "$SPARKDOCK_TIMINGS")"
    printf '%s\t%s\t%s\n' "$step" "$secs" "$status" >>"$SPARKDOCK_TIMINGS"
fi
exit "$rc"
