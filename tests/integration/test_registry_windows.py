"""One run, one version, whatever order a multi-worker registry commits a retried create in.

MLflow's HTTP client retries a `create_model_version` whose answer timed out. With several
server workers the first request may still be queued or running when the retry is answered:
it then commits a second version of the run *after* the retry, after the registering job's
search for duplicates, or even after the job has ended. A proxy between `mlgate train` and
the session's MLflow server (several workers, PostgreSQL) holds the first create and lets it
through at exactly those moments; the oracle is the registry itself, read with a plain
MlflowClient. Each `mlgate train` is a real process forked from the session's interpreter that
did its imports (`mlgate_forks`, tests/forkserver.py).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
import requests

from mlgate.registry.doctor import main as doctor_main
from tests import proxy
from tests.conftest import make_project
from tests.forkserver import ForkServer
from tests.integration.test_train import train_args, unique

CREATE = "/api/2.0/mlflow/model-versions/create"
SEARCH = "/api/2.0/mlflow/model-versions/search"


@dataclass
class HeldCreate:
    """A proxy that holds the first POST to CREATE (forwarding nothing, so the client times
    out and retries) until `release` is set; `committed` is set once the server has answered
    it. With `on_search`, the first model-version search after the retry releases it, and
    that search's answer (read before the release) reaches the client only once the held
    create has committed: the create commits after the job's search, before the job goes on."""

    target: str
    on_search: bool
    uri: str = ""
    creates: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    committed: threading.Event = field(default_factory=threading.Event)
    shutdown: Callable[[], None] = lambda: None

    def start(self) -> HeldCreate:
        self.uri, self.shutdown = proxy.start(self.target, self.around)
        return self

    def around(self, method: str, path: str, send_on: proxy.SendOn) -> requests.Response:
        first = method == "POST" and path.startswith(CREATE)
        if first:
            self.creates.append(path)
            first = len(self.creates) == 1
        if first:
            assert self.release.wait(300), "the held create was never released"
        answer = send_on()
        if first:
            self.committed.set()
        if (
            self.on_search
            and path.startswith(SEARCH)
            and len(self.creates) >= 2
            and not self.release.is_set()
        ):
            self.release.set()
            assert self.committed.wait(120), "the held create did not commit"
        return answer


@pytest.fixture(scope="module")
def server(mlflow_postgres: str) -> str:
    """The session's MLflow as teams run it (tests/conftest.py): PostgreSQL, several workers,
    so a held request and its retry really run side by side; shared, not started again."""
    return mlflow_postgres


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def train_through(
    forks: ForkServer, proxy: HeldCreate, project: Path, model: str, env: dict[str, str], out: Path
) -> tuple[subprocess.CompletedProcess[str], str]:
    """`mlgate train` through the proxy, with a 4 s timeout so the held create is retried;
    returns the process and the version it reported (GITHUB_OUTPUT)."""
    args = train_args(project, proxy.uri, model, "--set", "tracking.timeout=4")
    done = forks.mlgate(["train", *args], env | {"GITHUB_OUTPUT": str(out)})
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    return done, outputs.get("model-version", "")


def versions_of(server: str, model: str) -> list[tuple[int, str]]:
    client = mlflow.MlflowClient(server)
    return sorted(
        (int(v.version), v.run_id) for v in client.search_model_versions(f"name='{model}'")
    )


@pytest.fixture
def held(server: str, request: pytest.FixtureRequest) -> Iterator[HeldCreate]:
    proxy = HeldCreate(server, on_search=request.param).start()
    yield proxy
    proxy.release.set()
    proxy.shutdown()


