"""Deploy and roll back with real parts: the Docker engine builds the serving image from the
top-level Dockerfile (local base image, wheels from the host), the distribution registry with
htpasswd authentication stores it, MLflow holds the aliases. The image is pulled back by
digest, run read-only as its non-root user, and must answer both protocols with the registry
model's own probabilities."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta

import boto3
import mlflow
import numpy as np
import pytest
import requests

from mlgate.pipeline import deploy, rollback
from mlgate.registry import audit, doctor
from mlgate.registry import moves as registry
from mlgate.serving.predlog import S3Sink, read_log
from tests.conftest import REPO, free_port, push_data
from tests.forkserver import ForkServer
from tests.integration.test_gate import WEAK, Registry

pytestmark = pytest.mark.docker
START = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory,
    mlflow_server,
    clean_env_module,
    docker_engine,
    base_image,
    serve_wheels,
    container_registry,
):
    from tests.conftest import make_project

    project = make_project(tmp_path_factory.mktemp("deploy") / "project")
    models = Registry(project, mlflow_server, clean_env_module)
    image = f"{container_registry.host}/mlgate/{models.model}"
    env = (
        clean_env_module
        | container_registry.env()
        | {
            "MLGATE_DEPLOY_IMAGE": image,
            "MLGATE_DEPLOY_BASE_IMAGE": base_image,
            "MLGATE_DEPLOY_WHEELS_DIR": str(serve_wheels),
            "MLGATE_DEPLOY_BACKOFF": "0.1",
        }
    )
    return models, env, image


def deploy_cli(models: Registry, env: dict, version: str, *extra: str) -> int:
    return deploy.main(
        [
            *models.args(),
            "--candidate-version",
            version,
            "--source",
            str(REPO),
            "--approved-by",
            "alice",
            *extra,
        ],
        env=env,
    )


def production(models: Registry) -> str | None:
    try:
        return str(models.client.get_model_version_by_alias(models.model, "production").version)
    except Exception:
        return None


def production_with_history(site, docker_engine, container_registry) -> str:
    """The version in Production, deployed over an earlier one (its `previous` is a version):
    the state test_deploy_then_serve_then_roll_back leaves. When that test did not run (a `-k`
    selection), it is made here the cheap way: a weak champion and a better candidate, each
    promoted and deployed with an image pushed beforehand that holds its model (deploy
    verifies and reuses it: no build). So each test below sets up what it reads."""
    from tests.integration.test_concurrency import model_image

    models, env, image = site
    current = production(models)
    if current is None:
        for params in (WEAK, ()):
            version = models.train(*params)
            assert models.evaluate(version) == 0 and models.promote(version) == 0
            model_image(docker_engine, models, version, image, container_registry)
            assert deploy_cli(models, env, version) == 0
        current = production(models)
    assert current is not None
    tags = models.client.get_model_version(models.model, current).tags
    assert tags.get("mlgate.production.previous", "none") != "none", tags
    return current


class SpyRegistry:
    """Another "registry" on another port: it records every request and its Authorization
    header, and challenges for Basic credentials (which an engine would then send)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, str | None]] = []
        spy = self

        class Handler(BaseHTTPRequestHandler):
            def do_any(self) -> None:
                spy.requests.append((self.command, self.path, self.headers.get("Authorization")))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="spy"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def spy_registry():
    spy = SpyRegistry()
    yield spy
    spy.close()


def booster_sha256(models: Registry, version: str, tmp_path) -> tuple[str, str]:
    """The oracle: sha256 of the booster MLflow logged for `version`, and its run, read with
    MLflow's own client (not mlgate's code)."""
    import hashlib
    from pathlib import Path

    import yaml

    mv = models.client.get_model_version(models.model, version)
    mlflow.set_tracking_uri(models.server)  # MLflow resolves models:/ against the global URI
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{models.model}/{version}",
            dst_path=str(tmp_path / f"oracle-{version}"),
            tracking_uri=models.server,
            registry_uri=models.server,
        )
    )
    data = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["xgboost"]["data"]
    return hashlib.sha256((local / data).read_bytes()).hexdigest(), mv.run_id


