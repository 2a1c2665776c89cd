"""Evaluations never share outputs (issue 16, item 4): six `mlgate evaluate` processes of six
different candidates, in one project folder at the same time, each log their own decision to
their own run and publish it in their own folder."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgate.pipeline import train
from tests.conftest import BIN, make_project, stop
from tests.integration.test_faults import Server
from tests.integration.test_gate import WEAK
from tests.integration.test_train import client, train_args, unique

CANDIDATES = 6


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> Iterator[str]:
    """A server of this module's own, given the time a loaded machine needs to start it."""
    server = Server(tmp_path_factory.mktemp("mlflow-evaluations"))
    server.start()
    yield server.uri
    if server.process is not None:
        stop(server.process)


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
    candidates, mlflow_uri: str, clean_env: dict, tmp_path: Path
) -> None:
    project, model, expected = candidates
    mlflow_server = mlflow_uri
    jobs = {
        version: subprocess.Popen(
            [str(BIN / "mlgate"), "evaluate"]
            + train_args(project, mlflow_server, model, "--set", "gate.max_latency_ms=null")
            + ["--candidate-version", version, "--fail-on-gate", "false"],
            cwd=project,
            env=clean_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for version in expected
    }
    outputs = {version: job.communicate(timeout=1800)[0] for version, job in jobs.items()}
    assert all(job.returncode == 0 for job in jobs.values()), outputs

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
