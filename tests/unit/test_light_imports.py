"""Each step imports only what it uses (issue 18: `mlgate promote` took 11 s on 2 cores, most of
it importing scikit-learn, pandas and XGBoost through mlgate.evaluate; evidently alone cost
10 s of every evaluation). A regression fails here, not in a benchmark.

Each probe is a fresh interpreter that imports a module and lists which heavy libraries ended up
in sys.modules. What a step imports while it runs (mlflow, xgboost, dvc: after argument parsing,
only on the paths that use them) is checked on real runs by tests/integration/test_bench.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TRAINING = ("numpy", "pandas", "sklearn", "scipy", "xgboost", "dvc", "pandera")
REPORTS = ("evidently", "matplotlib")
TRACKING = ("mlflow", "sqlalchemy")
ALL = TRAINING + REPORTS + TRACKING


def loaded(statement: str) -> list[str]:
    probe = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {ALL!r} if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "module",
    [
        "mlgate.pipeline.promote",
        "mlgate.registry.moves",
        "mlgate.gate.decision",
        "mlgate.gate.threshold",
    ],
)
def test_pointer_stages_import_no_training_library(module: str) -> None:
    assert loaded(f"import {module}") == []


def test_the_command_line_imports_only_the_chosen_stage() -> None:
    """`mlgate --help` and the dispatch load no stage: each stage module is imported only when
    its command runs."""
    assert loaded("import mlgate.cli, mlgate.github.outputs, mlgate.settings, mlgate.errors") == []
    assert (
        loaded(
            "from mlgate import cli\n"
            "try:\n    cli.main(['promote', '--help'])\nexcept SystemExit:\n    pass"
        )
        == []
    )


# What each stage module may import when it is imported (before it runs): nothing from the
# reports, no scikit-learn or scipy (the gate's statistics are numpy), no tracking client.
ALLOWED = {
    "mlgate.pipeline.evaluate": {"numpy", "pandas"},
    "mlgate.pipeline.train": {"numpy", "pandas"},
    "mlgate.pipeline.validate": {"numpy", "pandas"},
    "mlgate.gate.metrics": {"numpy"},
    "mlgate.gate.significance": {"numpy"},
    "mlgate.pipeline.split": {"numpy", "pandas"},
    "mlgate.pipeline.lineage": {"numpy", "pandas"},
    "mlgate.serving.bundle": {"numpy"},
    "mlgate.registry.audit": set(),
    "mlgate.registry.doctor": set(),
}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_stage_modules_defer_heavy_imports(module: str) -> None:
    extra = set(loaded(f"import {module}")) - ALLOWED[module]
    assert not extra, f"importing {module} loads {sorted(extra)}"


def test_the_gates_statistics_need_neither_sklearn_nor_scipy() -> None:
    """Metrics and DeLong's test computed on real arrays load neither library."""
    assert set(
        loaded(
            "import numpy as np\n"
            "from mlgate.gate.metrics import classification_metrics\n"
            "from mlgate.gate.significance import delong\n"
            "rng = np.random.default_rng(0)\n"
            "y = rng.integers(0, 2, 200)\n"
            "a, b = rng.random(200), rng.random(200)\n"
            "classification_metrics(y, a, 0.5)\n"
            "delong(y, a, b)"
        )
    ) == {"numpy"}
