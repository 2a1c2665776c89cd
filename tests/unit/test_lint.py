"""Lint and types run with the tests (issue 22): `ruff check`, `ruff format --check` and mypy,
configured in pyproject.toml. Each failure prints the tool's own report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PATHS = ["src", "tests", "bench"]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` (it is in the test extras)")
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_check_is_clean():
    done = _run(_tool("ruff"), "check", "--no-cache", *PATHS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_clean():
    done = _run(_tool("ruff"), "format", "--check", "--no-cache", *PATHS)
    assert done.returncode == 0, "run `ruff format`:\n" + done.stdout + done.stderr


def test_mypy_is_clean():
    # the cache makes a re-run take seconds; it lives in .mypy_cache (git-ignored)
    done = _run(_tool("mypy"), "--config-file", "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_would_catch_a_violation(tmp_path):
    """The configuration is in force: a file with an unused import and os.system fails."""
    bad = tmp_path / "bad.py"
    bad.write_text('import os\nimport sys\n\nos.system("ls " + sys.argv[1])\n')
    done = _run(_tool("ruff"), "check", "--no-cache", "--config", "pyproject.toml", str(bad))
    assert done.returncode == 1
    assert "S605" in done.stdout  # bandit: a shell command built from input
