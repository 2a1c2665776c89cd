#!/usr/bin/env bash
# mlgate's source is the repository copy this action was loaded from (three levels up),
# whether it was referenced as $/, OWNER/REPO/...@SHA or ./ from mlgate itself.
# The cache key of the environment names everything it is built from: the toolchain (the
# interpreter and uv's pin), the lock, and mlgate's own source (pyproject.toml and src/).
set -euo pipefail
source=$(cd "$GITHUB_ACTION_PATH/../../.." && pwd)
toolchain_hash=$(
  {
    python -c 'import sys; print(sys.executable, sys.version)'
    cat "$GITHUB_ACTION_PATH/uv-requirements.txt"
  } | sha256sum | cut -c1-16
)
lock_hash=$(sha256sum "$source/requirements.lock" | cut -c1-32)
source_hash=$(
  cd "$source" &&
    find pyproject.toml src -type f ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-32
)
{
  echo "source=$source"
  echo "venv=$RUNNER_TEMP/mlgate-venv"
  echo "toolchain-hash=$toolchain_hash"
  echo "lock-hash=$lock_hash"
  echo "source-hash=$source_hash"
  echo "uv-cache=${UV_CACHE_DIR:-$RUNNER_TEMP/uv-cache}"
} >> "$GITHUB_OUTPUT"
