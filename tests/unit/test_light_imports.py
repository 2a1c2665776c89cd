"""Stages that only move registry pointers do not pay for the training libraries at import
(issue 18: `mlgate promote` took 11 s on 2 cores, most of it importing scikit-learn, pandas and
XGBoost through mlgate.evaluate)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "pandas", "sklearn", "scipy", "xgboost", "dvc", "evidently", "matplotlib")


@pytest.mark.parametrize(
    "module", ["mlgate.promote", "mlgate.registry", "mlgate.decision", "mlgate.threshold"]
)
def test_pointer_stages_import_no_training_library(module: str) -> None:
    probe = (
        f"import sys, json, {module}\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
