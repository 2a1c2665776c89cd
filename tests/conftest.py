"""Shared fixtures. Tests are split by cost (see docs/contributing.md "Tests"):

- tests/unit: no services, seconds;
- tests/integration: a real `mlflow server` and a real S3 endpoint (moto), started once per
  session and only when a test asks for them;
- tests/workflows: the workflows run by act against the same services.

They run in that order, so a quick failure shows before the slow tests start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from hypothesis import settings

from mlgate.pipeline.demo import PROJECT_FILES  # what a repository using mlgate holds
from tests.copies import STUMP, Templates
from tests.forkserver import ForkServer, fork_server
from tests.github_openapi import OpenAPIStandIn, description, serve

# XGBoost's OpenMP threads spin-wait for work by default (GOMP's ACTIVE policy): sixteen racing
# or training processes on two cores would burn their slices spinning. PASSIVE makes them sleep;
# set at import, before anything loads libgomp, so every process a test starts inherits it. A
# caller's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# No usage telemetry from the tests' MLflow clients and servers: it sends nothing anyway on CI,
# and its first call raced once on a loaded machine (KeyError '_MLFLOW_TELEMETRY_SESSION_ID').
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The property tests (hypothesis) are a required check on CI: the same commit must get the same
# verdict, so there they draw the same examples every run (derandomize) and keep no example
# database. Elsewhere they draw new examples each run, which is how they keep finding cases.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ORDER = {"unit": 0, "integration": 1, "workflows": 2}
# Where the session's services keep their files, for tests that damage them on purpose.
SERVICE_PATHS: dict[str, Path] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if tier == "integration":
            item.add_marker(pytest.mark.integration)
        elif tier == "workflows":
            item.add_marker(pytest.mark.workflow)
    items.sort(
        key=lambda item: ORDER.get(Path(str(item.fspath)).relative_to(REPO / "tests").parts[0], 0)
    )


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_project(dest: Path, files: tuple[str, ...] = PROJECT_FILES) -> Path:
    """A fresh git repository holding the files a repository using mlgate has."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.email", "test@mlgate.invalid")
    git(dest, "config", "user.name", "mlgate tests")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "project")
    return dest


def push_data(
    project: Path,
    frame: pd.DataFrame | None = None,
    *,
    remote: str | None = None,
    raw: bytes | None = None,
    message: str = "new data version",
) -> str:
    """Write a new data version, `dvc add` and `dvc push` it, commit data.dvc; return its md5."""
    from dvc.repo import Repo

    path = project / "data" / "breast_cancer.csv"
    path.parent.mkdir(exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        assert frame is not None
        frame.to_csv(path, index=False)
    with Repo(str(project)) as repo:
        repo.add([str(project / "data")])
        repo.push(remote=remote)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)
    import yaml

    return yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]


