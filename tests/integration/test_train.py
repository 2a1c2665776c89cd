"""Training against a real MLflow server: what is logged, what is registered, what is not."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from mlgate.gate.metrics import classification_metrics
from mlgate.pipeline import demo, lineage, train
from mlgate.pipeline.split import holdout_from_keys
from tests.conftest import git, push_data

LINEAGE_TAGS = {
    "mlgate.git.commit",
    "mlgate.git.dirty",
    "mlgate.data.md5",
    "mlgate.data.dvc_file",
    "mlgate.data.path",
    "mlgate.data.file_md5",
    "mlgate.data.remote",
    "mlgate.data.remote_url",
    "mlgate.data.object_url",
    "mlgate.data.rows",
    "mlgate.data.positive_rate",
    "mlgate.data.class_counts",
    "mlgate.split.seed",
    "mlgate.split.holdout_digest",
    "mlgate.split.holdout_rows",
    "mlgate.model.class",
    "mlgate.model.library",
    "mlgate.params.sha256",
    "mlgate.python",
    "mlgate.version",
    "mlgate.run_id",
    "mlgate.metrics.holdout_auc",
    "mlflow.source.git.commit",
    "mlgate.github.repository",
    "mlgate.github.run_url",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def train_args(project: Path, server: str, model: str, *extra: str) -> list[str]:
    return [
        "--params",
        str(project / "params.yaml"),
        "--tracking-uri",
        server,
        "--model-name",
        model,
        "--set",
        f"tracking.experiment={model}",
        *extra,
    ]


def client(server: str) -> mlflow.MlflowClient:
    mlflow.set_tracking_uri(server)
    return mlflow.MlflowClient()


def assert_nothing_left(server: str, model: str) -> None:
    """No run of the experiment is left RUNNING (or exists at all) and no version exists."""
    c = client(server)
    experiment = c.get_experiment_by_name(model)
    if experiment is not None:
        runs = c.search_runs([experiment.experiment_id])
        assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
        assert runs == [], "bad input must be refused before a run starts"
    assert c.search_model_versions(f"name='{model}'") == []


# Credentials a job's environment holds; none may reach a tag, a param or an artifact.
SECRETS = {
    "GITHUB_TOKEN": "ghs_sentinelGitHubToken0123456789",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "sentinel-oidc-request-token",
    "REGISTRY_PASSWORD": "sentinel-registry-password",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_server, clean_env_module):
    """One real training run through `mlgate train`, shared by the assertions below."""
    from tests.conftest import make_project

    root = tmp_path_factory.mktemp("trained")
    project = make_project(root / "project")
    model = unique("lineage")
    env = {
        **clean_env_module,
        "GITHUB_OUTPUT": str(root / "out"),
        "GITHUB_STEP_SUMMARY": str(root / "summary"),
        "GITHUB_REPOSITORY": "acme/models",
        "GITHUB_RUN_ID": "42",
        "GITHUB_SHA": git(project, "rev-parse", "HEAD"),
        **SECRETS,
    }
    saved, argv = dict(os.environ), sys.argv[:]
    os.environ.update(SECRETS)  # where MLflow and DVC would read them from, too
    # as `mlgate train` runs: MLflow reads its git tags from the checkout holding argv[0],
    # the `mlgate` script (in mlgate's own checkout here)
    sys.argv[:] = [str(Path(sys.executable).parent / "mlgate"), "train"]
    try:
        assert train.main(train_args(project, mlflow_server, model), env=env) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.argv[:] = argv
    outputs = dict(
        line.split("=", 1) for line in (root / "out").read_text().splitlines() if "=" in line
    )
    c = client(mlflow_server)
    version = c.get_model_version(model, outputs["model-version"])
    return {
        "project": project,
        "model": model,
        "outputs": outputs,
        "version": version,
        "run": c.get_run(version.run_id),
        "client": c,
        "root": root,
        "server": mlflow_server,
    }


def test_outputs_and_summary(trained) -> None:
    out = trained["outputs"]
    assert out["model-uri"] == f"models:/{trained['model']}/{out['model-version']}"
    assert out["run-id"] == trained["version"].run_id
    assert (
        out["data-hash"]
        == yaml.safe_load((trained["project"] / "data.dvc").read_text())["outs"][0]["md5"]
    )
    summary = (trained["root"] / "summary").read_text()
    assert "Data valid" in summary and "Trained and registered" in summary


def test_run_finished_with_params_metrics_and_inputs(trained) -> None:
    run = trained["run"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["xgb.max_depth"] == "3" and params["num_boost_round"] == "400"
    assert params["split.seed"] == "42" and params["model.num_features"] == "30"
    assert params["metrics.threshold"] == "0.5" and params["metrics.threshold_rule"] == "0.5"
    assert trained["version"].tags["mlgate.threshold"] == "0.5"
    assert trained["version"].tags["mlgate.threshold.rule"] == "0.5"
    metrics = run.data.metrics
    for name in ("auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall"):
        assert f"holdout_{name}" in metrics
        for slice_name in ("large_masses", "small_masses", "smooth_texture"):
            assert f"slice_{slice_name}_{name}" in metrics
    assert metrics["holdout_auc"] > 0.95
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"train", "validation", "holdout"}
    sources = {json.loads(i.dataset.source)["uri"] for i in run.inputs.dataset_inputs}
    assert sources == {run.data.tags["mlgate.data.object_url"]}


def test_version_carries_every_lineage_tag(trained) -> None:
    version, project = trained["version"], trained["project"]
    assert set(version.tags) >= LINEAGE_TAGS
    tags = version.tags
    assert tags["mlgate.git.commit"] == git(project, "rev-parse", "HEAD")
    assert tags["mlgate.git.dirty"] == "false"
    assert (
        tags["mlgate.data.remote"] == "embedded" and tags["mlgate.data.remote_url"] == "dvc-remote"
    )
    assert tags["mlgate.data.rows"] == "569"
    assert tags["mlgate.data.class_counts"] == "0:357,1:212"
    assert tags["mlgate.model.class"] == "xgboost.core.Booster"
    assert tags["mlgate.github.run_url"] == "https://github.com/acme/models/actions/runs/42"
    assert tags["mlgate.data.md5"] in version.description
    assert version.status == "READY"


def test_mlflows_git_tags_name_the_project_not_mlgates_checkout(trained) -> None:
    """MLflow tags a run with the git checkout of `sys.argv[0]` (here pytest's, in mlgate's own
    checkout; in a workflow the `mlgate` script's): the run's git tags must be the project's."""
    tags, project = trained["run"].data.tags, trained["project"]
    assert tags["mlflow.source.git.commit"] == git(project, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == git(project, "symbolic-ref", "--short", "HEAD")
    assert tags["mlflow.source.git.repoURL"] == "https://github.com/acme/models"


def test_model_reloads_with_signature_example_and_pinned_environment(trained, tmp_path) -> None:
    uri = trained["outputs"]["model-uri"]
    model = mlflow.pyfunc.load_model(uri)
    inputs = model.metadata.get_input_schema().to_dict()
    assert {c["type"] for c in inputs} == {"double"}, "integer columns would truncate floats"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    assert (local / "input_example.json").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements == lineage.serving_requirements()
    assert "python:" in (local / "python_env.yaml").read_text()


def test_holdout_is_reproduced_from_what_was_logged(trained, tmp_path) -> None:
    """The next stage scores champion and candidate on these exact rows."""
    run, c = trained["run"], trained["client"]
    manifest = json.loads(
        Path(c.download_artifacts(run.info.run_id, "split/holdout.json", str(tmp_path))).read_text()
    )
    frame = pd.read_csv(trained["project"] / manifest["data_path"])
    holdout = holdout_from_keys(
        frame,
        manifest["holdout"],
        id_column=None,
        digest=run.data.tags["mlgate.split.holdout_digest"],
    )
    assert len(holdout) == int(run.data.tags["mlgate.split.holdout_rows"])
    model = mlflow.pyfunc.load_model(trained["outputs"]["model-uri"])
    proba = np.asarray(model.predict(holdout.drop(columns=["diagnosis"]).astype("float64")))
    again = classification_metrics(holdout["diagnosis"].to_numpy(), proba, 0.5)
    assert again["auc"] == pytest.approx(run.data.metrics["holdout_auc"], abs=1e-9)
    assert again["log_loss"] == pytest.approx(run.data.metrics["holdout_log_loss"], rel=1e-5)


def test_artifacts_for_the_auditor(trained) -> None:
    c, run_id = trained["client"], trained["run"].info.run_id
    paths = {
        a.path
        for folder in ("config", "environment", "split", "validation")
        for a in c.list_artifacts(run_id, folder)
    }
    assert paths == {
        "config/params.yaml",
        "config/breast_cancer.yaml",
        "environment/installed.txt",
        "split/holdout.json",
        "validation/report.json",
    }


def test_a_second_data_version_registers_a_second_version(
    trained, mlflow_server, breast_cancer, clean_env
) -> None:
    project, model = trained["project"], trained["model"]
    md5 = push_data(project, breast_cancer.iloc[20:])
    assert train.main(train_args(project, mlflow_server, model), env=clean_env) == 0
    versions = client(mlflow_server).search_model_versions(f"name='{model}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    newest = max(versions, key=lambda v: int(v.version))
    assert newest.tags["mlgate.data.md5"] == md5 and newest.tags["mlgate.data.rows"] == "549"


def test_mlflow_unreachable_fails_after_bounded_retries(project, clean_env, capsys) -> None:
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    code = train.main(
        train_args(
            project,
            dead,
            unique("dead"),
            "--set",
            "tracking.retries=2",
            "--set",
            "tracking.backoff=0.05",
        ),
        env=clean_env,
    )
    err = capsys.readouterr().err
    assert code == 5
    assert f"MLflow tracking server {dead} is unreachable after 3 attempts" in err
    assert "fix: start the server" in err


def corrupt(breast_cancer: pd.DataFrame, how: str) -> pd.DataFrame:
    frame = breast_cancer.copy()
    if how == "missing-column":
        return frame.drop(columns=["worst_area"])
    if how == "wrong-dtype":
        frame["mean_texture"] = frame["mean_texture"].astype(str).str.replace("1", "x")
        return frame
    if how == "nan-label":
        frame["diagnosis"] = frame["diagnosis"].astype(float)
        frame.loc[4, "diagnosis"] = np.nan
        return frame
    if how == "non-binary-label":
        frame.loc[4, "diagnosis"] = 2
        return frame
    if how == "single-class":
        return frame[frame["diagnosis"] == 0]
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["missing-column", "wrong-dtype", "nan-label", "non-binary-label", "single-class"]
)
def test_schema_violations_exit_4_and_leave_nothing(
    how, project, breast_cancer, mlflow_server, clean_env, capsys
) -> None:
    push_data(project, corrupt(breast_cancer, how))
    model = unique(how)
    assert train.main(train_args(project, mlflow_server, model), env=clean_env) == 4
    out, err = capsys.readouterr()
    assert "data invalid" in out and "fix:" in err
    assert_nothing_left(mlflow_server, model)


def test_empty_data_file_exits_3_and_leaves_nothing(
    project, mlflow_server, clean_env, capsys
) -> None:
    push_data(project, raw=b"")
    model = unique("empty")
    assert train.main(train_args(project, mlflow_server, model), env=clean_env) == 3
    assert "is empty" in capsys.readouterr().err
    assert_nothing_left(mlflow_server, model)


@pytest.mark.parametrize("damage", ["missing", "malformed", "object-missing"])
def test_bad_data_dvc_exits_3_and_leaves_nothing(
    damage, project, mlflow_server, clean_env, capsys
) -> None:
    if damage == "missing":
        (project / "data.dvc").unlink()
    elif damage == "malformed":
        (project / "data.dvc").write_text("outs:\n- path: data\n")
    else:
        shutil.rmtree(project / "dvc-remote")
    model = unique(damage)
    assert train.main(train_args(project, mlflow_server, model), env=clean_env) == 3
    assert "fix:" in capsys.readouterr().err
    assert_nothing_left(mlflow_server, model)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.num_boost_rounds=3", "did you mean"),
        ("train.params.max_dept=3", "did you mean"),
        (
            "metrics.slices.big=no_such_column > 3",
            "metrics.slices.big ('no_such_column > 3') cannot",
        ),
    ],
)
def test_bad_params_exit_2_and_leave_nothing(
    override, message, project, mlflow_server, clean_env, capsys
) -> None:
    model = unique("params")
    assert (
        train.main(train_args(project, mlflow_server, model, "--set", override), env=clean_env) == 2
    )
    assert message in capsys.readouterr().err
    assert_nothing_left(mlflow_server, model)