def image_holds(docker_engine, registry, pinned: str) -> dict:
    """What the image at `pinned` says it holds: its labels and /model/bundle.json, read with
    the docker CLI's API (docker-py) independently of mlgate's verification."""
    import io
    import tarfile

    image = docker_engine.images.pull(
        pinned, auth_config={"username": registry.username, "password": registry.password}
    )
    container = docker_engine.containers.create(image.id, command=["true"])
    try:
        stream, _ = container.get_archive("/model/bundle.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            meta = json.load(tar.extractfile("bundle.json"))
    finally:
        container.remove(force=True)
    return {"labels": image.labels, "bundle": meta}


def images_of(docker_engine, repository: str) -> set[str]:
    """The engine's images in `repository` (other engineers' builds share the engine)."""
    return {i.id for i in docker_engine.images.list(name=repository)}


def load(url: str, rows: list[list[float]], columns: list[str], connections: int = 8) -> int:
    """Single-row requests from `connections` threads; every one must be answered 200."""
    from concurrent.futures import ThreadPoolExecutor

    def worker(chunk: list[list[float]]) -> int:
        with requests.Session() as session:
            for row in chunk:
                body = {"dataframe_split": {"columns": columns, "data": [row]}}
                answer = session.post(f"{url}/invocations", json=body, timeout=10)
                assert answer.status_code == 200, answer.text
        return len(chunk)

    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(worker, [rows[i::connections] for i in range(connections)]))


def log_metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


