"""Evaluations never share outputs (issue 16, item 4): six `mlgate evaluate` processes of six
different candidates, in one project folder at the same time, each log their own decision to
their own run and publish it in their own folder.

The six are real processes running side by side, forked from one interpreter that did their
imports (the session's `mlgate_forks`, tests/forkserver.py): mlflow, mlgate, evidently,
matplotlib and scikit-learn cost an `mlgate evaluate` about 30 CPU seconds of imports
(measured), paid once a session instead of six times here.
The session's MLflow server is shared: nothing here damages it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgate.pipeline import train
from tests.conftest import make_project
from tests.forkserver import MLGATE, ForkServer
from tests.integration.test_gate import WEAK
from tests.integration.test_train import client, train_args, unique

CANDIDATES = 6


@pytest.fixture(scope="module")
def mlflow_uri(mlflow_server: str) -> str:
    """The session's server: six evaluations side by side on its one worker, as before on a
    server of the module's own (which cost a server start)."""
    return mlflow_server


@pytest.fixture
def candidates(tmp_path: Path, mlflow_uri: str, clean_env: dict) -> tuple[Path, str, dict]:
    """A strong champion in staging and six candidates: even ones trained like it (they
    pass), odd ones weak stumps (they fail non-inferiority). Returns project, model and
    {version: expected verdict}."""
    project, mlflow_server = make_project(tmp_path / "project"), mlflow_uri
    model = unique("evaluations")
    c = client(mlflow_server)

    def fit(*extra: str) -> str:
        assert train.main(train_args(project, mlflow_server, model, *extra), env=clean_env) == 0
        return str(max(int(v.version) for v in c.search_model_versions(f"name='{model}'")))

    c.set_registered_model_alias(model, "staging", fit())
    expected = {}
    for i in range(CANDIDATES):
        expected[fit(*WEAK) if i % 2 else fit()] = "fail" if i % 2 else "pass"
    return project, model, expected


@pytest.mark.timeout(2700)  # seven trainings, then six evaluations sharing two cores
def test_six_concurrent_evaluations_log_their_own_decisions(
    candidates, mlflow_uri: str, clean_env: dict, tmp_path: Path, mlgate_forks: ForkServer
) -> None:
    project, model, expected = candidates
    mlflow_server = mlflow_uri
    # `mlgate evaluate ...` run from the project folder, as the console script runs it.
    in_project = f"import os\nos.chdir({str(project)!r})\n{MLGATE}"
    argv = {
        version: ["mlgate", "evaluate"]
        + train_args(project, mlflow_server, model, "--set", "gate.max_latency_ms=null")
        + ["--candidate-version", version, "--fail-on-gate", "false"]
        for version in expected
    }
    running = mlgate_forks.start_all(
        [(in_project, argv[version], clean_env) for version in expected]
    )
    assert len(set(running.pids)) == CANDIDATES  # six processes of their own, side by side
    done = dict(zip(expected, running.wait(), strict=True))
    assert all(job.returncode == 0 for job in done.values()), {
        version: job.stdout + job.stderr for version, job in done.items()
    }

    c = client(mlflow_server)
    for version, verdict in expected.items():
        registered = c.get_model_version(model, version)
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        logged = json.loads(
            Path(
                c.download_artifacts(registered.run_id, "decision/decision.json", str(folder))
            ).read_text()
        )
        assert logged["candidate"]["version"] == version
        assert logged["candidate"]["run_id"] == registered.run_id
        assert logged["verdict"] == registered.tags["mlgate.decision.verdict"] == verdict
        published = project / "reports" / model / f"v{version}"
        assert json.loads((published / "decision.json").read_text()) == logged
        assert {p.name for p in published.iterdir()} == {
            "decision.json",
            "curves.png",
            "evidently-quality.html",
            "evidently-drift.html",
        }
    assert not (project / "reports" / "decision.json").exists()
