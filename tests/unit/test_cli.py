"""The command line: exit codes, messages with their fix, and nothing started on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlgate import cli
from mlgate.errors import ConfigError
from mlgate.pipeline import train, validate
from tests.conftest import push_data


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlgate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in cli.COMMANDS:
        assert name in out
    assert "4 data invalid" in out


def test_unknown_command_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "mlgate", "trian"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'trian'" in done.stderr


def test_validate_passes_on_the_shipped_data(project: Path, clean_env, tmp_path: Path) -> None:
    env = {
        **clean_env,
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }
    assert validate.main(["--params", str(project / "params.yaml")], env=env) == 0
    assert "valid=true" in (tmp_path / "out").read_text()
    assert "Data valid" in (tmp_path / "summary").read_text()


def test_bad_data_exits_4_with_every_violation(project, breast_cancer, clean_env) -> None:
    bad = breast_cancer.copy()
    bad.loc[0, "mean_radius"] = -5
    bad["diagnosis"] = bad["diagnosis"].astype(float)
    bad.loc[1, "diagnosis"] = None
    push_data(project, bad)
    done = run_cli("train", "--tracking-uri", "http://127.0.0.1:9", cwd=project, env=clean_env)
    assert done.returncode == 4, done.stderr
    assert "mean_radius: greater_than_or_equal_to(0) failed 1x" in done.stdout
    assert "diagnosis: not_nullable failed 1x" in done.stdout
    assert "::error title=data validation::mean_radius" in done.stdout
    assert "nothing was trained" in done.stderr and "fix:" in done.stderr
    # validation stopped it before MLflow: the unreachable tracking URI was never tried
    assert "MLflow" not in done.stderr


def test_unknown_params_key_exits_2(project: Path, clean_env) -> None:
    done = run_cli("train", "--set", "train.num_boost_rounds=5", cwd=project, env=clean_env)
    assert done.returncode == 2
    assert (
        "unknown key 'train.num_boost_rounds' in --set train.num_boost_rounds "
        '(did you mean "num_boost_round"?)' in done.stderr
    )
    assert not (project / "data").exists(), "nothing was pulled"


def test_unknown_xgboost_parameter_is_refused_before_any_run(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        train.check_xgboost_params({"objective": "binary:logistic", "max_dept": 3})
    assert "'max_dept' (did you mean \"max_depth\"?)" in str(info.value)
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match="rejected by XGBoost"):
        train.check_xgboost_params({"max_depth": "abc"})
    with pytest.raises(ConfigError, match="must be binary:logistic"):
        train.check_xgboost_params({"objective": "reg:squarederror"})
    train.check_xgboost_params({"objective": "binary:logistic", "max_depth": 3})