@pytest.mark.timeout(2400)  # two image builds and many engine calls (vfs where overlay2 fails)
def test_deploy_then_serve_then_roll_back(
    site,
    docker_engine,
    container_registry,
    breast_cancer,
    s3_server,
    capsys,
    tmp_path,
    spy_registry,
) -> None:
    models, env, image = site
    v1 = models.train(*WEAK)
    assert models.evaluate(v1) == 0 and models.promote(v1) == 0

    # Credentials wrong: refused before anything is built; nothing moves.
    assert deploy_cli(models, env | {"REGISTRY_PASSWORD": "wrong"}, v1) == 9
    assert "refused the credentials" in capsys.readouterr().err
    assert production(models) is None

    # Deploy: build, push, read the digest back, then Production.
    assert deploy_cli(models, env, v1) == 0, capsys.readouterr().err
    version = models.client.get_model_version(models.model, v1)
    assert production(models) == v1 and version.current_stage == "Production"
    digest = version.tags["mlgate.image.digest"]
    assert version.tags["mlgate.production.image"] == f"{image}@{digest}"
    # Content-addressed: the tag, the labels and bundle.json name the logged booster's sha256.
    sha, run_id = booster_sha256(models, v1, tmp_path)
    assert version.tags["mlgate.image.tag"] == f"v{v1}-{sha[:12]}"
    held = image_holds(docker_engine, container_registry, f"{image}@{digest}")
    assert held["labels"]["dev.mlgate.model.sha256"] == sha == held["bundle"]["model_sha256"]
    assert held["labels"]["dev.mlgate.model.run-id"] == run_id == held["bundle"]["run_id"]
    assert version.tags["mlgate.production.approved_by"] == "alice"
    assert version.tags["mlgate.production.previous"] == "none"

    # A re-run changes nothing and builds nothing.
    images_before = images_of(docker_engine, image)
    assert deploy_cli(models, env, v1) == 0
    assert "already in Production" in capsys.readouterr().out
    assert images_of(docker_engine, image) == images_before

    # The image, pulled back by digest, serves the registry model's probabilities.
    pulled = docker_engine.images.pull(
        f"{image}@{digest}",
        auth_config={
            "username": container_registry.username,
            "password": container_registry.password,
        },
    )
    config = pulled.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["dev.mlgate.model.version"] == v1
    assert config["Labels"]["dev.mlgate.model.name"] == models.model
    assert "8080/tcp" in config["ExposedPorts"] and config["Healthcheck"]["Test"]
    holdout = breast_cancer.drop(columns=["diagnosis"]).head(50)
    expected = mlflow.pyfunc.load_model(f"models:/{models.model}/{v1}").predict(holdout)
    port = free_port()
    container = docker_engine.containers.run(
        f"{image}@{digest}",
        detach=True,
        network_mode="host",
        read_only=True,
        environment={
            "MLGATE_SERVE_PORT": str(port),
            # The prediction log's bucket does not exist yet: the sink is unavailable.
            "MLGATE_MONITOR_LOG_SINK": "s3://predictions/prod",
            "MLGATE_MONITOR_LOG_ENDPOINT_URL": s3_server,
            "MLGATE_MONITOR_LOG_FLUSH_SECONDS": "0.5",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, container.logs().decode()[-3000:]
            time.sleep(0.5)
        split = json.loads(holdout.to_json(orient="split", index=False))
        answer = requests.post(f"{url}/invocations", json={"dataframe_split": split}, timeout=10)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], expected, atol=1e-6)
        tensor = {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(holdout.shape),
                    "datatype": "FP64",
                    "data": holdout.to_numpy().ravel().tolist(),
                }
            ]
        }
        answer = requests.post(f"{url}/v2/models/{models.model}/infer", json=tensor, timeout=10)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["outputs"][0]["data"], expected, atol=1e-6)
        bad = requests.post(
            f"{url}/invocations", data="{", timeout=10, headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["message"]
        served = requests.get(f"{url}/version", timeout=5).json()
        assert served["version"] == v1 and served["engine"] == "compiled"
        # The compiled trees are all the image has: no xgboost (nor scipy) inside.
        probe = container.exec_run(["python", "-c", "import xgboost"])
        assert probe.exit_code != 0 and b"No module named 'xgboost'" in probe.output

        # Under load with the log's sink unavailable: every request answered, rows held.
        features = list(holdout.columns)
        sample = breast_cancer.drop(columns=["diagnosis"]).to_numpy().tolist()
        sent = 2 * len(holdout) + load(url, sample, features)
        deadline = time.monotonic() + 30  # the writer tries every 0.5 s, the load is quicker
        while log_metric(url, "mlgate_prediction_log_write_errors_total") < 1:
            assert time.monotonic() < deadline, container.logs().decode()[-3000:]
            time.sleep(0.2)
        assert log_metric(url, "mlgate_prediction_log_rows_written_total") == 0
        # The sink comes back: everything held is written, nothing dropped.
        boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="predictions")
        deadline = time.monotonic() + 60
        while log_metric(url, "mlgate_prediction_log_rows_written_total") < sent:
            assert time.monotonic() < deadline, container.logs().decode()[-3000:]
            time.sleep(0.5)
        assert log_metric(url, "mlgate_prediction_log_rows_dropped_total") == 0
        entries = list(
            read_log(S3Sink("s3://predictions/prod", s3_server), models.model, since=START)
        )
        assert sum(len(e["data"]) for e in entries) == sent
        assert {e["version"] for e in entries} == {v1} and entries[0]["columns"] == features
        container.kill(signal="SIGTERM")
        assert container.wait(timeout=30)["StatusCode"] == 0, "graceful shutdown on SIGTERM"
    finally:
        container.remove(force=True)

    # Version 2 while the registry is down: nothing half done, and a re-run converges.
    push_data(models.project, breast_cancer.iloc[20:], message="data: v2")
    v2 = models.train()
    assert models.evaluate(v2) == 0 and models.promote(v2) == 0
    container_registry.stop()
    try:
        assert deploy_cli(models, env, v2) == 9
    finally:
        container_registry.start()
    assert "fix:" in capsys.readouterr().err
    assert production(models) == v1
    assert "mlgate.image.digest" not in models.client.get_model_version(models.model, v2).tags
    summary = tmp_path / "summary.md"
    assert deploy_cli(models, env | {"GITHUB_STEP_SUMMARY": str(summary)}, v2) == 0
    assert production(models) == v2
    assert "### Lineage" in summary.read_text() and f"`{models.model}` version {v2}" in (
        summary.read_text()
    )
    v2_tags = models.client.get_model_version(models.model, v2).tags
    assert v2_tags["mlgate.production.previous"] == v1
    assert models.client.get_model_version(models.model, v1).current_stage == "Archived"

    v2_digest = v2_tags["mlgate.image.digest"]
    assert v2_digest != digest

    # The rollback target's image tags are checked, never trusted: a foreign registry host is
    # refused before any request (no credentials reach it); an image of the configured
    # repository that holds another model (v2's) is refused too. Nothing moves.
    v1_tags = models.client.get_model_version(models.model, v1).tags
    for key, value, why in [
        ("mlgate.image.repository", f"{spy_registry.host}/mlgate/x", "not the configured"),
        ("mlgate.image.digest", v2_digest, "does not hold that version's model"),
    ]:
        models.client.set_model_version_tag(models.model, v1, key, value)
        capsys.readouterr()
        tampered = [*models.args(), "--reason", "tampered", "--approved-by", "bob"]
        assert rollback.main(tampered, env=env) == 9
        assert why in capsys.readouterr().err
        assert production(models) == v2
        models.client.set_model_version_tag(models.model, v1, key, v1_tags[key])
    assert spy_registry.requests == []

    # Roll back: one step to the version Production replaced, its image still pullable and
    # verified down to its bundle.json and booster (as a new process would: nothing cached).
    deploy._VERIFIED.clear()
    capsys.readouterr()
    assert (
        rollback.main(
            [*models.args(), "--reason", "latency regression", "--approved-by", "bob"], env=env
        )
        == 0
    )
    assert production(models) == v1
    back = models.client.get_model_version(models.model, v1)
    assert back.current_stage == "Production"
    assert back.tags["mlgate.rollback.from"] == v2
    assert back.tags["mlgate.rollback.reason"] == "latency regression"
    assert back.tags["mlgate.rollback.by"] == "bob"
    assert back.tags["mlgate.production.image"] == f"{image}@{digest}"
    withdrawn = models.client.get_model_version(models.model, v2)
    assert withdrawn.tags["mlgate.rollback.rolled_back"] == "true"
    assert models.staging() == v2, "rollback leaves Staging alone"
    check_lineage_and_metrics(models, env, v1, v2, digest, capsys)
    # v1 replaced nothing: a second rollback has nowhere to go and says so.
    again = [*models.args(), "--reason", "again", "--approved-by", "bob"]
    assert rollback.main(again, env=env) == 2
    assert "replaced no earlier Production version" in capsys.readouterr().err

    # Deploy v2 again (the fix is in): exit 0, its verified image reused, even though its tags
    # now name a foreign registry (ignored, never contacted), and a new approver on record.
    models.client.set_model_version_tag(
        models.model, v2, "mlgate.image.repository", f"{spy_registry.host}/mlgate/x"
    )
    images_before = images_of(docker_engine, image)
    capsys.readouterr()
    assert deploy_cli(models, env, v2, "--approved-by", "carol") == 0
    out = capsys.readouterr().out
    assert "ignoring the recorded image" in out and "reusing it" in out
    assert images_of(docker_engine, image) == images_before, "nothing rebuilt"
    assert spy_registry.requests == [], "no request, so no credentials, to a foreign host"
    assert production(models) == v2
    again = models.client.get_model_version(models.model, v2).tags
    assert again["mlgate.production.image"] == f"{image}@{v2_digest}"
    assert again["mlgate.image.repository"] == image, "the record is rewritten"
    assert again["mlgate.production.approved_by"] == "alice, carol"
    assert again["mlgate.production.previous"] == v1
    assert audit.main([*models.args(), "production", "--json"], env=env) == 0
    live = json.loads(capsys.readouterr().out)
    assert live["version"] == v2 and live["replaced"] == [v1]
    assert [(e["alias"], e["version"], e["previous"]) for e in live["history"]] == [
        ("staging", v2, v1),
        ("production", v2, v1),
        ("production", v1, v2),
        ("production", v2, v1),
    ]
    assert [e["tags"].get("mlgate.production.approved_by") for e in live["history"][1:]] == [
        "alice",
        None,  # the rollback: its decider is mlgate.rollback.by
        "alice, carol",
    ]
    assert live["history"][2]["tags"]["mlgate.rollback.by"] == "bob"
    back = models.client.get_model_version(models.model, v1).tags
    assert back["mlgate.production.approved_by"] == "alice" and back["mlgate.rollback.by"] == "bob"
    assert audit.main([*models.args(), v1], env=env) == 0  # text: "replaced" without a TypeError


