"""mlgate demo: the pipeline on the embedded defaults, twice, then where to look.

It works in a scratch copy of the project (`.demo/`, rebuilt each time) with its own git history,
so your checkout is never changed: MLflow on a local sqlite store, the DVC remote committed in
dvc-remote/, the data set that ships with the project.

1. data version 1 -> model 1 -> evaluated (no champion yet) -> Staging;
2. a second data version (the first 40 rows withdrawn) -> model 2 -> evaluated against model 1
   on the same holdout rows -> promoted or rejected, with the decision table printed;
3. Production: it stops for an approval (`--approve`, or a y/N prompt stands in for the GitHub
   Environment's reviewers), then builds and pushes the serving image to the registry of
   deploy.image (default localhost:5000) when a Docker engine and that registry answer
   (`scripts/start-docker.sh` starts both; `scripts/build-base-image.sh` and
   `scripts/download-wheels.sh` make the build work offline), moves the model to Production,
   runs the image by digest (host networking when the engine has no bridge network) and
   scores one row from the container. Without an engine or registry it says what it skipped
   and how to enable it, and serves the bundle with `mlgate serve` instead.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlgate import cli
from mlgate.errors import GateFailed, MlgateError
from mlgate.pipeline import evaluate, promote, train
from mlgate.pipeline.data import load_frame
from mlgate.settings import Settings

WORKSPACE = ".demo"
# What a repository using mlgate holds, copied into the scratch workspace.
PROJECT_FILES = (
    "params.yaml",
    "schema",
    "data.dvc",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    "dvc-remote",
    ".gitignore",
)
WITHDRAWN_ROWS = 40


def scratch_project(source: Path) -> Path:
    """A fresh copy of the project's data, schema and params, as its own git repository."""
    root = source / WORKSPACE
    shutil.rmtree(root, ignore_errors=True)
    for name in PROJECT_FILES:
        src, dest = source / name, root / name
        if not src.exists():
            raise MlgateError(
                f"{name} is missing from {source}",
                fix="run the demo from the root of the mlgate repository",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "demo: data version 1")
    return root


def _git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=mlgate demo", "-c", "user.email=demo@mlgate.invalid"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def publish_second_version(settings: Settings) -> None:
    """Withdraw rows from the data, `dvc add` and `dvc push` the new version, commit data.dvc:
    what a data team does for a correction release."""
    from dvc.repo import Repo

    path = settings.path(settings.data.path)
    frame = load_frame(path).iloc[WITHDRAWN_ROWS:]
    frame.to_csv(path, index=False)
    with Repo(str(settings.project_dir)) as repo:
        repo.add([str(settings.path(Path(settings.data.path).parent))])
        repo.push()
    _git(settings.project_dir, "add", "-A")
    _git(settings.project_dir, "commit", "-q", "-m", "demo: data version 2")


def round_trip(settings: Settings, title: str) -> str:
    """Train, evaluate and promote once; return the new version."""
    print(f"\n=== {title}", flush=True)
    result = train.train(settings)
    train.report(result, settings)
    decision = evaluate.evaluate(settings, result.model_version)
    evaluate.report(decision, settings, fail=False)
    try:
        print(promote.promote(settings, result.model_version).message, flush=True)
    except GateFailed as exc:
        print(f"not promoted: {exc.message}", flush=True)
    return result.model_version


