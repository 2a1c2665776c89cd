#!/usr/bin/env bash
# Start a local Docker engine and container registry the way mlgate's tests do, for
# `make demo APPROVE=1` and `mlgate deploy` on a machine without Docker Desktop or a registry.
#
#   scripts/start-docker.sh            # engine (if none answers) + registry on 127.0.0.1:5000
#   REGISTRY_ADDR=127.0.0.1:5001 scripts/start-docker.sh
#   STATE_DIR=/tmp/engine scripts/start-docker.sh --no-registry   # the engine alone
#   STATE_DIR=/tmp/engine scripts/start-docker.sh --own-engine --no-registry
#       # an engine of STATE_DIR's own, even if another runs: DOCKER_HOST=unix://STATE_DIR/docker.sock
#
# Engine: the running one when `docker info` answers; otherwise dockerd with no bridge network
# and no iptables, on the overlay2 storage driver, or vfs where the kernel cannot mount overlayfs
# (some containers and VMs: vfs copies every layer whole, so builds are far slower). Containers
# use host networking (the demo does). Needs root and Debian's docker.io. The tests start their
# engine with this script too (`docker_engine`, tests/conftest.py: --own-engine --no-registry,
# STATE_DIR under the session's tmp), so the storage-driver fallback is written once, here.
# With --own-engine the engine is STATE_DIR's alone: its socket, pid file, data and exec roots
# (and its containerd's) are under STATE_DIR, so two of them (two test sessions on one machine)
# never share a socket, and stopping one never stops the other or an engine already running.
# DATA_ROOT (default STATE_DIR/data) puts its images elsewhere: on a filesystem where overlay2
# works (not on an overlayfs), or builds fall back to vfs.
# Registry: the CNCF distribution registry (Debian's docker-registry) on REGISTRY_ADDR with its
# data in STATE_DIR/registry; with REGISTRY_USERNAME and REGISTRY_PASSWORD set it requires them
# (htpasswd, bcrypt), as GHCR requires a token. Logs and pid files go to STATE_DIR
# (default .cache/docker). Stop them with: kill "$(cat STATE_DIR/registry.pid)" (and
# dockerd.pid when this script started the engine).
set -euo pipefail

registry=true
own=false
for arg in "$@"; do
    case $arg in
        --no-registry) registry=false ;;
        --own-engine) own=true ;;
        *)
            echo "error: unknown argument '$arg'; the options are --no-registry and --own-engine" >&2
            exit 2
            ;;
    esac
done

STATE_DIR=${STATE_DIR:-.cache/docker}
REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
PYTHON=${PYTHON:-python3}
mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)

wait_for() { # seconds, description, command...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$seconds"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "error: $what did not start within $seconds s; see $STATE_DIR" >&2
    return 1
}

engine=()
if $own; then
    # unix sockets are limited to 107 bytes: say so rather than fail inside dockerd
    sock=$STATE_DIR/docker.sock
    if ((${#sock} > 100)); then
        echo "error: STATE_DIR is too long for a socket path ($sock); fix: use a shorter STATE_DIR" >&2
        exit 2
    fi
    export DOCKER_HOST=unix://$sock
    engine=(-H "$DOCKER_HOST" --pidfile "$STATE_DIR/docker.pid"
        --data-root "${DATA_ROOT:-$STATE_DIR/data}" --exec-root "$STATE_DIR/exec")
fi

if docker info >/dev/null 2>&1; then
    echo "Docker engine: already running${DOCKER_HOST:+ at $DOCKER_HOST}"
else
    command -v dockerd >/dev/null || {
        echo "error: no dockerd; install Debian's docker.io (apt-get install docker.io)" >&2
        exit 1
    }
    for driver in overlay2 vfs; do
        nohup dockerd "${engine[@]}" --iptables=false --ip6tables=false --bridge=none \
            --storage-driver="$driver" >>"$STATE_DIR/dockerd.log" 2>&1 &
        echo $! >"$STATE_DIR/dockerd.pid"
        # an unsupported driver ends dockerd within seconds; a supported one answers
        for _ in $(seq 60); do
            docker info >/dev/null 2>&1 && break 2
            kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null || continue 2
            sleep 1
        done
        echo "error: the Docker engine did not start within 60 s; see $STATE_DIR" >&2
        exit 1
    done
    docker info >/dev/null 2>&1 || {
        echo "error: dockerd started on neither overlay2 nor vfs; see $STATE_DIR/dockerd.log" >&2
        exit 1
    }
    echo "Docker engine: started on $driver (pid $(cat "$STATE_DIR/dockerd.pid"), log $STATE_DIR/dockerd.log)"
fi
if $own; then echo "DOCKER_HOST=$DOCKER_HOST"; fi
$registry || exit 0
mkdir -p "$STATE_DIR/registry"

if curl -s -o /dev/null "http://$REGISTRY_ADDR/v2/"; then
    echo "registry: something already answers at $REGISTRY_ADDR"
    exit 0
fi
command -v docker-registry >/dev/null || {
    echo "error: no docker-registry; install Debian's docker-registry" >&2
    exit 1
}
config=$STATE_DIR/registry.yml
{
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$STATE_DIR/registry"
    printf '  delete:\n    enabled: true\nhttp:\n  addr: %s\n' "$REGISTRY_ADDR"
} >"$config"
if [[ -n ${REGISTRY_USERNAME:-} && -n ${REGISTRY_PASSWORD:-} ]]; then
    REGISTRY_PASSWORD=$REGISTRY_PASSWORD "$PYTHON" -c '
import os, sys, bcrypt
password = os.environ["REGISTRY_PASSWORD"].encode()
print(sys.argv[1] + ":" + bcrypt.hashpw(password, bcrypt.gensalt()).decode())
' "$REGISTRY_USERNAME" >"$STATE_DIR/htpasswd"
    printf 'auth:\n  htpasswd:\n    realm: mlgate\n    path: %s\n' "$STATE_DIR/htpasswd" >>"$config"
fi
nohup docker-registry serve "$config" >"$STATE_DIR/registry.log" 2>&1 &
echo $! >"$STATE_DIR/registry.pid"
wait_for 30 "the registry" curl -s -o /dev/null "http://$REGISTRY_ADDR/v2/"
echo "registry: started at $REGISTRY_ADDR (pid $(cat "$STATE_DIR/registry.pid"))"
echo "next: MLGATE_DEPLOY_IMAGE=$REGISTRY_ADDR/mlgate/MODEL (the demo's default is localhost:5000)"