def check_lineage_and_metrics(models: Registry, env, v1: str, v2: str, digest: str, capsys) -> None:
    """After two deployments and a rollback, both read from the registry alone."""
    capsys.readouterr()
    assert audit.main([*models.args(), "production", "--json"], env=env) == 0
    live = json.loads(capsys.readouterr().out)
    trained = models.client.get_model_version(models.model, v1).tags
    assert live["version"] == v1 and live["aliases"] == ["production"]
    assert live["source"]["commit"] == trained["mlgate.git.commit"]
    assert live["source"]["committed_at"] == trained["mlgate.git.committed_at"]
    assert live["data"]["md5"] == trained["mlgate.data.md5"]
    assert live["data"]["remote_url"] == trained["mlgate.data.remote_url"]
    assert "holdout_auc" in live["training"]["metrics"] and live["training"]["params"]
    assert live["decision"]["verdict"] == "pass" and live["decision"]["champion"] is None
    assert live["image"]["digest"] == digest and live["image"]["ref"].endswith(digest)
    assert live["production"]["approved_by"] == "alice", "the original approval stays"
    assert live["rollback"]["by"] == "bob" and live["rollback"]["from"] == v2
    assert [(e["alias"], e["version"], e["previous"]) for e in live["history"]] == [
        ("staging", v1, None),
        ("production", v1, None),
        ("staging", v2, v1),
        ("production", v2, v1),
        ("production", v1, v2),
    ]
    assert audit.main([*models.args(), v2, "--json"], env=env) == 0
    withdrawn = json.loads(capsys.readouterr().out)
    assert withdrawn["replaced"] == [v1] and withdrawn["rollback"]["rolled_back"] == "true"
    assert withdrawn["production"]["approved_by"] == "alice"
    assert withdrawn["monitoring"] == {}
    assert audit.main([*models.args()], env=env) == 0
    text = capsys.readouterr().out
    assert f"image.digest                       {digest}" in text
    # Delivery metrics: two deployments, one rolled back, restored once.
    assert audit.metrics_main([*models.args(), "--json"], env=env) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["deployments"], metrics["rollbacks"]) == (2, 1)
    assert metrics["change_failure_rate"] == 0.5
    assert metrics["lead_time_hours"]["n"] == 2 and metrics["lead_time_hours"]["min"] > 0
    assert metrics["time_to_restore_hours"]["n"] == 1
    assert audit.metrics_main([*models.args(), "--days", "7"], env=env) == 0
    assert "| change failure rate | 50% (1 rollbacks) |" in capsys.readouterr().out


