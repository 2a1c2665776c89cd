"""Faults injected into real parts mid-way; after each, a re-run converges and nothing is lost.

This module kills a training job and its MLflow server while the run is open, so it starts a
server of its own. The other faults of the catalogue (SECURITY.md) live beside the stage they
hit: the registry down or refusing credentials during a push (test_deploy), the S3 remote
unreachable during `dvc pull` (test_s3_remote), an unloadable champion (test_gate).

Every `mlgate train` here is a real process of its own (its pid, killed with SIGKILL), forked
from the session's interpreter that imported mlflow, xgboost and mlgate once (`mlgate_forks`,
tests/forkserver.py), not started afresh: eight imports (about 8 CPU seconds each) saved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests

from mlgate.registry import tracking
from tests import proxy
from tests.conftest import BIN, free_port, make_project, start, stop
from tests.forkserver import MLGATE, ForkServer, Running
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


@dataclass
class Job:
    """Child `i` of a batch forked by the fork server: a real `mlgate train` process."""

    running: Running
    i: int

    @property
    def pid(self) -> int:
        return self.running.pids[self.i]

    def alive(self) -> bool:
        return self.running.alive(self.i)

    def output(self) -> str:
        """What the job wrote so far, stdout then stderr (fault injection reports on stderr)."""
        _, out, err = self.running.files[self.i]
        return "".join(f.read_text() for f in (out, err) if f.exists())

    def kill(self) -> None:
        """SIGKILL, by its pid (the fork server reaps it)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> subprocess.CompletedProcess:
        """Its end (the batch's: the fork server reports every child's exit at once)."""
        return self.running.wait()[self.i]


class Trainings:
    """`mlgate train` jobs forked from the session's fork server, one batch at a time; at the
    end of a test, whatever still runs is SIGKILLed and reaped, so the next test's batch runs."""

    def __init__(self, forks: ForkServer) -> None:
        self.forks, self.batches = forks, []

    def start(self, *jobs: tuple[Sequence[str], Mapping[str, str]], wait_for: Path | None = None):
        """Fork one `mlgate ARGV` per job, side by side. With `wait_for`, every job after the
        first waits until that file exists before it starts (a barrier the test opens)."""
        gate = "import os, time\n" + f"while not os.path.exists({str(wait_for)!r}):\n"
        gate += "    time.sleep(0.05)\n"
        batch = [
            ((gate if wait_for is not None and n else "") + MLGATE, ["mlgate", *argv], env)
            for n, (argv, env) in enumerate(jobs)
        ]
        running = self.forks.start_all(batch)
        self.batches.append(running)
        return [Job(running, i) for i in range(len(batch))]

    def end(self) -> None:
        for running in self.batches:
            running.kill()
            running.wait()


@pytest.fixture
def trainings(mlgate_forks: ForkServer) -> Iterator[Trainings]:
    jobs = Trainings(mlgate_forks)
    yield jobs
    jobs.end()


def training(
    project: Path, server: Server, model: str, env: dict, lease: float = 3, *extra: str
) -> tuple[list[str], dict]:
    """`mlgate train` with a short run lease (default 3 s), so a dead job's run expires soon.
    Its requests are retried as by default: with one retry, a server slowed by a busy runner
    failed a job before it reached its run."""
    args = train_args(project, server.uri, model, *extra)
    args += ["--set", f"tracking.run_lease={lease}"]
    return ["train", *args, "--set", "tracking.backoff=0.1"], env


def pause_at(point: str, release: Path) -> dict[str, str]:
    """The environment that holds `mlgate train` alive at `point` until `release` exists
    (mlgate.faults): the job is then in a known state for as long as the test needs."""
    return {"MLGATE_TRACKING_FAULT_POINT": f"pause:{point}:{release}"}


def wait_until_paused(job: Job, point: str) -> None:
    """Wait until the job says it is paused at `point` (it is then alive, its run open). A job
    that ends first fails the test."""
    said = f"fault injection: paused at {point}"
    while said not in job.output():
        if not job.alive():
            pytest.fail(f"the job ended before {point}:\n{job.output()[-3000:]}")
        time.sleep(0.05)