def approved(version: str, approve: bool) -> bool:
    if approve:
        print(f"approved (--approve): deploying version {version}", flush=True)
        return True
    if not sys.stdin.isatty():
        print(
            "not approved: nothing deployed (run `make demo APPROVE=1` or "
            "`mlgate demo --approve`, as a reviewer would approve the Environment)",
            flush=True,
        )
        return False
    answer = input(f"Approve deploying version {version} to Production? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def docker_unavailable(settings: Settings) -> str | None:
    """Why the image cannot be built and pushed here, or None when it can."""
    import requests

    from mlgate.pipeline.deploy import connect_docker, image_repository

    try:
        connect_docker()
    except MlgateError:
        return (
            "no Docker engine answers (start one with `scripts/start-docker.sh`, or set "
            "DOCKER_HOST)"
        )
    registry = image_repository(settings).split("/")[0]
    try:
        requests.get(f"http://{registry}/v2/", timeout=3)
    except requests.RequestException:
        return (
            f"no registry answers at {registry} (start one with `scripts/start-docker.sh`, "
            "or set MLGATE_DEPLOY_IMAGE to a registry you can push to)"
        )
    return None


def score_one_row(url: str, frame: Any, container: Any = None) -> dict[str, Any]:
    """POST the first row of `frame` (the model's inputs), print the answer and return it.
    Waits (bounded) for the server to listen; a `container` that exits is reported at once."""
    import json

    import requests

    row = frame.head(1)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = requests.post(f"{url}/invocations", json=body, timeout=5)
            break
        except requests.RequestException as exc:
            stopped = False
            if container is not None:
                container.reload()
                stopped = container.status in {"exited", "dead"}
            if stopped or time.monotonic() > deadline:
                logs = "" if container is None else container.logs().decode()[-2000:]
                raise MlgateError(
                    f"the model server at {url} did not answer ({type(exc).__name__})"
                    + (f"; its log ends:\n{logs}" if logs else ""),
                    fix="see the server's log above; the port must be free and reachable "
                    "(an engine without a bridge network needs host networking)",
                ) from exc
            time.sleep(0.5)
    answer.raise_for_status()
    print(f"scored one row at {url}/invocations: {json.dumps(answer.json())}", flush=True)
    scored: dict[str, Any] = answer.json()
    return scored


def serve_image(settings: Settings, image: Any, port: int) -> Any:  # docker Container
    """Run the image (by digest) read-only as its non-root user. The engine may have no bridge
    network (dockerd --bridge=none, as the tests and scripts/start-docker.sh start it): a
    published port is unreachable there, so the container joins the host's network and
    listens on the free loopback port `port` (MLGATE_SERVE_PORT; the HEALTHCHECK follows)."""
    from mlgate.pipeline.deploy import connect_docker, docker_errors, pull

    client = connect_docker()
    with docker_errors(f"running {image.pinned}"):
        # docker-py's run() takes no credentials: pull first (from the configured registry).
        if pull(client, image.pinned, settings.registry.auth_config()) is None:
            raise MlgateError(
                f"{image.pinned} is not in the registry", fix="re-run the demo: it pushes it"
            )
        bridge = bool(client.networks.list(names=["bridge"]))
        network = {"ports": {"8080/tcp": ("127.0.0.1", port)}} if bridge else {}
        return client.containers.run(
            image.pinned,
            detach=True,
            read_only=True,
            network_mode=None if bridge else "host",
            environment={"MLGATE_SERVE_PORT": "8080" if bridge else str(port)},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            **network,
        )


def production(settings: Settings, approve: bool) -> dict[str, Any] | None:
    """Deploy the staging version behind the approval and score one row; return the answer
    (None when nothing was approved)."""
    from mlgate.pipeline import deploy, export
    from mlgate.registry import tracking

    print("\n=== Production: the deploy job waits for the Environment's reviewers", flush=True)
    client = tracking.connect(settings)
    staged = tracking.version_by_alias(client, settings.model.name, "staging")
    if staged is None or not approved(str(staged.version), approve):
        return None
    version = str(staged.version)
    frame = load_frame(settings.path(settings.data.path)).drop(columns=[settings.data.target])
    port = _free_port()
    reason = docker_unavailable(settings)
    if reason is None:
        result = deploy.deploy(settings, version, approved_by=["demo"])
        print(result.message, flush=True)
        container = serve_image(settings, result.image, port)
        try:
            print(f"serving {result.image.pinned} on 127.0.0.1:{port}", flush=True)
            return score_one_row(f"http://127.0.0.1:{port}", frame, container)
        finally:
            container.remove(force=True)
    print(
        f"skipped the image and Production: {reason}; then re-run `make demo APPROVE=1`.\n"
        f"Serving version {version} with `mlgate serve` instead:",
        flush=True,
    )
    out = settings.project_dir / "bundle"
    export.export_bundle(
        client, settings.model.name, version, out, compiler=settings.serve.compiler
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "mlgate", "serve", "--bundle", str(out), "--port", str(port)],
        cwd=settings.project_dir,
    )
    try:
        return score_one_row(f"http://127.0.0.1:{port}", frame)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate demo: two data versions through train, evaluate and promote, in .demo/, then
    Production behind an approval."""
    parser = cli.stage_parser("demo", main.__doc__)
    parser.add_argument(
        "--approve",
        action="store_true",
        help="approve the deployment (stands in for the Environment's reviewers)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        root = scratch_project(settings.project_dir)
        settings = replace(settings, project_dir=root, params_file=root / "params.yaml")
        # A sandbox, not the repository's Production: --approve stands in for the Environment's
        # reviewers (deploy's approval check), also when the demo runs in an Actions job (CI).
        settings = replace(settings, github=replace(settings.github, actions=False))
        round_trip(settings, "data version 1: first model")
        publish_second_version(settings)
        version = round_trip(settings, "data version 2: candidate against the champion")
        production(settings, args.approve)
        uri = settings.tracking_uri
        ui = (
            f"{shlex.quote(str(Path(sys.executable).with_name('mlflow')))} ui "
            f"--backend-store-uri {uri}"
        )
        if uri.startswith("sqlite:"):
            ui += f" --default-artifact-root {(root / 'mlartifacts').as_uri()}"
        print(f"""
Done. Both rounds are in the MLflow store of the scratch project {root}:
  runs, metrics, lineage tags, decisions (decision/ artifacts: JSON, curves, evidently reports)
Look at it in the MLflow UI:
  {ui}
  then open http://127.0.0.1:5000/#/models/{settings.model.name}/versions/{version}
Trace a version back to its commit, data, run and decision:
  cd {shlex.quote(str(root))} && {shlex.quote(str(Path(sys.executable).with_name("mlgate")))} \
lineage {version}""")
        return 0

    return cli.run(action)