def test_deploy_refuses_a_version_that_is_not_staging(site, capsys) -> None:
    models, env, _ = site
    v = models.train(*WEAK)  # trained, never evaluated or promoted
    assert deploy_cli(models, env, v) == 6
    assert "does not hold 'staging'" in capsys.readouterr().err
    assert production(models) != v


def test_job_killed_around_the_production_move_converges(
    site, docker_engine, container_registry, breast_cancer, capsys, mlgate_forks: ForkServer
) -> None:
    """A real `mlgate deploy` process is SIGKILLed (no handler, no `finally`: its lock ticket
    stays, as a dead job leaves it) after the push, with the move recorded as pending but
    Production not moved; then right after Production moved, before its stage and tags. Each
    re-run meets what the dead job left and finishes the work; nothing is half done."""
    models, env, _ = site
    before = production_with_history(site, docker_engine, container_registry)
    push_data(models.project, breast_cancer.iloc[40:], message="data: v3")
    v3 = models.train()
    assert models.evaluate(v3) == 0 and models.promote(v3) == 0
    # no move outlasts it on a busy runner (the default; its tickets are aged, not waited out)
    env = env | {"MLGATE_TRACKING_LOCK_LEASE": "120"}
    lock = registry.lock_name(models.model)
    argv = ["deploy", *models.args(), "--candidate-version", v3]
    argv += ["--source", str(REPO), "--approved-by", "alice"]

    def killed_at(point: str) -> None:
        # `mlgate deploy`, a real process forked from the session's interpreter that did its
        # imports (`mlgate_forks`, tests/forkserver.py).
        done = mlgate_forks.mlgate(argv, env | {"MLGATE_TRACKING_FAULT_POINT": point})
        assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
        (left,) = models.client.search_model_versions(f"name='{lock}'")  # its ticket
        # Its lease runs out: the expiry on the ticket moved into the past, as the clock would
        # move past it (the waiting itself: test_registry_moves, a SIGKILLed holder).
        past = str(time.time() - 1)
        models.client.set_model_version_tag(lock, str(left.version), registry.EXPIRES, past)

    # 1. Pushed, the move pending, Production untouched: the image is recorded on the version.
    killed_at("move.after_pending")
    tags = models.client.get_model_version(models.model, v3).tags
    assert production(models) == before and "mlgate.image.digest" in tags
    assert "mlgate.pending.production" in tags
    assert not [key for key in tags if key.startswith("mlgate.production.")]

    # 2. The re-run reuses the image; this time the job dies right after the alias moved.
    images = len(docker_engine.images.list())
    killed_at("move.after_alias")
    assert len(docker_engine.images.list()) == images, "no second build"
    moved = models.client.get_model_version(models.model, v3)
    assert production(models) == v3 and moved.current_stage == "Staging", "alias and stage split"
    assert "mlgate.image.digest" in moved.tags, (
        "Production never points at a version without its image"
    )
    assert "mlgate.pending.production" in moved.tags

    # 3. The re-run completes the move from the pending record: stage, who, what it replaced.
    assert deploy_cli(models, env, v3) == 0
    assert "completed the record of its interrupted move" in capsys.readouterr().out
    done = models.client.get_model_version(models.model, v3)
    assert done.current_stage == "Production"
    assert "mlgate.pending.production" not in done.tags
    assert done.tags["mlgate.production.previous"] == before
    assert done.tags["mlgate.production.approved_by"] == "alice"
    replaced = models.client.get_model_version(models.model, before)
    assert replaced.tags["mlgate.production.replaced_by"] == v3
    assert replaced.current_stage == "Archived"
    assert models.client.search_model_versions(f"name='{lock}'") == []


