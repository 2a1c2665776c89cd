#!/usr/bin/env bash
# Download the Linux wheels of requirements-serve.lock (hashes checked) for an offline image
# build, where pip inside `docker build` cannot reach the index (no network, or a TLS proxy the
# base image does not trust). Prints the folder: point deploy.wheels_dir at it.
#
#   export MLGATE_DEPLOY_WHEELS_DIR=$(scripts/download-wheels.sh)
#
# CACHE (default .cache) gets one folder per lock digest, so a changed lock downloads again;
# a finished download is reused. Runs mlgate's own deploy.download_wheels with PYTHON (default
# .venv/bin/python, where `make install` put mlgate).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$here/.venv/bin/python}
CACHE=${CACHE:-$here/.cache}
LOCK=${LOCK:-$here/requirements-serve.lock}
[[ -x $PYTHON ]] || {
    echo "error: $PYTHON is not there; run \`make install\` or set PYTHON" >&2
    exit 1
}
mkdir -p "$CACHE"
"$PYTHON" -c '
import sys
from pathlib import Path
from mlgate.pipeline.deploy import download_wheels
print(download_wheels(Path(sys.argv[1]), Path(sys.argv[2]), "serve"))
' "$LOCK" "$CACHE"
