"""The lock against the package index: regenerated, it must equal what is committed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def test_lock_is_not_stale(tmp_path: Path) -> None:
    """Regenerate both locks from pyproject.toml (resolution frozen by --exclude-newer in the
    Makefile) and compare: a dependency edited without `make lock` fails here."""
    done = subprocess.run(
        ["make", "-s", "lock", f"UV={BIN / 'uv'}", f"LOCK_OUT={tmp_path}/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    locks = {
        "requirements.lock": REPO / "requirements.lock",
        "requirements-dev.lock": REPO / "requirements-dev.lock",
        "uv-requirements.txt": REPO / ".github/actions/setup/uv-requirements.txt",
    }
    for name, committed in locks.items():
        assert (tmp_path / name).read_text() == committed.read_text(), (
            f"{name} is stale: run `make lock`"
        )
