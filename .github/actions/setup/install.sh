#!/usr/bin/env bash
# Install uv (pinned by hash), then mlgate's lock into a virtual environment outside the
# workspace, so the caller's git tree stays clean, and put it on PATH.
set -euo pipefail
src=${MLGATE_SOURCE:?}
venv="${RUNNER_TEMP:?}/mlgate-venv"
python -m pip install --quiet --disable-pip-version-check --require-hashes \
  --target "$RUNNER_TEMP/uv-bin" -r "$GITHUB_ACTION_PATH/uv-requirements.txt"
uv="$RUNNER_TEMP/uv-bin/bin/uv"
"$uv" venv --quiet --allow-existing --python "$(command -v python)" "$venv"
"$uv" pip sync --quiet --python "$venv/bin/python" --require-hashes "$src/requirements.lock"
"$uv" pip install --quiet --python "$venv/bin/python" --no-deps "$src"
echo "$venv/bin" >> "$GITHUB_PATH"
echo "python=$venv/bin/python" >> "$GITHUB_OUTPUT"
"$venv/bin/mlgate" --version