def test_production_moves_into_its_own_model_and_rolls_back_there(
    site, docker_engine, container_registry, capsys
) -> None:
    """The migration from the earlier layout (docs/production-registry.md), with the images
    of the tests above (or those production_with_history pushed; no new build): with model.production_name set, deploying the
    version in Production copies it into the production model and moves `production` there;
    a re-run copies nothing more; lineage reads Production through the copy; a rollback to
    what it replaced (deployed in the earlier layout) copies that version first and moves
    between the copies; the main model is never written, and doctor names its stale alias.
    About 30 s on an idle machine (image pulls and checks, MLflow calls)."""
    models, env, _ = site
    # On the model itself, left by the tests above (or made by production_with_history).
    legacy = production_with_history(site, docker_engine, container_registry)
    assert models.staging() == legacy
    held = f"{models.model}-production"
    env = env | {"MLGATE_MODEL_PRODUCTION_NAME": held}
    then = models.client.get_model_version(models.model, legacy).tags
    replaced = then["mlgate.production.previous"]
    assert replaced != "none"
    capsys.readouterr()

    assert deploy_cli(models, env, legacy) == 0, capsys.readouterr().err
    assert f"moved into {held}" in capsys.readouterr().out
    [copy] = models.client.search_model_versions(f"name='{held}'")
    assert copy.source == f"models:/{models.model}/{legacy}"
    assert str(models.client.get_model_version_by_alias(held, "production").version) == str(
        copy.version
    )
    assert copy.current_stage == "Production"
    assert copy.tags[registry.COPY_OF] == f"{models.model}/{legacy}"
    assert copy.tags["mlgate.production.approved_by"] == "alice"
    assert copy.tags["mlgate.production.previous"] == replaced
    assert copy.tags["mlgate.image.digest"] == then["mlgate.image.digest"], "reused, verified"
    assert deploy_cli(models, env, legacy) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(models.client.search_model_versions(f"name='{held}'")) == 1, "one copy"

    assert audit.main([*models.args(), "production", "--json"], env=env) == 0
    live = json.loads(capsys.readouterr().out)
    assert live["version"] == legacy and "production" in live["aliases"]
    assert live["image"]["digest"] == then["mlgate.image.digest"]
    assert ("production", legacy, replaced) in [
        (e["alias"], e["version"], e["previous"]) for e in live["history"]
    ]

    args = [*models.args(), "--reason", "migration drill", "--approved-by", "carol"]
    assert rollback.main(args, env=env) == 0, capsys.readouterr().err
    back = models.client.get_model_version_by_alias(held, "production")
    assert back.source == f"models:/{models.model}/{replaced}"
    assert back.tags["mlgate.rollback.by"] == "carol"
    assert back.tags["mlgate.rollback.from"] == legacy
    assert back.current_stage == "Production"
    withdrawn = models.client.get_model_version(held, copy.version)
    assert withdrawn.tags["mlgate.rollback.rolled_back"] == "true"
    assert withdrawn.tags["mlgate.production.replaced_by"] == replaced
    assert withdrawn.current_stage == "Archived"
    # The main model was not written by either move: its alias of the earlier layout is stale.
    assert production(models) == legacy
    assert models.client.get_model_version(models.model, legacy).tags == then
    capsys.readouterr()
    assert doctor.main([*models.args()], env=env) == 0
    assert "still carries the 'production' alias" in capsys.readouterr().out


class InActions:
    """A fresh registered model with one staged version, deployed as an Actions job would
    (GITHUB_ACTIONS=true): the Environment and the run's approvals are read from the API
    stand-in (GitHub's OpenAPI description). One image build per test (a shared engine)."""

    def __init__(self, site, github_api, mlflow_server, env_module, tmp_path_factory) -> None:
        from tests.conftest import make_project
        from tests.github_openapi import VALID_TOKEN

        _, env, image = site
        self.models = Registry(
            make_project(tmp_path_factory.mktemp("approval") / "project"), mlflow_server, env_module
        )
        self.env = env | {
            "MLGATE_DEPLOY_IMAGE": image.rsplit("/", 1)[0] + f"/{self.models.model}",
            "GITHUB_ACTIONS": "true",
            "GITHUB_REPOSITORY": "acme/models",
            "GITHUB_RUN_ID": "42",
            "GITHUB_API_URL": github_api.url,
            "GITHUB_TOKEN": VALID_TOKEN,
        }
        self.version = self.models.train(*WEAK)
        assert self.models.evaluate(self.version) == 0 and self.models.promote(self.version) == 0

    def deploy(self, extra: dict | None = None) -> int:
        args = [*self.models.args(), "--candidate-version", self.version, "--source", str(REPO)]
        return deploy.main(args, env=self.env | (extra or {}))

    def tags(self) -> dict[str, str]:
        return self.models.client.get_model_version(self.models.model, self.version).tags

    def untouched(self) -> bool:
        """Nothing built, recorded or moved."""
        return production(self.models) is None and not any(
            k.startswith(("mlgate.image.", "mlgate.production.")) for k in self.tags()
        )


