#!/usr/bin/env bash
# Build the serving image's base (python3 on Debian bookworm) without pulling anything from a
# container registry: debootstrap from the machine's Debian mirror, then `docker import`. For
# machines where python:3.11-slim-bookworm cannot be pulled (offline, or a TLS-intercepting
# proxy the engine does not trust). This is what the tests' base_image fixture does.
#
#   scripts/build-base-image.sh [IMAGE]    # default local/python:3.11-bookworm
#   export MLGATE_DEPLOY_BASE_IMAGE=local/python:3.11-bookworm
#
# Needs root, debootstrap and a Docker engine (scripts/start-docker.sh). MIRROR defaults to the
# first `URIs:` line of /etc/apt/sources.list.d/debian.sources. About a minute.
set -euo pipefail

IMAGE=${1:-local/python:3.11-bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE: already on the engine"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "error: no debootstrap; install it (apt-get install debootstrap)" >&2
    exit 1
}
if [[ -z ${MIRROR:-} ]]; then
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
[[ -n ${MIRROR:-} ]] || {
    echo "error: no Debian mirror found; set MIRROR to the URL of a Debian mirror" >&2
    exit 1
}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
    echo "error: debootstrap failed; its log: $root.log" >&2
    exit 1
}
rm -f "$root.log"
# What python:3.11-slim also leaves out (every layer is copied whole on the vfs driver).
for leftover in var/cache/apt/archives var/lib/apt/lists usr/share/doc usr/share/man \
    usr/share/info usr/share/locale; do
    find "$root/$leftover" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
done
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "$IMAGE: built; export MLGATE_DEPLOY_BASE_IMAGE=$IMAGE"
