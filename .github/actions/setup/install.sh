#!/usr/bin/env bash
# mlgate's lock and mlgate itself in a virtual environment outside the workspace, so the
# caller's git tree stays clean, put on PATH.
# CACHE_HIT=true: actions/cache restored an environment built from this very toolchain, lock
# and source (the key names them all); it is used as it is once `mlgate --version` runs in it.
# Otherwise (no cache, or an older environment of the same toolchain restored by a
# restore-key): uv (pinned by hash) syncs the environment to the lock, then installs mlgate.
# The environment is relocatable: a runner may restore it under another temp directory.
set -euo pipefail
src=${MLGATE_SOURCE:?}
venv=${MLGATE_VENV:-${RUNNER_TEMP:?}/mlgate-venv}
restored=false
if [ "${CACHE_HIT:-false}" = true ]; then
  if "$venv/bin/mlgate" --version; then
    restored=true
    echo "mlgate setup: the environment restored from the cache runs"
  else
    echo "::warning title=mlgate setup::the cached environment does not run; building it again"
    rm -rf "$venv"
  fi
fi
if [ "$restored" = false ]; then
  python -m pip install --quiet --disable-pip-version-check --require-hashes \
    --target "$RUNNER_TEMP/uv-bin" -r "$GITHUB_ACTION_PATH/uv-requirements.txt"
  uv="$RUNNER_TEMP/uv-bin/bin/uv"
  "$uv" venv --quiet --allow-existing --relocatable --python "$(command -v python)" "$venv"
  "$uv" pip sync --quiet --python "$venv/bin/python" --require-hashes "$src/requirements.lock"
  "$uv" pip install --quiet --python "$venv/bin/python" --no-deps "$src"
  "$venv/bin/mlgate" --version
  # uv writes no bytecode and PYTHONDONTWRITEBYTECODE may be set: without it every step
  # compiles what it imports (about 25 CPU s for mlflow, pandas, XGBoost, DVC). Importing
  # once what the steps import writes it into the environment that is cached.
  env -u PYTHONDONTWRITEBYTECODE -u PYTHONPYCACHEPREFIX MPLBACKEND=Agg "$venv/bin/python" -c \
    "import importlib, mlgate.cli as cli; [importlib.import_module(m.split(':')[0]) for m, _ in cli.COMMANDS.values()]; import mlflow, mlflow.xgboost, xgboost, sklearn.metrics, dvc.api, dvc.repo, pandera.pandas, evidently.presets, matplotlib.pyplot, docker"
fi
echo "$venv/bin" >> "$GITHUB_PATH"
echo "python=$venv/bin/python" >> "$GITHUB_OUTPUT"
