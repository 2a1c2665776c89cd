"""The workflows, run for real by act in host mode against the session's MLflow and S3 servers.

What act cannot do, and how the harness stands in (see ../../TESTBED notes in the README):
- `uses: $/X` (GitHub's self-reference: mlgate's own repository at the commit the workflow was
  called at) is rejected by act. The harness rewrites it to `mlgate/mlgate/X@SHA` and maps that
  repository to the local copy with --local-repository: the resolution GitHub itself performs.
- Remote actions cannot be downloaded: actions/setup-python, actions/cache/restore and /save,
  and the artifact actions are mapped to the stand-ins in stand-ins/; actions/checkout of the
  caller's repository is act's own.
- The cache stand-ins keep what they save in one store per exported mlgate commit, as GitHub
  keeps one cache per repository: the first job builds mlgate's environment and saves it, every
  later job (of any test in the module) restores it, as on a runner with a warm cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml

from mlgate.gate.decision import DECISION_ARTIFACT
from tests.conftest import REPO, git, make_project, push_data
from tests.github_openapi import VALID_TOKEN, approvals_answer, environment_answer
from tests.integration.test_train import LINEAGE_TAGS
from tests.tls import TlsCluster, tls_cluster

ACT = Path(sys.executable).parent / "act"
STAND_INS = Path(__file__).parent / "stand-ins"
SELF_REF = re.compile(r"uses: \$/(\S+)")


@dataclass
class ActResult:
    returncode: int
    log: str


def pinned(action: str) -> str:
    """`owner/repo@sha` as pinned in mlgate's own files, so the mapping follows the pins."""
    for path in REPO.glob(".github/**/*.yml"):
        if match := re.search(rf"uses: ({re.escape(action)}@[0-9a-f]{{40}})", path.read_text()):
            return match.group(1)
    raise AssertionError(f"{action} is not used")


def export_mlgate(dest: Path) -> tuple[Path, str]:
    """mlgate's working tree (tracked and untracked-not-ignored files) as a git repository,
    with `$/` mapped to `mlgate/mlgate/...@SHA`; returns the path and SHA."""
    files = git(REPO, "ls-files", "-co", "--exclude-standard").splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.email", "test@mlgate.invalid")
    git(dest, "config", "user.name", "mlgate tests")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "mlgate")
    sha = git(dest, "rev-parse", "HEAD")
    for path in (dest / ".github").rglob("*.yml"):
        path.write_text(SELF_REF.sub(rf"uses: mlgate/mlgate/\1@{sha}", path.read_text()))
    git(dest, "commit", "-q", "-am", "act: resolve $/ as GitHub does")
    return dest, sha


def run_act(
    repo: Path,
    workflow: str,
    *,
    mlgate: tuple[Path, str],
    tracking_uri: str,
    secrets: dict[str, str] | None = None,
    tmp: Path,
    event_name: str = "push",
    payload: dict | None = None,
    env: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
) -> ActResult:
    source, sha = mlgate
    tmp.mkdir(parents=True, exist_ok=True)
    actions_cache = source.parent / f"{source.name}-actions-cache"
    actions_cache.mkdir(exist_ok=True)
    cache_sha = pinned("actions/cache/restore").split("@")[1]
    assert pinned("actions/cache/save") == f"actions/cache/save@{cache_sha}"
    event = tmp / "event.json"
    head = git(repo, "rev-parse", "HEAD")
    event.write_text(
        json.dumps(
            payload
            or {
                "ref": "refs/heads/main",
                "before": git(repo, "rev-parse", "HEAD~1"),
                "after": head,
                "head_commit": {"id": head, "message": git(repo, "log", "-1", "--format=%s")},
                "repository": {"full_name": "acme/models", "default_branch": "main"},
            }
        )
    )
    args = [
        str(ACT),
        event_name,
        "-W",
        workflow,
        "-e",
        str(event),
        "-P",
        "ubuntu-latest=-self-hosted",
        "--action-offline-mode",
        "--no-cache-server",
        "--local-repository",
        f"mlgate/mlgate@{sha}={source}",
        "--local-repository",
        f"{pinned('actions/setup-python')}={STAND_INS / 'setup-python'}",
        "--local-repository",
        f"actions/cache@{cache_sha}={STAND_INS / 'cache'}",
        "--local-repository",
        f"{pinned('actions/upload-artifact')}={STAND_INS / 'upload-artifact'}",
        "--local-repository",
        f"{pinned('actions/download-artifact')}={STAND_INS / 'download-artifact'}",
        "--env",
        f"ACT_STAND_IN_ARTIFACTS={tmp / 'artifacts'}",
        "--env",
        f"ACT_STAND_IN_CACHE={actions_cache}",
        "--var",
        f"MLFLOW_TRACKING_URI={tracking_uri}",
        # the host's warm uv cache, for the job that builds mlgate's environment
        "--env",
        f"UV_CACHE_DIR={os.environ.get('UV_CACHE_DIR', Path.home() / '.cache/uv')}",
        "--env",
        "UV_SYSTEM_CERTS=1",
    ]
    for name, value in (env or {}).items():
        args += ["--env", f"{name}={value}"]
    for name, value in (variables or {}).items():
        args += ["--var", f"{name}={value}"]
    for name, value in (secrets or {}).items():
        args += ["-s", f"{name}={value}"]
    done = subprocess.run(
        args,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HOME": str(Path.home())},
    )
    (tmp / "act.log").write_text(done.stdout + done.stderr)
    return ActResult(done.returncode, done.stdout + done.stderr)