def test_demo_runs_on_the_embedded_defaults(project, clean_env, capsys) -> None:
    """`make demo`: two data versions through train, evaluate and promote, in a scratch copy
    with a local sqlite store; the checkout itself is not changed."""
    before = git(project, "status", "--porcelain")
    env = clean_env | {"MLGATE_DEPLOY_IMAGE": "127.0.0.1:9/mlgate/demo"}  # no registry there
    assert demo.main(["--params", str(project / "params.yaml"), "--approve"], env=env) == 0
    out = capsys.readouterr().out
    root = project / ".demo"
    assert f"--backend-store-uri sqlite:///{root}/mlflow.db" in out
    assert "=== data version 2: candidate against the champion" in out
    assert "against `models:/breast-cancer-xgb/1` (staging)" in out
    assert "AUC difference" in out and "DeLong's paired test" in out
    c = client(f"sqlite:///{root}/mlflow.db")
    first, second = (c.get_model_version("breast-cancer-xgb", v) for v in ("1", "2"))
    assert first.tags["mlgate.promotion"] == "staging"
    assert second.tags["mlgate.data.rows"] == "529"
    # The staging alias follows the second version's verdict, whichever it is.
    verdict = second.tags["mlgate.decision.verdict"]
    staging = str(c.get_model_version_by_alias("breast-cancer-xgb", "staging").version)
    assert staging == ("2" if verdict == "pass" else "1"), (verdict, staging)
    assert "skipped the image and Production" in out and "scored one row at" in out
    assert '"predictions": [' in out or "'predictions': [" in out
    assert git(project, "status", "--porcelain") == before


def test_no_credential_reaches_mlflow(trained, tmp_path) -> None:
    """Tags, params, the description and every artifact of the run and its model."""
    c, run, version = trained["client"], trained["run"], trained["version"]
    texts = [
        json.dumps(run.data.tags),
        json.dumps(run.data.params),
        json.dumps(version.tags),
        version.description or "",
    ]
    folder = Path(c.download_artifacts(run.info.run_id, "", str(tmp_path / "run")))
    logged = c.get_logged_model(version.source.removeprefix("models:/"))
    model = mlflow.artifacts.download_artifacts(
        artifact_uri=logged.artifact_location,
        dst_path=str(tmp_path / "model"),
        tracking_uri=trained["server"],
    )
    for path in [*folder.rglob("*"), *Path(model).rglob("*")]:
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    assert len(texts) > 10
    for secret in SECRETS.values():
        assert not [t for t in texts if secret in t], f"{secret} leaked"