def test_an_approved_run_deploys_and_records_the_reviewer(
    site, github_api, mlflow_server, clean_env_module, tmp_path_factory, capsys
) -> None:
    from tests.github_openapi import approvals_answer, environment_answer

    job = InActions(site, github_api, mlflow_server, clean_env_module, tmp_path_factory)
    capsys.readouterr()

    # Unprotected (GitHub made the Environment when the workflow named it): refused, exit 11,
    # before anything was built or moved.
    github_api.respond("repos/get-environment", environment_answer(github_api, "production", []))
    assert job.deploy() == 11
    err = capsys.readouterr().err
    assert "has no required reviewers" in err and "mlgate setup-environment" in err
    assert job.untouched()

    # Protected, but the approvals cannot be read (no `actions: read`): refused.
    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["alice"])
    )
    github_api.fail_next(403, operation="actions/get-reviews-for-run")
    assert job.deploy() == 11
    assert "actions: read" in capsys.readouterr().err
    assert job.untouched()

    # Protected, approved for another Environment only (as after an admin's bypass): refused.
    github_api.respond(
        "actions/get-reviews-for-run", approvals_answer(github_api, [("bob", "approved", "qa")])
    )
    assert job.deploy() == 11
    assert "no approval of the Environment 'production'" in capsys.readouterr().err
    assert job.untouched()

    # Protected and approved by a reviewer: deployed, the reviewer recorded.
    github_api.respond(
        "actions/get-reviews-for-run",
        approvals_answer(github_api, [("alice", "approved", "production")]),
    )
    assert job.deploy() == 0, capsys.readouterr().err
    assert production(job.models) == job.version
    tags = job.tags()
    assert tags["mlgate.production.approved_by"] == "alice"
    assert tags["mlgate.production.environment"] == "production"
    assert "mlgate.production.unprotected_environment" not in tags


def test_an_unprotected_environment_deploys_only_with_the_recorded_opt_out(
    site, github_api, mlflow_server, clean_env_module, tmp_path_factory, capsys
) -> None:
    from tests.github_openapi import environment_answer

    job = InActions(site, github_api, mlflow_server, clean_env_module, tmp_path_factory)
    github_api.respond("repos/get-environment", environment_answer(github_api, "production", []))
    assert job.deploy({"MLGATE_DEPLOY_ALLOW_UNPROTECTED_ENVIRONMENT": "false"}) == 11
    assert job.untouched()
    capsys.readouterr()
    assert job.deploy({"MLGATE_DEPLOY_ALLOW_UNPROTECTED_ENVIRONMENT": "true"}) == 0, (
        capsys.readouterr().err
    )
    assert production(job.models) == job.version
    tags = job.tags()
    assert tags["mlgate.production.approved_by"] == "nobody"
    assert tags["mlgate.production.unprotected_environment"].startswith("true")
    assert tags["mlgate.production.environment"] == "production"
    # Only the Environment was read: nobody could have approved.
    assert "actions/get-reviews-for-run" not in {r.operation for r in github_api.requests}


def test_a_reset_store_and_a_tag_holding_another_model_never_reach_production(
    tmp_path_factory,
    site,
    mlflow_server,
    clean_env_module,
    docker_engine,
    container_registry,
    capsys,
    tmp_path,
) -> None:
    """Two MLflow stores share one image repository, as a reset store (the demo resets its
    store on every run) and the store before it do: both have a version 1 of the same model,
    trained with other params. The image repository already holds an image of the old store's
    version 1, under the new version's content-addressed tag, and the new version's tags name it
    (copied tags, or a writer with MLflow access). Deploy must build the new model's image."""
    from tests.conftest import make_project
    from tests.integration.test_concurrency import record_image, tiny_image

    _, env, _ = site
    old_project = make_project(tmp_path_factory.mktemp("store-a") / "project")
    old = Registry(old_project, mlflow_server, clean_env_module)
    old_v1 = old.train(*WEAK)
    store = tmp_path_factory.mktemp("store-b")
    new_project = make_project(store / "project")
    new = Registry(new_project, f"sqlite:///{store}/mlflow.db", clean_env_module)
    new.model = old.model  # the same model name in the reset store
    v1 = new.train()  # the default params: another booster
    assert v1 == old_v1 == "1"
    assert new.evaluate(v1) == 0 and new.promote(v1) == 0
    old_sha, old_run = booster_sha256(old, old_v1, tmp_path)
    new_sha, new_run = booster_sha256(new, v1, tmp_path)
    assert old_sha != new_sha and old_run != new_run

    repository = f"{container_registry.host}/mlgate/shared-{old.model}"
    env = env | {"MLGATE_DEPLOY_IMAGE": repository}
    # The old store's model, pushed under the tag the new version's model digest gives, and
    # labelled as the new model: only its bundle.json and booster tell.
    new_model = deploy.ModelDigest(new.model, v1, new_run, new_sha)
    squatter = tiny_image(
        docker_engine,
        repository,
        new_model.tag,
        container_registry,
        models=old,
        version=old_v1,
        labels=new_model.labels(),
    )
    record_image(new, v1, repository, squatter, tag=new_model.tag)
    capsys.readouterr()
    assert deploy_cli(new, env, v1) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "the recorded image" in out and "bundle.json names" in out
    assert "does not hold this model" in out and "rebuilding" in out
    deployed = new.client.get_model_version(new.model, v1).tags
    digest = deployed["mlgate.image.digest"]
    assert digest != squatter
    assert deployed["mlgate.production.image"] == f"{repository}@{digest}"
    held = image_holds(docker_engine, container_registry, f"{repository}@{digest}")
    assert held["labels"]["dev.mlgate.model.sha256"] == new_sha == held["bundle"]["model_sha256"]
    assert held["labels"]["dev.mlgate.model.run-id"] == new_run == held["bundle"]["run_id"]
    # The tag now names the new image: a re-run reuses it, verified, and builds nothing.
    images = images_of(docker_engine, repository)
    assert deploy_cli(new, env, v1) == 0
    assert "already in Production" in capsys.readouterr().out
    assert images_of(docker_engine, repository) == images


