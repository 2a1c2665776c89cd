"""Faults injected into real parts mid-way; after each, a re-run converges and nothing is lost.

This module kills a training job and its MLflow server while the run is open, so it starts a
server of its own. The other faults of the catalogue (SECURITY.md) live beside the stage they
hit: the registry down or refusing credentials during a push (test_deploy), the S3 remote
unreachable during `dvc pull` (test_s3_remote), an unloadable champion (test_gate).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.conftest import BIN, free_port, make_project, start, stop
from tests.integration.test_train import train_args, unique


class Server:
    """An MLflow server on a fixed port and store, so it can be killed and brought back."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--backend-store-uri", f"sqlite:///{self.root}/mlflow.db"]
            + ["--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            f"{self.uri}/health",
            self.root / "server.log",
        )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("mlflow-faults"))
    server.start()
    yield server
    if server.process is not None:
        stop(server.process)


def start_training(project: Path, server: Server, model: str, env: dict) -> subprocess.Popen:
    args = train_args(project, server.uri, model, "--set", "tracking.retries=1")
    return subprocess.Popen(
        [str(BIN / "mlgate"), "train", *args, "--set", "tracking.backoff=0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_open_run(server: Server, model: str, job: subprocess.Popen) -> str:
    client = mlflow.MlflowClient(server.uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and job.poll() is None:
        experiment = client.get_experiment_by_name(model)
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
            if runs:
                return runs[0].info.run_id
        time.sleep(0.05)
    pytest.fail(f"no run opened: {job.communicate()[0] if job.poll() is not None else ''}")


def runs_of(server: Server, model: str) -> dict[str, str]:
    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name(model)
    return {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}


def versions_of(server: Server, model: str) -> list[tuple[str, str]]:
    client = mlflow.MlflowClient(server.uri)
    return [(v.version, v.run_id) for v in client.search_model_versions(f"name='{model}'")]


@pytest.mark.parametrize("victim", ["job", "server"])
def test_killed_mid_run_then_rerun_converges(
    victim: str, server: Server, tmp_path: Path, clean_env: dict
) -> None:
    """SIGKILL (no handler runs) of the training job, or of the MLflow server under it, while
    the run is open. The run is left RUNNING; the re-run of the job ends it as KILLED and
    registers exactly one version, from its own run."""
    project = make_project(tmp_path / "project")
    model = unique(f"killed-{victim}")
    job = start_training(project, server, model, clean_env)
    ghost = wait_for_open_run(server, model, job)
    if victim == "job":
        job.kill()
        job.wait()
    else:
        server.kill()
        output = job.communicate(timeout=120)[0]
        assert job.returncode == 5, output  # TrackingError, bounded retries
        assert "MLflow failed while" in output and "fix:" in output
        assert "Traceback" not in output
        server.start()
    assert runs_of(server, model)[ghost] == "RUNNING"  # what the fault leaves

    rerun = start_training(project, server, model, clean_env)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    assert f"ended run {ghost}, left RUNNING by an earlier attempt" in output
    runs = runs_of(server, model)
    assert runs[ghost] == "KILLED"
    assert sorted(runs.values()) == ["FINISHED", "KILLED"]
    client = mlflow.MlflowClient(server.uri)
    assert client.get_run(ghost).data.tags["mlgate.abandoned"]
    (finished,) = [run for run, status in runs.items() if status == "FINISHED"]
    assert versions_of(server, model) == [("1", finished)]
