"""Every declared dependency imports in the locked environment (a resolver cannot see that)."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "mlflow",
    "mlflow.xgboost",
    "dvc.repo",
    "dvc.api",
    "dvc_s3",
    "xgboost",
    "sklearn",
    "pandera.pandas",
    "evidently",
    "evidently.presets",
    "yaml",
    "requests",
    "docker",
]


@pytest.mark.parametrize("module", MODULES)
def test_imports(module: str) -> None:
    importlib.import_module(module)
