"""`mlgate monitor`, the monitor action's command: its usage errors, before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlgate.pipeline import monitor


def test_a_backtest_without_labelled_data_is_refused_with_its_fix(clean_env, capsys) -> None:
    # No server is reachable at this URI: the refusal comes before any connection.
    args = ["--check", "backtest", "--data", " ", "--tracking-uri", "http://127.0.0.1:9"]
    assert monitor.main(args, env=clean_env) == 2
    err = capsys.readouterr().err
    assert "monitor --check backtest needs the labelled data" in err and "pass --data" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "drfit"], "invalid choice: 'drfit'"),
        (["--version", "v3"], "'v3' is not a model version"),
        (["--version", "../1"], "'../1' is not a model version"),
    ],
)
def test_bad_arguments_are_usage_errors(args, message) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", "monitor", *args], capture_output=True, text=True
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.parametrize(("value", "expected"), [("", None), ("  ", None), ("007", "7")])
def test_an_empty_version_is_the_production_one(value, expected) -> None:
    assert monitor.optional_version(value) == expected


def test_the_action_passes_empty_inputs_and_dashes_through(clean_env, capsys) -> None:
    """The action passes `--data=VALUE --version=VALUE` as they come: empty is 'not given',
    and a path that starts with a dash is still a value, not an option."""
    args = monitor.parser().parse_args(["--check=backtest", "--data=-late.csv", "--version="])
    assert (args.check, args.data, args.version) == ("backtest", "-late.csv", None)