def version_for_commit(server: str, model: str, commit: str):
    mlflow.set_tracking_uri(server)
    client = mlflow.MlflowClient()
    found = [
        v
        for v in client.search_model_versions(f"name='{model}'")
        if v.tags.get("mlgate.git.commit") == commit
    ]
    return found


@pytest.fixture(scope="module")
def mlgate_source(tmp_path_factory) -> tuple[Path, str]:
    return export_mlgate(tmp_path_factory.mktemp("mlgate"))


def caller_repo(tmp_path: Path, mlgate_source: tuple[Path, str]) -> Path:
    """This repository as its users have it: mlgate's files, remote origin acme/models."""
    repo = tmp_path / "repo"
    shutil.copytree(mlgate_source[0], repo)
    git(repo, "remote", "add", "origin", "https://github.com/acme/models.git")
    return repo


def data_change(
    tmp_path, mlgate_source, server, frame, message, **act
) -> tuple[str, str, ActResult]:
    """Push a data version in a copy of this repository and run its caller workflow."""
    repo = caller_repo(tmp_path, mlgate_source)
    md5 = push_data(repo, frame, message=message)
    result = run_act(
        repo,
        ".github/workflows/on-data-change.yml",
        mlgate=mlgate_source,
        tracking_uri=server,
        tmp=tmp_path,
        **act,
    )
    return md5, git(repo, "rev-parse", "HEAD"), result


def test_a_data_change_runs_the_pipeline_to_production(
    tmp_path,
    mlgate_source,
    mlflow_server,
    breast_cancer,
    github_api,
    base_image,
    serve_wheels,
    container_registry,
) -> None:
    """This repository's caller: train, evaluate, promote, then deploy (act does not hold the
    job for the Environment's reviewers; the approvers are read from the API stand-in): the
    image is pushed to the registry and the version is in Production."""
    image = f"{container_registry.host}/mlgate/breast-cancer-xgb"
    # The Environment the deploy job is bound to has a required reviewer, who approved the run.
    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["octocat"])
    )
    github_api.respond(
        "actions/get-reviews-for-run",
        approvals_answer(github_api, [("octocat", "approved", "production")]),
    )
    md5, commit, result = data_change(
        tmp_path,
        mlgate_source,
        mlflow_server,
        breast_cancer.iloc[30:],
        "data: drop 30 rows",
        variables={"MLGATE_IMAGE": image, "MLGATE_BASE_IMAGE": base_image},
        env={"MLGATE_DEPLOY_WHEELS_DIR": str(serve_wheels), "GITHUB_API_URL": github_api.url},
        secrets={"GITHUB_TOKEN": VALID_TOKEN, **container_registry.env()},
    )
    assert result.returncode == 0, result.log[-5000:]
    assert "Job succeeded" in result.log
    [version] = version_for_commit(mlflow_server, "breast-cancer-xgb", commit)
    assert set(version.tags) >= LINEAGE_TAGS, LINEAGE_TAGS - set(version.tags)
    assert version.tags["mlgate.data.md5"] == md5
    assert version.tags["mlgate.data.rows"] == "539"
    assert version.tags["mlgate.git.dirty"] == "false"
    assert version.tags["mlgate.github.repository"] == "acme/models"
    assert version.tags["mlgate.github.event"] == "push"
    assert re.search(r"::set-output:: model-uri=models:/breast-cancer-xgb/\d+", result.log)
    assert "::set-output:: verdict=pass" in result.log
    assert (
        f"upload-artifact stand-in: mlgate-decision-v{version.version}/decision.json" in result.log
    )
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    staged = client.get_model_version_by_alias("breast-cancer-xgb", "staging")
    assert staged.version == version.version
    assert staged.tags["mlgate.promotion"] == "staging"
    live = client.get_model_version_by_alias("breast-cancer-xgb", "production")
    assert live.version == version.version and live.current_stage == "Production"
    assert live.tags["mlgate.production.image"].startswith(f"{image}@sha256:")
    assert live.tags["mlgate.production.approved_by"] == "octocat"
    assert live.tags["mlgate.production.run_url"].startswith("https://github.com/acme/models/")
    assert {"repos/get-environment", "actions/get-reviews-for-run"} <= {
        r.operation for r in github_api.requests
    }
    assert live.tags["mlgate.production.environment"] == "production"
    assert container_registry.password not in result.log, "registry password never logged"


