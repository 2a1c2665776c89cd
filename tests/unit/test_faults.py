"""The fault point settings (mlgate.faults) as a table, and the pause point's release. The
processes killed, stopped and paused at these points are in tests/integration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlgate import faults
from mlgate.errors import ConfigError
from mlgate.settings import load_settings

CASES = [
    ("move.after_alias", ("kill", "move.after_alias", None)),
    ("stop:move.after_alias", ("stop", "move.after_alias", None)),
    ("pause:train.in_run:/tmp/go", ("pause", "train.in_run", "/tmp/go")),
    ("pause:lock.after_ticket:rel/a:b", ("pause", "lock.after_ticket", "rel/a:b")),
    ("train.in_run", ("kill", "train.in_run", None)),
    ("move.nowhere", None),
    ("stop:move.nowhere", None),
    ("pause:train.in_run", None),  # no release file: it would never be released
    ("pause:train.in_run:", None),
    ("pause:nowhere:/tmp/go", None),
    ("kill:move.after_alias", None),
    ("", None),
]


@pytest.mark.parametrize(("setting", "parsed"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_a_fault_point_setting_is_parsed_or_refused(setting: str, parsed) -> None:
    assert faults.parse(setting) == parsed


def test_every_point_is_named_once() -> None:
    points = faults.FAULT_POINTS + faults.TRAIN_POINTS
    assert len(set(points)) == len(points)


def test_a_bad_fault_point_is_refused_with_the_points_it_could_be(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides=["tracking.fault_point=pause:train.in_run"], cwd=tmp_path)
    assert "is not a fault point" in str(caught.value)
    assert "train.in_run" in caught.value.fix and "pause:POINT:FILE" in caught.value.fix
    settings = load_settings(
        env={"MLGATE_TRACKING_FAULT_POINT": f"pause:train.in_run:{tmp_path / 'go'}"}, cwd=tmp_path
    )
    assert settings.tracking.fault_point == f"pause:train.in_run:{tmp_path / 'go'}"


PAUSED = """
import sys
from mlgate import faults
faults.reach("move.after_alias", sys.argv[1])  # another point: no effect
faults.reach("train.in_run", sys.argv[1])
print("went on", flush=True)
"""


def test_a_paused_process_stays_alive_until_released(tmp_path: Path) -> None:
    """Paused at its point the process lives on until the release file exists, then goes on
    from that point (that its other threads run meanwhile is proven by the heartbeat test in
    tests/integration/test_faults.py)."""
    release = tmp_path / "go"
    job = subprocess.Popen(
        [sys.executable, "-c", PAUSED, f"pause:train.in_run:{release}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert job.stderr is not None
        line = job.stderr.readline()
        assert line == f"fault injection: paused at train.in_run until {release} exists\n"
        assert job.poll() is None
    finally:
        release.touch()
    out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    assert out == "went on\n"
    assert err == "fault injection: released at train.in_run\n"