@pytest.mark.parametrize("held", [True], indirect=True)
def test_a_create_committed_after_the_jobs_search_is_dropped_before_the_run_ends(
    held: HeldCreate,
    server: str,
    project: Path,
    clean_env: dict[str, str],
    tmp_path,
    mlgate_forks: ForkServer,
) -> None:
    """The retry commits first; the held first create commits right after the job's search
    for duplicates has read the registry. Registration searches again once its lease is
    confirmed, so the job still ends with one version, the lowest, and reports it."""
    model = unique("late-create")
    done, reported = train_through(mlgate_forks, held, project, model, clean_env, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(held.creates) == 2, f"the create was not retried ({held.creates})"
    assert held.committed.is_set(), "the held create never reached the server"
    versions = versions_of(server, model)
    assert len(versions) == 1, versions
    assert str(versions[0][0]) == reported
    assert "made twice by a retried request" in done.stderr


@pytest.mark.parametrize("held", [False], indirect=True)
def test_a_create_committed_after_the_job_ended_is_found_and_dropped_by_doctor(
    held: HeldCreate,
    server: str,
    project: Path,
    clean_env: dict[str, str],
    tmp_path,
    capsys,
    mlgate_forks: ForkServer,
) -> None:
    """The held first create commits only after the job has ended: nothing in the job can
    see it. `mlgate doctor` reports the run's second version (exit 12, nothing changed),
    `--repair` drops it keeping the lowest (the one the job reported), and doctor is clean."""
    model = unique("ended-create")
    done, reported = train_through(mlgate_forks, held, project, model, clean_env, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(held.creates) == 2, f"the create was not retried ({held.creates})"
    assert [str(v) for v, _ in versions_of(server, model)] == [reported]

    held.release.set()
    assert held.committed.wait(120)
    versions = versions_of(server, model)
    assert len(versions) == 2 and versions[0][1] == versions[1][1], versions
    assert str(versions[0][0]) == reported  # committed later, numbered higher

    def doctor(*extra: str) -> tuple[int, str]:  # in this process: no interpreter to start
        args = ["--params", str(project / "params.yaml"), "--tracking-uri", server]
        code = doctor_main([*args, "--model-name", model, *extra], env=clean_env)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, found = doctor()
    assert code == 12, found
    assert f"run {versions[0][1]} has 2 versions" in found
    assert versions_of(server, model) == versions  # reported, nothing changed
    code, repaired = doctor("--repair")
    assert code == 12, repaired
    assert "repaired: run" in repaired
    assert versions_of(server, model) == versions[:1]
    code, clean = doctor()
    assert code == 0, clean


def test_the_lowest_version_of_a_run_is_kept_and_an_aliased_one_never_dropped(tmp_path) -> None:
    """The rule every reader applies, on a real (sqlite) registry: of one run's versions the
    lowest is kept; one holding an alias is reported but never dropped (a search returns no
    aliases: they are read from the registered model); a version without mlgate's run tag,
    or of another run, is not counted."""
    from mlgate.registry import tracking

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("rule", artifact_location=(tmp_path / "a").as_uri())
    run, other = (client.create_run(experiment).info for _ in range(2))
    client.create_registered_model("m")

    def version(of, marked: bool = True) -> str:
        tags = {tracking.MARKER: of.run_id} if marked else {}
        made = client.create_model_version("m", f"{of.artifact_uri}/model", of.run_id, tags=tags)
        return str(made.version)

    v1, v2, v3, v4, v5 = (
        version(run),
        version(run),
        version(other),
        version(run),
        version(run, False),
    )
    client.set_registered_model_alias("m", "staging", v4)
    found = tracking.duplicate_versions(client, "m")
    assert [(d.run_id, d.kept, d.extra) for d in found] == [(run.run_id, v1, (v2, v4))]
    dropped = tracking.drop_duplicate_versions(client, "m")
    assert [(d.kept, d.extra) for d in dropped] == [(v1, (v2,))]
    left = sorted(int(v.version) for v in client.search_model_versions("name='m'"))
    assert left == sorted(int(v) for v in (v1, v3, v4, v5))
    assert [d.extra for d in tracking.duplicate_versions(client, "m")] == [(v4,)]  # for a person
    client.delete_registered_model_alias("m", "staging")
    assert [d.extra for d in tracking.drop_duplicate_versions(client, "m")] == [(v4,)]
    assert tracking.duplicate_versions(client, "m") == []
    assert tracking.drop_duplicate_versions(client, "m") == []  # the second pass: nothing
