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

from mlgate import tracking
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
            seconds=300,  # a loaded test machine; this module restarts its server mid-test
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


def start_training(
    project: Path, server: Server, model: str, env: dict, lease: float = 3, *extra: str
) -> subprocess.Popen:
    """`mlgate train` with a short run lease (default 3 s), so a dead job's run expires soon."""
    args = train_args(project, server.uri, model, "--set", "tracking.retries=1", *extra)
    args += ["--set", f"tracking.run_lease={lease}"]
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


def wait_until_lease_expired(server: Server, run_id: str) -> None:
    """Sleep until the run's lease time (read from the run, renewed by no one) has passed."""
    tags = mlflow.MlflowClient(server.uri).get_run(run_id).data.tags
    expires = float(tags[tracking.RUN_LEASE])
    while time.time() <= expires:
        time.sleep(max(0.05, expires - time.time()))


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
    wait_until_lease_expired(server, ghost)  # nobody renews it: its job is dead

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


def test_concurrent_trainings_of_one_commit_and_data_never_end_each_other(
    server: Server, tmp_path: Path, clean_env: dict
) -> None:
    """Two live `mlgate train` jobs at the same commit and data version (same run name), their
    runs open at the same time: the second job's look for abandoned runs finds the first's run
    RUNNING with a live lease and leaves it alone. Job A is held stopped (SIGSTOP, well inside
    its 60 s lease) while B starts, so the overlap is certain, not a matter of timing."""
    project = make_project(tmp_path / "project")
    model = unique("concurrent")
    first = start_training(project, server, model, clean_env, lease=60)
    first_run = wait_for_open_run(server, model, first)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = start_training(project, server, model, clean_env, lease=60)
        client = mlflow.MlflowClient(server.uri)
        experiment = client.get_experiment_by_name(model).experiment_id
        deadline = time.monotonic() + 300
        while second.poll() is None and time.monotonic() < deadline:
            if set(runs_of(server, model)) - {first_run}:
                break  # B opened its run: its search for abandoned runs is behind it
            time.sleep(0.1)
        assert runs_of(server, model)[first_run] == "RUNNING"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    outputs = [job.communicate(timeout=300)[0] for job in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert not any("ended run" in output for output in outputs)
    runs = client.search_runs([experiment])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert len({r.info.run_name for r in runs}) == 1  # the same job, twice
    assert all(tracking.ABANDONED not in r.data.tags for r in runs)
    versions = versions_of(server, model)
    assert sorted(run for _, run in versions) == sorted(r.info.run_id for r in runs)
    for number, run_id in versions:  # each version READY, carrying its own run's lineage
        version = client.get_model_version(model, number)
        assert version.status == "READY" and version.tags["mlgate.run_id"] == run_id


def test_the_lease_of_a_live_run_is_renewed_and_never_counts_as_abandoned(
    server: Server, tmp_path: Path, clean_env: dict
) -> None:
    """A job with a 12 s lease trains for longer than that (8,000 rounds, no early stop):
    its heartbeat pushes the lease forward while it lives, and `end_abandoned_runs` (called
    here while it runs, as a concurrent re-run would) never ends it. The lease is long enough
    that a busy runner's slow requests cannot outlast it (a 4 s lease did, in CI)."""
    from mlgate.settings import load_settings

    project = make_project(tmp_path / "project")
    model = unique("heartbeat")
    slow = ("--set", "train.num_boost_round=8000", "--set", "train.early_stopping_rounds=8000")
    job = start_training(project, server, model, clean_env, 12, *slow)
    run_id = wait_for_open_run(server, model, job)
    client = mlflow.MlflowClient(server.uri)
    run_name = client.get_run(run_id).info.run_name
    settings = load_settings(
        env={"MLGATE_TRACKING_URI": server.uri, "MLGATE_TRACKING_EXPERIMENT": model},
        params_file=project / "params.yaml",
        overrides=[f"model.name={model}", "tracking.run_lease=12"],
    )
    seen: list[float] = []
    while job.poll() is None:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            break
        seen.append(float(run.data.tags[tracking.RUN_LEASE]))
        assert tracking.end_abandoned_runs(client, settings, run_name) == []
        time.sleep(0.5)
    output = job.communicate(timeout=300)[0]
    assert job.returncode == 0, output
    assert len(set(seen)) >= 2, "the lease was renewed while the job ran"
    assert seen == sorted(seen)
    final = client.get_run(run_id)
    assert final.info.status == "FINISHED" and tracking.ABANDONED not in final.data.tags
