#!/usr/bin/env bash
# Print the set-up and test times recorded by scripts/timed.sh in $SPARKDOCK_TIMINGS (FILE if given).
set -uo pipefail
file="${1:-${SPARKDOCK_TIMINGS:-build/timings.txt}}"
[ -s "$file" ] || exit 0
echo "==> where the time went (seconds)"
awk -F'\t' '{ printf "    %-16s %6d  %s\n", $1, $2, ($3 == "ok" ? "" : $3); total += $2 }
            END { printf "    %-16s %6d\n", "total", total }' "$file"