@pytest.fixture(scope="session")
def breast_cancer() -> pd.DataFrame:
    """The data set that ships with the project, read through DVC from the embedded remote."""
    import io

    import dvc.api

    raw = dvc.api.read("data/breast_cancer.csv", repo=str(REPO), mode="rb")
    return pd.read_csv(io.BytesIO(raw))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def without_tool_variables() -> dict[str, str]:
    """The process environment without mlgate's, MLflow's or the runner's own variables."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_", "GITHUB_"))
    }


@pytest.fixture
def clean_env() -> dict[str, str]:
    return without_tool_variables()


@pytest.fixture(scope="module")
def clean_env_module() -> dict[str, str]:
    return without_tool_variables()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {seconds}s:\n{log.read_text()[-3000:]}")


# uvicorn's supervisor SIGKILLs a worker that misses a 5 s health ping ("Child process [N]
# died" in the server's log), and with it the requests the worker was serving. On a saturated
# two-core runner a busy worker misses it: a test server with several workers waits longer.
PATIENT_WORKERS = ["--uvicorn-opts", "--timeout-worker-healthcheck 120"]


def sqlite_server_args(root: Path, port: int, *extra: str) -> list[str]:
    """`mlflow server` on 127.0.0.1:`port`, its sqlite store and proxied artifacts in `root`,
    one worker."""
    return [
        str(BIN / "mlflow"),
        "server",
        *extra,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]


def start(
    args: list[str], url: str, log: Path, seconds: float = 120, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start a server in a session of its own and wait until `url` answers. A server that
    exits early or does not answer in time is killed (its whole process group) and its log
    closed before the error is raised, so no half-started server outlives the test.

    MLflow 3's `mlflow server` also starts a job runner (a supervisor and about seven huey
    consumers, each a Python process importing mlflow) for its GenAI jobs, which mlgate never
    uses: on two cores that costs every server start tens of CPU seconds. It is off here
    (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false) unless the caller's `env` turns it on."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ if env is None else env)
    with log.open("w") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        wait_for(url, process, seconds, log)
    except BaseException:
        try:  # the group: a leader that exited may have left workers behind
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
        process.wait()
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server and registry (sqlite backend, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow")
    SERVICE_PATHS["mlflow-artifacts"] = root / "artifacts"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    process = start(
        sqlite_server_args(root, port),
        f"{uri}/health",
        root / "server.log",
        seconds=600,  # about 30 s idle; minutes at a load average of 30 (seen here)
    )
    yield uri
    stop(process)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own (Debian's server binaries, a free port), as teams run
    MLflow's backend store. Root cannot run PostgreSQL: as root it runs as `postgres`."""
    import psycopg2

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert bins, "install PostgreSQL (apt-get install postgresql)"
    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="mlgate-pg-"))  # not under pytest's 0700 tree
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run(
        [*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "mlgate", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen(
        [*as_owner, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
        + ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = psycopg2.connect(
                host="127.0.0.1", port=port, user="mlgate", dbname="postgres"
            )
            break
        except psycopg2.OperationalError:
            assert process.poll() is None and time.monotonic() < deadline, (
                "PostgreSQL did not start"
            )
            time.sleep(0.5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE DATABASE mlflow")
    connection.close()
    yield f"postgresql+psycopg2://mlgate@127.0.0.1:{port}/mlflow"
    os.killpg(process.pid, 2)  # fast shutdown
    process.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_postgres(tmp_path_factory, postgres: str, s3_server: str) -> Iterator[str]:
    """The MLflow server as teams run it: PostgreSQL backend, artifacts in S3, several workers
    (so requests from racing clients really run at the same time)."""
    import boto3

    root = tmp_path_factory.mktemp("mlflow-postgres")
    bucket = f"mlflow-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    process = start(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", postgres, "--artifacts-destination", f"s3://{bucket}/mlflow"]
        + ["--workers", "4", *PATIENT_WORKERS],
        f"{uri}/health",
        root / "server.log",
        seconds=900,  # shared by test_concurrency and test_registry_moves; slow on a busy runner
        env=os.environ | {"MLFLOW_S3_ENDPOINT_URL": s3_server},
    )
    yield uri
    stop(process)


@pytest.fixture(scope="session")
def trained_on_postgres(tmp_path_factory, mlflow_postgres: str) -> Templates:
    """Models trained once a session on the PostgreSQL MLflow, for the registry tests to copy
    (tests/copies.py): a weak champion, a better candidate (the defaults) and a worse one (a
    stump), versions of a template model that nothing evaluates or moves."""
    from tests.integration.test_gate import WEAK, Registry

    project = make_project(tmp_path_factory.mktemp("templates") / "project")
    models = Registry(project, mlflow_postgres, without_tool_variables())
    weak = models.train(*WEAK)
    better = models.train()
    worse = models.train(*STUMP)
    return Templates(project, mlflow_postgres, models.model, weak, better, worse)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 endpoint (moto's server) with credentials in the environment for DVC."""
    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    process = start(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        f"{endpoint}/moto-api/",
        root / "moto.log",
        seconds=60,
    )
    yield endpoint
    stop(process)


@pytest.fixture
def s3_remote(s3_server: str, project: Path) -> str:
    """A fresh bucket configured as the project's default DVC remote, holding the data."""
    import boto3
    from dvc.repo import Repo

    bucket = f"data-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    with Repo(str(project)) as repo:
        repo.pull(remote="embedded")
        with repo.config.edit() as conf:
            conf["remote"]["s3"] = {"url": f"s3://{bucket}/dvc", "endpointurl": s3_server}
            conf["core"]["remote"] = "s3"
    with Repo(str(project)) as repo:
        repo.push(remote="s3")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "use the S3 remote")
    return bucket


@pytest.fixture(scope="session")
def github_api_session() -> Iterator[OpenAPIStandIn]:
    """The GitHub REST API stand-in: every request validated against GitHub's description."""
    with serve(OpenAPIStandIn(description(REPO / ".cache"))) as stand_in:
        yield stand_in


@pytest.fixture
def github_api(github_api_session: OpenAPIStandIn) -> Iterator[OpenAPIStandIn]:
    """The stand-in, emptied for this test; the test fails if any request broke the contract."""
    github_api_session.reset()
    yield github_api_session
    assert github_api_session.violations == []


# -- Docker engine, base image, registry (the serving image and deployment) -------------------
BASE_IMAGE = "local/python:3.11-bookworm"


def stop_group(group: int, seconds: float = 20) -> None:
    """SIGTERM process group `group` once (dockerd quits without cleaning up on a third), then
    SIGKILL what is left of it after `seconds`; return once it is gone. For processes that are
    not this one's children (a script started them), so they are watched, not waited for."""
    deadline = time.monotonic() + seconds
    try:
        os.killpg(group, signal.SIGTERM)
        while True:
            time.sleep(0.2)
            os.killpg(group, signal.SIGKILL if time.monotonic() > deadline else 0)
    except ProcessLookupError:
        return


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[object]:
    """A real Docker engine: the running one, else one of this session's own, started by
    scripts/start-docker.sh --own-engine --no-registry (its socket, pid file, data and log
    under the session's tmp; DOCKER_HOST set for the session, so every process the tests start
    uses it): dockerd without a bridge, on overlay2 where the kernel mounts overlayfs, else
    vfs. The fallback is written once, in the script a user runs. The script and dockerd (and
    its containerd) are one process group, stopped at the end of the session. An engine that
    answers where the environment points (DOCKER_HOST, else the default socket) is someone
    else's (the machine's, another session's): used, never stopped. The one this session starts
    is found by no other session (it is not on the default socket), so none can use it and lose
    it when this session ends (tests/integration/test_docker_engine.py)."""
    import docker

    group, before = None, os.environ.get("DOCKER_HOST")
    state = data = Path()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        # a short path: a unix socket's path is limited to 107 bytes
        state = Path(tempfile.mkdtemp(prefix="mlgate-dockerd-"))
        # Its images where the machine keeps Docker's (often a volume of its own: overlay2
        # works there when the root filesystem is an overlayfs, where only vfs would).
        default = Path("/var/lib/docker")
        data = default / f"mlgate-{state.name}" if os.access(default, os.W_OK) else state / "data"
        script = subprocess.Popen(
            [str(REPO / "scripts" / "start-docker.sh"), "--own-engine", "--no-registry"],
            env=os.environ | {"STATE_DIR": str(state), "DATA_ROOT": str(data)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its group outlives it: dockerd and containerd
        )
        group = script.pid
        try:
            said, _ = script.communicate(timeout=300)  # two drivers tried, 60 s each at most
        except subprocess.TimeoutExpired:
            script.kill()  # reaped here; its dockerd, in its group, is stopped below
            said = script.communicate()[0] + "\n(stopped: still running after 300 s)"
        log = state / "dockerd.log"
        if script.returncode != 0:
            stop_group(group)  # nothing half started outlives the failure
            engine_log = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"scripts/start-docker.sh failed:\n{said}\n{engine_log}")
        os.environ["DOCKER_HOST"] = f"unix://{state}/docker.sock"
        client = docker.from_env()
        client.ping()
    try:
        yield client
    finally:
        if group is not None:
            stop_group(group)
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
            if before is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = before


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """python3 on Debian bookworm, built with debootstrap (no image can be pulled here)."""
    import docker

    try:
        docker_engine.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    sources = Path("/etc/apt/sources.list.d/debian.sources").read_text()
    mirror = next(line.split()[1] for line in sources.splitlines() if line.startswith("URIs:"))
    root = REPO / ".cache" / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(root),
            mirror,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    # What python:3.11-slim also leaves out: the downloaded packages, apt's lists, docs and
    # translations (every layer on top is copied whole on vfs, so the tests gain too).
    for leftover in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ):
        for path in (root / leftover).glob("*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "import", "-", BASE_IMAGE],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
        timeout=600,
    )
    tar.wait()
    shutil.rmtree(root)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def serve_wheels() -> Path:
    """Wheels of requirements-serve.lock for linux, for the offline image build (the build
    container does not trust this machine's TLS interception)."""
    from mlgate.pipeline.deploy import download_wheels

    return download_wheels(REPO / "requirements-serve.lock", REPO / ".cache", "serve")


class LocalRegistry:
    """The CNCF distribution registry with htpasswd authentication, on loopback."""

    username = "registry-user"  # act masks secret values in its log: keep it distinctive
    password = "registry-test-password"

    def __init__(self, root: Path) -> None:
        import bcrypt

        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
        (root / "htpasswd").write_text(f"{self.username}:{hashed}\n")
        (root / "config.yml").write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
            f"auth:\n  htpasswd:\n    realm: mlgate-tests\n    path: {root / 'htpasswd'}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start(
            ["docker-registry", "serve", str(self.root / "config.yml")],
            f"http://{self.host}/v2/",
            self.root / "registry.log",
            seconds=30,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def env(self) -> dict[str, str]:
        return {"REGISTRY_USERNAME": self.username, "REGISTRY_PASSWORD": self.password}


@pytest.fixture(scope="session")
def container_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"))
    registry.start()
    yield registry
    registry.stop()


# -- MLflow with its own authentication (tests/integration/test_registry_auth.py) -------------
class AuthMlflow:
    """`mlflow server --app-name basic-auth`: users, and permissions per registered model, kept
    by MLflow itself. `as_user` points MLflow's client (which reads the standard
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD at request time) at one user."""

    ADMIN = "admin"

    def __init__(self, uri: str, admin_password: str) -> None:
        self.uri, self.admin_password = uri, admin_password
        self.passwords = {self.ADMIN: admin_password}

    def env(self, user: str) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.passwords[user]}

    def as_user(self, user: str):  # -> contextmanager
        from contextlib import contextmanager

        @contextmanager
        def scoped() -> Iterator[None]:
            saved = {k: os.environ.get(k) for k in self.env(user)}
            os.environ.update(self.env(user))
            try:
                yield
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

        return scoped()

    def create_user(self, user: str) -> None:
        from mlflow.server import get_app_client

        self.passwords[user] = uuid.uuid4().hex
        with self.as_user(self.ADMIN):
            get_app_client("basic-auth", tracking_uri=self.uri).create_user(
                user, self.passwords[user]
            )

    def grant(self, user: str, model: str, permission: str) -> None:
        from mlflow.server import get_app_client

        with self.as_user(self.ADMIN):
            get_app_client("basic-auth", tracking_uri=self.uri).grant_user_permission(
                user, "registered_model", model, permission
            )


@pytest.fixture(scope="session")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMlflow]:
    """A second MLflow server, with MLflow's own basic authentication: default permission
    READ, an admin, users and per-registered-model permissions (started once a session)."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    password = uuid.uuid4().hex
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root}/auth.db\n"
        f"admin_username = {AuthMlflow.ADMIN}\n"
        f"admin_password = {password}\n"
        # Each request's password check is a PBKDF2 hash (seconds on a loaded machine):
        # cache a verified credential for the session, as the shipped config suggests.
        "auth_cache_ttl_seconds = 3600\n"
    )
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    process = start(
        sqlite_server_args(root, port, "--app-name", "basic-auth"),
        f"{uri}/health",
        root / "server.log",
        seconds=600,  # about 30 s idle; minutes at a load average of 30 (seen here)
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        | {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,  # CSRF of the auth app
        },
    )
    yield AuthMlflow(uri, password)
    stop(process)


# What `mlgate`'s commands import before their first registry call: train, evaluate (with its
# evidently reports and its curves), promote, deploy, rollback, doctor, and the registry lock
# (mlgate.registry.moves, which the lockers and racers use directly). None starts a thread.
MLGATE_IMPORTS = ("mlflow", "mlflow.artifacts", "mlflow.xgboost", "mlflow.models", "yaml")
MLGATE_IMPORTS += ("mlflow.data.pandas_dataset", "xgboost", "docker", "sklearn.metrics")
MLGATE_IMPORTS += ("evidently", "evidently.presets", "matplotlib.pyplot")
MLGATE_IMPORTS += ("mlgate.cli", "mlgate.pipeline.train", "mlgate.pipeline.evaluate")
MLGATE_IMPORTS += ("mlgate.pipeline.promote", "mlgate.pipeline.deploy", "mlgate.pipeline.rollback")
MLGATE_IMPORTS += ("mlgate.registry.moves", "mlgate.registry.doctor")
# The fork servers started this session (one: mlgate_forks), for the reaping after each test.
FORK_SERVERS: list[ForkServer] = []


@pytest.fixture(scope="session")
def mlgate_forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """The session's one fork server: an interpreter that did MLGATE_IMPORTS (about 30 CPU
    seconds, measured), once a session. Every test that needs many real processes of mlgate
    forks them from it (tests/forkserver.py): the trainings of test_faults and
    test_registry_windows, the movers of test_registry_auth, the evaluations of
    test_evaluate_outputs, the lockers, killed movers and mixed racers of test_registry_moves
    (the racers living through its three rounds: `start_all`), the racers of test_concurrency
    and the killed deploys of test_deploy. Children live within one test: it reaps them before
    it ends, and whatever a failed test left running is SIGKILLed and reaped after it
    (`forked_children_reaped`), so the next test's batch runs."""
    with fork_server(tmp_path_factory.mktemp("mlgate-forks"), MLGATE_IMPORTS) as server:
        assert server.threads == 1, "a thread started by an import would not survive the fork"
        FORK_SERVERS.append(server)
        try:
            yield server
        finally:
            FORK_SERVERS.remove(server)


@pytest.fixture(autouse=True)
def forked_children_reaped() -> Iterator[None]:
    """After each test: the children it forked and left running (a failure between
    `start_all` and `wait`) SIGKILLed by pid and reaped."""
    yield
    for server in FORK_SERVERS:
        server.reap()
