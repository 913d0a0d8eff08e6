#!/usr/bin/env bash
# Create the development venv with sparkdock[test], only when pyproject.toml changed.
#
# Usage: scripts/venv.sh [PYTHON] [VENV]      (defaults: python3 .venv)
#
# - The hash of pyproject.toml is kept in VENV/.sparkdock-installed; when it matches, nothing is done
#   (sparkdock is installed in editable mode, so changes under src/ need no reinstall).
# - After an install, the venv is also kept in $SPARKDOCK_VENV_CACHE/<hash> (hard links: no extra space).
#   A new checkout with the same pyproject.toml (a fresh CI clone) copies it from there in seconds and points
#   its scripts and its editable install at itself, instead of installing everything again.
#
# Environment:
#   SPARKDOCK_VENV_CACHE   folder of kept venvs (default ~/.cache/sparkdock/venvs; empty: no cache)
set -euo pipefail
PYTHON="${1:-python3}"
VENV="${2:-.venv}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
STAMP="$VENV/.sparkdock-installed"
CACHE="${SPARKDOCK_VENV_CACHE-${XDG_CACHE_HOME:-$HOME/.cache}/sparkdock/venvs}"

say() { echo "venv: $*"; }

want="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    say "$VENV is up to date (pyproject.toml unchanged)"
    exit 0
fi

# rewrite_bin DIR OLD NEW: the scripts of DIR/bin (shebangs, activate) name NEW instead of OLD. sed -i writes
# new files, so a copy made of hard links is changed without changing the files it shares.
rewrite_bin() {
    grep -rlI --null -- "$2" "$1/bin" 2>/dev/null | xargs -0 -r sed -i "s|$2|$3|g"
}

# Point a venv copied from $1 at its new place ($VENV): script shebangs, activate scripts, the editable install.
relocate() {
    local old="$1" new old_src new_src pth
    new="$(cd "$VENV" && pwd)"
    rewrite_bin "$VENV" "$old" "$new"
    old_src="$(cat "$VENV/.sparkdock-src")"
    new_src="$REPO/src"
    for pth in "$VENV"/lib/python*/site-packages/_editable_impl_sparkdock.pth; do
        [ -f "$pth" ] || continue
        # a new file, not an edit in place: the cache shares the old one by a hard link
        rm -f "$pth" && printf '%s' "$new_src" >"$pth"
    done
    rm -f "$VENV/.sparkdock-src" && printf '%s' "$new_src" >"$VENV/.sparkdock-src"
    [ "$old_src" = "$new_src" ] || say "editable install moved from $old_src to $new_src"
}

kept="${CACHE:+$CACHE/$want}"
if [ -n "$kept" ] && [ -x "$kept/bin/python" ] && [ -s "$kept/.sparkdock-installed" ]; then
    say "copying the venv kept for this pyproject.toml from $kept"
    rm -rf "$VENV"
    cp -al "$kept" "$VENV" 2>/dev/null || { rm -rf "$VENV"; cp -a "$kept" "$VENV"; }
    relocate "$kept"
    if "$VENV/bin/python" -c 'import sparkdock, pyspark, jupyter_server, pytest' 2>/dev/null \
        && [ "$("$VENV/bin/python" -c 'import sparkdock, os; print(os.path.dirname(os.path.dirname(os.path.dirname(sparkdock.__file__))))')" = "$REPO" ]; then
        say "$VENV is ready (from the cache)"
        exit 0
    fi
    say "the copied venv does not work; installing instead"
fi

say "installing sparkdock[test] into $VENV (pyproject.toml is new or changed)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e '.[test]'
printf '%s' "$REPO/src" >"$VENV/.sparkdock-src"
echo "$want" >"$STAMP"

if [ -n "$kept" ]; then
    mkdir -p "$CACHE"
    rm -rf "$kept.part"
    if cp -al "$VENV" "$kept.part" 2>/dev/null || cp -a "$VENV" "$kept.part"; then
        old_abs="$(cd "$VENV" && pwd)"
        rm -rf "$kept" && mv "$kept.part" "$kept"
        # The kept copy names itself; relocate() points each copy taken from it at that copy's place.
        rewrite_bin "$kept" "$old_abs" "$kept"
        find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$want" -exec rm -rf {} +
        say "kept a copy in $kept"
    else
        rm -rf "$kept.part"
    fi
fi