def wait_for_open_run(server: Server, model: str, job: Job) -> str:
    client = mlflow.MlflowClient(server.uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and job.alive():
        experiment = client.get_experiment_by_name(model)
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
            if runs:
                return runs[0].info.run_id
        time.sleep(0.05)
    pytest.fail(f"no run opened: {job.output()[-3000:]}")


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
    victim: str, server: Server, tmp_path: Path, clean_env: dict, trainings: Trainings
) -> None:
    """SIGKILL (no handler runs) of the training job, or of the MLflow server under it, while
    the run is open. The job is held alive inside its run (fault point `train.in_run`) when
    the kill comes, so the kill lands there on a quick runner as on a slow one, never after the
    run ended. The run is left RUNNING; the re-run of the job ends it as KILLED and registers
    exactly one version, from its own run."""
    project = make_project(tmp_path / "project")
    model = unique(f"killed-{victim}")
    release = tmp_path / "release"
    [job] = trainings.start(
        training(project, server, model, clean_env | pause_at("train.in_run", release))
    )
    try:
        wait_until_paused(job, "train.in_run")
        ghost = wait_for_open_run(server, model, job)
        if victim == "job":
            job.kill()
            assert job.wait().returncode == -signal.SIGKILL
        else:
            server.kill()
            release.touch()  # its next call to the server finds it gone
            ended = job.wait()
            output = ended.stdout + ended.stderr
            assert ended.returncode == 5, output  # TrackingError, after its bounded retries
            assert "MLflow failed while" in output and "fix:" in output
            assert "Traceback" not in output
            server.start()
    finally:
        job.kill()
    assert runs_of(server, model)[ghost] == "RUNNING"  # what the fault leaves
    wait_until_lease_expired(server, ghost)  # nobody renews it: its job is dead

    # The re-run holds a long lease: its own heartbeat need not keep pace with a busy runner.
    [rerun] = trainings.start(training(project, server, model, clean_env, 60))
    done = rerun.wait()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"ended run {ghost}, left RUNNING by an earlier attempt" in output
    runs = runs_of(server, model)
    assert runs[ghost] == "KILLED"
    assert sorted(runs.values()) == ["FINISHED", "KILLED"]
    client = mlflow.MlflowClient(server.uri)
    assert client.get_run(ghost).data.tags["mlgate.abandoned"]
    (finished,) = [run for run, status in runs.items() if status == "FINISHED"]
    assert versions_of(server, model) == [("1", finished)]


def test_killed_after_registering_then_rerun_keeps_one_version_and_the_projects_git_tags(
    server: Server, tmp_path: Path, clean_env: dict, trainings: Trainings
) -> None:
    """The second path of a SIGKILL later in the run: the job dies right after its version was
    registered (READY, with its lineage), its run still RUNNING. The same job re-run (same run
    name: data and commit) ends the ghost run, deletes the version it left (no half-registered
    version stays beside the new one) and registers one of its own, on a run that carries the
    project's git tags (not the checkout of the `mlgate` script)."""
    project = make_project(tmp_path / "project")
    model = unique("killed-registered")
    repo = {"GITHUB_REPOSITORY": "acme/models", "GITHUB_SERVER_URL": "https://github.com"}
    env = clean_env | repo
    killed_env = env | {"MLGATE_TRACKING_FAULT_POINT": "train.after_register"}
    [job] = trainings.start(training(project, server, model, killed_env))
    killed = job.wait()
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert "fault injection: SIGKILL at train.after_register" in killed.stderr
    [(left, ghost)] = versions_of(server, model)  # what the fault leaves: a READY version
    assert runs_of(server, model) == {ghost: "RUNNING"}
    wait_until_lease_expired(server, ghost)  # nobody renews it: its job is dead

    [rerun] = trainings.start(training(project, server, model, env, 60))
    done = rerun.wait()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"ended run {ghost}, left RUNNING by an earlier attempt" in output
    runs = runs_of(server, model)
    assert runs[ghost] == "KILLED" and sorted(runs.values()) == ["FINISHED", "KILLED"]
    (finished,) = [run for run, status in runs.items() if status == "FINISHED"]
    # The ghost's version deleted, one of the re-run's own: the registry never reuses a number.
    assert versions_of(server, model) == [(str(int(left) + 1), finished)]
    tags = mlflow.MlflowClient(server.uri).get_run(finished).data.tags
    head = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head and tags["mlgate.git.commit"] == head
    assert tags["mlflow.source.git.branch"] == "main"  # make_project's branch
    assert tags["mlflow.source.git.repoURL"] == "https://github.com/acme/models"


def test_concurrent_trainings_of_one_commit_and_data_never_end_each_other(
    server: Server, tmp_path: Path, clean_env: dict, trainings: Trainings
) -> None:
    """Two live `mlgate train` jobs at the same commit and data version (same run name), their
    runs open at the same time: the second job's look for abandoned runs finds the first's run
    RUNNING with a live lease and leaves it alone. Job A is held alive inside its run (fault
    point `train.in_run`, its heartbeat running) until B has finished, so B's whole run,
    its look for abandoned runs included, overlaps A's on any runner: no timing decides it.
    Both are forked at once; B waits for a file the test writes once A's run is open."""
    project = make_project(tmp_path / "project")
    model = unique("concurrent")
    release, go = tmp_path / "release", tmp_path / "go"
    held = clean_env | pause_at("train.in_run", release)
    first, second = trainings.start(
        training(project, server, model, held, 60),
        training(project, server, model, clean_env, 60),
        wait_for=go,
    )
    try:
        wait_until_paused(first, "train.in_run")
        first_run = wait_for_open_run(server, model, first)
        assert "ended run" not in second.output() and second.alive(), "B started before A"
        go.touch()
        while second.alive():  # B's whole run, while A is held in its own
            assert first.alive(), f"the held job died:\n{first.output()[-3000:]}"
            time.sleep(0.1)
        assert runs_of(server, model)[first_run] == "RUNNING"
    finally:
        release.touch()
    first_done, second_done = (job.wait() for job in (first, second))
    second_output = second_done.stdout + second_done.stderr
    assert second_done.returncode == 0, second_output
    first_output = first_done.stdout + first_done.stderr
    assert first_done.returncode == 0, first_output
    assert "fault injection: released at train.in_run" in first_output
    assert not any("ended run" in output for output in (first_output, second_output))
    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name(model).experiment_id
    runs = client.search_runs([experiment])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert len({r.info.run_name for r in runs}) == 1  # the same job, twice
    assert all(tracking.ABANDONED not in r.data.tags for r in runs)
    versions = versions_of(server, model)
    assert sorted(run for _, run in versions) == sorted(r.info.run_id for r in runs)
    for number, run_id in versions:  # each version READY, carrying its own run's lineage
        version = client.get_model_version(model, number)
        assert version.status == "READY" and version.tags["mlgate.run_id"] == run_id


