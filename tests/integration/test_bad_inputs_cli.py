"""Issue 16's bad inputs, through the real `mlgate train` command line of a real project: a
clear error with its fix and exit code 2, no traceback, and nothing made (no run, no store).
The checks themselves are unit-tested in tests/unit/test_bad_inputs.py, and a bad tracking URI
on the command line there too (settings refuse it before any data is read); these two are found
only once the stage runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, make_project


def train(project: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlgate"), "train", "--params", str(project / "params.yaml"), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=project,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "data.id_column=mean_radiu"], "data.id_column 'mean_radiu' is not a column"),
        (["--tracking-uri", "sqlite:///no/such/folder/m.db"], "does not exist"),
    ],
)
def test_a_bad_input_to_train_is_exit_2_with_its_fix_and_no_traceback(
    extra: list[str], message: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "project")
    if extra[0] == "--set":  # a store that would be made: the error must come first
        extra = [*extra, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    elif extra[1].startswith("sqlite:///"):
        extra = [extra[0], f"sqlite:///{tmp_path}/no/such/folder/m.db"]
    done = train(project, clean_env, *extra)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert message in output and "Traceback" not in output, output
    assert "error: " in output and "\n  fix: " in output, output
    assert len(output) < 4_000
    assert not (tmp_path / "no").exists() and not (tmp_path / "m.db").exists()