@pytest.fixture(scope="module")
def dask_tls(tmp_path_factory, s3_server) -> Iterator[TlsCluster]:
    """A Dask cluster that requires TLS (tests/tls.py), started after the S3 stand-in: its
    worker reads the consumer's data from S3 with the credentials of its own environment."""
    with tls_cluster(tmp_path_factory.mktemp("dask-tls")) as running:
        yield running


def test_a_consumer_repository_calls_the_reusable_workflow(
    tmp_path, mlgate_source, mlflow_server, s3_server, dask_tls
) -> None:
    """Another repository, with its data on S3, calls mlgate's pipeline by SHA: every job
    gets the secrets it needs to pull from S3, and the first model reaches Staging. It trains
    and evaluates on its Dask cluster, which requires TLS (issue 21): the address is the input
    dask-scheduler, the client's material the three secrets DASK_TLS_CA / CERT / KEY (PEM
    text), which only the train and evaluate jobs get; promote, which never reaches the
    cluster, runs without them."""
    import boto3
    from dvc.repo import Repo

    consumer = make_project(tmp_path / "consumer")
    git(consumer, "remote", "add", "origin", "https://github.com/acme/consumer.git")
    params = yaml.safe_load((consumer / "params.yaml").read_text())
    params["model"]["name"] = "consumer-xgb"
    params.setdefault("train", {})["engine"] = "dask"
    (consumer / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="consumer-data")
    with Repo(str(consumer)) as repo:
        repo.pull(remote="embedded")
        with repo.config.edit() as conf:
            conf["remote"] = {
                "storage": {"url": "s3://consumer-data/dvc", "endpointurl": s3_server}
            }
            conf["core"]["remote"] = "storage"
    with Repo(str(consumer)) as repo:
        repo.push()
    shutil.rmtree(consumer / "dvc-remote")
    shutil.rmtree(consumer / ".dvc" / "cache")
    workflow = consumer / ".github/workflows/pipeline.yml"
    workflow.parent.mkdir(parents=True)
    example = (REPO / "examples/consumer/.github/workflows/pipeline.yml").read_text()
    # Deployment is exercised by this repository's own caller run above.
    example = example.replace(
        'with: {tracking-uri: "${{ vars.MLFLOW_TRACKING_URI }}"}',
        'with: {tracking-uri: "${{ vars.MLFLOW_TRACKING_URI }}", deploy: false, '
        'dask-scheduler: "${{ vars.DASK_SCHEDULER }}"}',
    )
    tls = "".join(f"      {name}: ${{{{ secrets.{name} }}}}\n" for name in dask_tls.secrets())
    example = example.replace(
        "      AWS_SECRET_ACCESS_KEY: ${{ secrets.AWS_SECRET_ACCESS_KEY }}\n",
        "      AWS_SECRET_ACCESS_KEY: ${{ secrets.AWS_SECRET_ACCESS_KEY }}\n" + tls,
    )
    assert "deploy: false" in example and "DASK_TLS_KEY: ${{ secrets.DASK_TLS_KEY }}" in example
    workflow.write_text(re.sub(r"@0{40}", f"@{mlgate_source[1]}", example))
    git(consumer, "add", "-A")
    git(consumer, "commit", "-q", "-m", "train with mlgate")
    commit = git(consumer, "rev-parse", "HEAD")

    result = run_act(
        consumer,
        ".github/workflows/pipeline.yml",
        mlgate=mlgate_source,
        tracking_uri=mlflow_server,
        tmp=tmp_path,
        secrets={
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            **dask_tls.secrets(),
        },
        variables={"DASK_SCHEDULER": dask_tls.address},
    )
    assert result.returncode == 0, result.log[-5000:]
    [version] = version_for_commit(mlflow_server, "consumer-xgb", commit)
    assert set(version.tags) >= LINEAGE_TAGS, LINEAGE_TAGS - set(version.tags)
    # trained on the cluster (the dask engine's lineage: the objects its worker read from S3),
    # and evaluated there: evidently's inputs came from the workers (their record says so)
    assert version.tags["mlgate.data.objects"] == "1"
    mlflow.set_tracking_uri(mlflow_server)
    about = mlflow.artifacts.download_artifacts(
        run_id=version.run_id,
        artifact_path=f"{DECISION_ARTIFACT}/evidently-inputs.json",
        dst_path=str(tmp_path / "about"),
    )
    assert json.loads(Path(about).read_text())["engine"] == "dask"
    for pem in dask_tls.secrets().values():
        assert pem.splitlines()[1] not in result.log, "no PEM reaches the log"
    assert version.tags["mlgate.data.remote"] == "storage"
    assert version.tags["mlgate.data.remote_url"] == "s3://consumer-data/dvc"
    assert version.tags["mlgate.github.repository"] == "acme/consumer"
    assert "testing" not in json.dumps(dict(version.tags)), "secrets never reach MLflow"
    staged = mlflow.MlflowClient().get_model_version_by_alias("consumer-xgb", "staging")
    assert staged.version == version.version
    # The deploy job did not run (as when its approval is rejected): nothing else moved.
    with pytest.raises(mlflow.exceptions.MlflowException, match="production"):
        mlflow.MlflowClient().get_model_version_by_alias("consumer-xgb", "production")
    assert not [k for k in staged.tags if k.startswith(("mlgate.production.", "mlgate.image."))]