HEARTBEAT_LEASE = 15  # seconds: a beat every 5 s; a beat must be 10 s late to lose it


def test_the_lease_of_a_live_run_is_renewed_and_never_counts_as_abandoned(
    server: Server, tmp_path: Path, clean_env: dict, trainings: Trainings
) -> None:
    """A job held alive inside its open run (fault point `train.in_run`) for as long as the
    test needs: its heartbeat pushes the lease forward (two renewals seen, each later than
    the last), and `end_abandoned_runs`, called meanwhile as a concurrent re-run would,
    never ends it. Released, the job finishes and registers. Nothing depends on how long
    training takes on this runner (an earlier version raced the heartbeat against 8,000
    boosting rounds and lost on a quick runner). A broken heartbeat fails the test: once the
    lease passes, `end_abandoned_runs` ends the run."""
    from mlgate.settings import load_settings

    project = make_project(tmp_path / "project")
    model = unique("heartbeat")
    release = tmp_path / "release"
    held = clean_env | pause_at("train.in_run", release)
    [job] = trainings.start(training(project, server, model, held, HEARTBEAT_LEASE))
    try:
        wait_until_paused(job, "train.in_run")
        run_id = wait_for_open_run(server, model, job)
        client = mlflow.MlflowClient(server.uri)
        run_name = client.get_run(run_id).info.run_name
        settings = load_settings(
            env={"MLGATE_TRACKING_URI": server.uri, "MLGATE_TRACKING_EXPERIMENT": model},
            params_file=project / "params.yaml",
            overrides=[f"model.name={model}", f"tracking.run_lease={HEARTBEAT_LEASE}"],
        )
        seen: list[float] = []
        while len(set(seen)) < 3:  # the lease the run was created with, then two renewals
            assert job.alive(), f"the held job died:\n{job.output()[-3000:]}"
            run = client.get_run(run_id)
            assert run.info.status == "RUNNING" and tracking.ABANDONED not in run.data.tags
            seen.append(float(run.data.tags[tracking.RUN_LEASE]))
            assert tracking.end_abandoned_runs(client, settings, run_name) == []
            time.sleep(0.5)
    finally:
        release.touch()
    done = job.wait()
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen == sorted(seen), "a renewal only ever pushes the lease forward"
    final = client.get_run(run_id)
    assert final.info.status == "FINISHED" and tracking.ABANDONED not in final.data.tags
    assert [v for _, v in versions_of(server, model)] == [run_id]


def delaying_proxy(target: str, path: str, delay: float) -> tuple[str, Callable[[], None], list]:
    """An HTTP proxy to `target` that forwards every request at once but answers the first POST
    to `path` only after `delay` seconds: what a slow network or a busy registry does to a client
    whose timeout is shorter. The server has committed the request by the time the client gives
    up. Returns its URI, its shutdown, and the paths of the POSTs it saw there."""
    seen: list[str] = []

    def around(method: str, url: str, send_on: proxy.SendOn) -> requests.Response:
        answer = send_on()
        if method == "POST" and url.startswith(path):
            seen.append(url)
            if len(seen) == 1:
                time.sleep(delay)
        return answer

    uri, shutdown = proxy.start(target, around)
    return uri, shutdown, seen


def test_a_registration_retried_after_a_timeout_leaves_one_version(
    server: Server, tmp_path: Path, clean_env: dict, trainings: Trainings
) -> None:
    """The registry commits `create_model_version` but answers after the client's timeout;
    MLflow's HTTP client retries the POST, and the registry makes a second version of the same
    run (seen under load: two versions from one training). One run registers one version: the
    training ends with exactly one, of its own run."""
    uri, shutdown, seen = delaying_proxy(
        server.uri, "/api/2.0/mlflow/model-versions/create", delay=8
    )
    try:
        project = make_project(tmp_path / "project")
        model = unique("retried")
        args = train_args(project, uri, model, "--set", "tracking.timeout=4")
        [job] = trainings.start((["train", *args], clean_env))
        done = job.wait()
    finally:
        shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(seen) == 2, f"the create was not retried ({seen}): the fault did not happen"
    versions = versions_of(server, model)
    runs = runs_of(server, model)
    assert len(versions) == 1, versions
    assert versions[0][1] in runs and runs[versions[0][1]] == "FINISHED"
    assert "made twice by a retried request" in done.stderr
