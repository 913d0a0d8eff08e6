# Sourced by base-image.sh and build-image.sh: images kept as `docker save` tars, so that a fresh engine
# `docker load`s them instead of building them again. The caller defines say().
#
#   SPARKDOCK_IMAGE_CACHE   folder of the tars (default ~/.cache/sparkdock/images; empty: no cache)

CACHE="${SPARKDOCK_IMAGE_CACHE-${XDG_CACHE_HOME:-$HOME/.cache}/sparkdock/images}"

# cache_save IMAGE TAR: save IMAGE to TAR (whole or not at all), then remove the older tars of the same image,
# which are the files named like TAR up to its last "-". Does nothing when TAR is empty (no cache).
cache_save() {
    local image="$1" tar="$2" start
    [ -n "$tar" ] || return 0
    mkdir -p "$(dirname "$tar")"
    start=$(date +%s)
    if docker save -o "$tar.part" "$image"; then
        mv -f "$tar.part" "$tar"
        find "$(dirname "$tar")" -maxdepth 1 -name "$(basename "${tar%-*}")-*.tar" ! -name "$(basename "$tar")" -delete
        say "saved $image to $tar in $(( $(date +%s) - start )) s (a fresh engine loads it)."
    else
        rm -f "$tar.part"
        say "warning: docker save to $tar failed; a fresh engine will make $image again"
    fi
}

# cache_load TAR: docker load it and print what it loaded ("Loaded image: …" lines). A tar that does not
# load is removed, and the status is non-zero.
cache_load() {
    local tar="$1" out
    if out="$(docker load -q -i "$tar" 2>&1)"; then
        printf '%s\n' "$out"
        return 0
    fi
    say "docker load of $tar failed ($out); removing it" >&2
    rm -f "$tar"
    return 1
}