def test_bad_data_fails_the_job_and_registers_nothing(
    tmp_path, mlgate_source, mlflow_server, breast_cancer
) -> None:
    bad = breast_cancer.copy()
    bad.loc[3, "mean_radius"] = -1.0
    _, commit, result = data_change(
        tmp_path, mlgate_source, mlflow_server, bad, "data: a negative radius"
    )
    assert result.returncode != 0
    assert "mean_radius: greater_than_or_equal_to(0) failed 1x" in result.log
    assert "::error title=data validation::mean_radius" in result.log
    assert version_for_commit(mlflow_server, "breast-cancer-xgb", commit) == []


def pull_request_event(repo: Path, number: int) -> dict:
    head = git(repo, "rev-parse", "HEAD")
    repository = {"full_name": "acme/models", "default_branch": "main"}
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": "data-update", "sha": head, "repo": repository},
            "base": {"ref": "main", "sha": git(repo, "rev-parse", "HEAD~1"), "repo": repository},
        },
        "repository": repository,
    }


def test_the_pr_gate_comments_once_and_is_the_check(
    tmp_path, mlgate_source, mlflow_server, breast_cancer, github_api, clean_env
) -> None:
    """A pull request with new data: a candidate is trained and evaluated against the champion
    without moving any alias, and one comment is created; a later push that fails the gate
    edits that comment and fails the check."""
    from tests.integration.test_gate import Registry

    repo = caller_repo(tmp_path, mlgate_source)
    champion = Registry(repo, mlflow_server, clean_env)  # a model of this repository's own
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["name"] = champion.model
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-qam", f"model: {champion.model}")
    v1 = champion.train()
    assert champion.evaluate(v1) == 0 and champion.promote(v1) == 0
    push_data(repo, breast_cancer.iloc[10:], message="data: drop 10 rows")
    gate = dict(
        mlgate=mlgate_source,
        tracking_uri=mlflow_server,
        event_name="pull_request",
        env={"GITHUB_API_URL": github_api.url},
        secrets={"GITHUB_TOKEN": VALID_TOKEN},
    )

    # the pull request's head as GitHub answers it: the commit each run gates
    github_api.heads[("acme/models", 12)] = git(repo, "rev-parse", "HEAD")
    first = run_act(
        repo,
        ".github/workflows/on-pull-request.yml",
        payload=pull_request_event(repo, 12),
        tmp=tmp_path / "first",
        **gate,
    )
    assert first.returncode == 0, first.log[-5000:]
    (comment,) = github_api.issue_comments("acme/models", 12)
    assert comment["body"].startswith("<!-- mlgate:pr-gate key=params.yaml: -->")
    assert "✅ Gate PASS" in comment["body"]
    assert f"`models:/{champion.model}/{v1}` (staging)" in comment["body"]
    assert "AUC difference" in comment["body"]
    [candidate] = version_for_commit(mlflow_server, champion.model, git(repo, "rev-parse", "HEAD"))
    assert candidate.tags["mlgate.github.event"] == "pull_request"
    assert candidate.tags["mlgate.decision.verdict"] == "pass"
    assert not candidate.aliases, "the PR gate never moves an alias"
    assert champion.staging() == v1

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.setdefault("gate", {})["min_auc"] = 0.9999
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-qam", "gate: demand the impossible")
    github_api.heads[("acme/models", 12)] = git(repo, "rev-parse", "HEAD")
    second = run_act(
        repo,
        ".github/workflows/on-pull-request.yml",
        payload=pull_request_event(repo, 12),
        tmp=tmp_path / "second",
        **gate,
    )
    assert second.returncode != 0, "a failed gate fails the required check"
    # The gate job's one step says why; act has once dropped the output of that 4 ms step, so
    # its failure line (which act always prints) stands in for the echo.
    assert "train: success, evaluate: failure" in second.log or re.search(
        r"Failure - Main Verdict", second.log
    ), second.log[-5000:]
    assert "evaluate: failure" not in first.log and "Job succeeded" in first.log
    (comment,) = github_api.issue_comments("acme/models", 12)
    assert "❌ Gate FAIL" in comment["body"] and "| >= 0.9999 | ❌ fail |" in comment["body"]
    assert [r.method for r in github_api.requests if r.method != "GET"] == ["POST", "PATCH"]
    assert champion.staging() == v1


