#!/usr/bin/env bash
# mlgate's source is the repository copy this action was loaded from (three levels up),
# whether it was referenced as $/, OWNER/REPO/...@SHA or ./ from mlgate itself.
set -euo pipefail
source=$(cd "$GITHUB_ACTION_PATH/../../.." && pwd)
lock_hash=$(sha256sum "$source/requirements.lock" | cut -c1-32)
{
  echo "source=$source"
  echo "lock-hash=$lock_hash"
  echo "uv-cache=${UV_CACHE_DIR:-$RUNNER_TEMP/uv-cache}"
} >> "$GITHUB_OUTPUT"