def test_demo_with_approval_ends_in_a_row_served_by_the_container(
    project, clean_env, docker_engine, base_image, serve_wheels, container_registry, capsys
) -> None:
    """`make demo APPROVE=1` with the real engine (no bridge network here) and registry: two
    rounds, then Production, then one row scored by the container. The oracle is the registry
    model's booster, loaded with MLflow's xgboost flavor, not the server's code."""
    import xgboost as xgb

    from mlgate.pipeline import demo
    from mlgate.pipeline.data import load_frame

    env = (
        clean_env
        | container_registry.env()
        | {
            "MLGATE_DEPLOY_IMAGE": f"{container_registry.host}/mlgate/demo-{project.parent.name}",
            "MLGATE_DEPLOY_BASE_IMAGE": base_image,
            "MLGATE_DEPLOY_WHEELS_DIR": str(serve_wheels),
        }
    )
    assert demo.main(["--params", str(project / "params.yaml"), "--approve"], env=env) == 0
    out = capsys.readouterr().out
    assert "skipped the image" not in out and "is now in Production, served by" in out
    line = next(x for x in out.splitlines() if x.startswith("scored one row at"))
    served = json.loads(line.split(": ", 1)[1])["predictions"]
    root = project / ".demo"
    uri = f"sqlite:///{root}/mlflow.db"
    c = mlflow.MlflowClient(tracking_uri=uri)
    held = c.get_model_version_by_alias("breast-cancer-xgb", "production")
    mlflow.set_tracking_uri(uri)
    booster = mlflow.xgboost.load_model(f"models:/breast-cancer-xgb/{held.version}")
    frame = load_frame(root / "data" / "breast_cancer.csv").drop(columns=["diagnosis"])
    expected = booster.predict(xgb.DMatrix(frame.head(1)))
    np.testing.assert_allclose(served, expected.tolist(), atol=1e-6)
    assert held.tags["mlgate.production.approved_by"] == "demo"


def test_scripts_start_a_registry_and_find_the_wheels(
    docker_engine, serve_wheels, tmp_path
) -> None:
    """scripts/start-docker.sh reuses the running engine and starts a registry that requires
    the given credentials (with --no-registry, as the `docker_engine` fixture calls it where no
    engine answers, no registry); scripts/download-wheels.sh prints the folder the tests build
    from."""
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    env = os.environ | {
        "STATE_DIR": str(tmp_path),
        "REGISTRY_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_USERNAME": "script-user",
        "REGISTRY_PASSWORD": "script-password",
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        [str(REPO / "scripts" / "start-docker.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    pid_file = tmp_path / "registry.pid"
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Docker engine: already running" in done.stdout
        url = f"http://127.0.0.1:{port}/v2/"
        assert requests.get(url, timeout=5).status_code == 401
        answer = requests.get(url, auth=("script-user", "script-password"), timeout=5)
        assert answer.status_code == 200
    finally:
        if pid_file.is_file():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    alone = tmp_path / "engine-alone"
    engine = subprocess.run(
        [str(REPO / "scripts" / "start-docker.sh"), "--no-registry"],
        env=env | {"STATE_DIR": str(alone)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert engine.returncode == 0, engine.stdout + engine.stderr
    # one line; the address when the session's engine is its own (DOCKER_HOST: CI's case)
    assert engine.stdout.splitlines() == [engine.stdout.strip()]
    assert engine.stdout.startswith("Docker engine: already running")
    assert list(alone.iterdir()) == [], "no registry started, nothing written"
    wheels = subprocess.run(
        [str(REPO / "scripts" / "download-wheels.sh")],
        env=os.environ | {"PYTHON": sys.executable, "CACHE": str(serve_wheels.parent)},
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    assert wheels.stdout.strip() == str(serve_wheels)