def test_the_drift_monitor_alerts_once_on_a_schedule(
    tmp_path, mlgate_source, mlflow_server, breast_cancer, github_api, clean_env
) -> None:
    """The example caller, on its schedule: the check job reads the prediction log the serving
    image wrote (inputs shifted on purpose), finds drift, uploads the report; the alert job
    dispatches the retraining workflow and opens one issue through the API stand-in."""
    from tests.integration.test_gate import Registry
    from tests.integration.test_monitor import features, log_requests, shifted

    repo = caller_repo(tmp_path, mlgate_source)
    models = Registry(repo, mlflow_server, clean_env)
    version = models.train()
    sink = tmp_path / "predictions"
    log_requests(sink, models.model, version, features(shifted(breast_cancer.head(300))))
    example = (REPO / "examples/consumer/.github/workflows/monitor.yml").read_text()
    caller = example.replace(
        "retrain-workflow: pipeline.yml",
        f"retrain-workflow: pipeline.yml\n      model-name: {models.model}\n"
        f'      model-version: "{version}"',
    )
    assert f'model-version: "{version}"' in caller
    workflow = repo / ".github/workflows/monitor-example.yml"
    workflow.write_text(re.sub(r"@0{40}", f"@{mlgate_source[1]}", caller))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "monitor with mlgate")

    result = run_act(
        repo,
        ".github/workflows/monitor-example.yml",
        mlgate=mlgate_source,
        tracking_uri=mlflow_server,
        tmp=tmp_path / "act",
        event_name="schedule",
        payload={
            "schedule": "17 6 * * *",
            "repository": {"full_name": "acme/models", "default_branch": "main"},
        },
        env={"GITHUB_API_URL": github_api.url},
        variables={"MLGATE_LOG_SINK": str(sink)},
        secrets={"GITHUB_TOKEN": VALID_TOKEN},
    )
    assert result.returncode == 0, result.log[-5000:]
    assert "upload-artifact stand-in: mlgate-drift-report/drift.html" in result.log
    [(repository, operation, body)] = github_api.dispatches
    assert (repository, operation) == ("acme/models", "actions/create-workflow-dispatch")
    assert body["workflow_id"] == "pipeline.yml"
    [issue] = github_api.issues["acme/models"]
    assert f"{models.model} version {version} went stale" in issue["title"]
    assert "mean_radius" in issue["body"]
    tags = models.client.get_model_version(models.model, version).tags
    assert tags["mlgate.drift.stale"] == "true"
