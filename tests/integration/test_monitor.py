"""Monitoring against a real MLflow server: evidently's drift tests on data with a planted shift
and without, the prediction log as the source of production inputs, a backtest on late labels,
and the alert (retraining dispatch and one issue) against the OpenAPI-validating GitHub stand-in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlgate.github import alert
from mlgate.pipeline import drift
from mlgate.registry import audit
from mlgate.serving.predlog import DirectorySink, PredictionLog
from tests.conftest import make_project
from tests.github_openapi import VALID_TOKEN, OpenAPIStandIn
from tests.integration.test_gate import Registry

TARGET = "diagnosis"


@pytest.fixture(scope="module")
def watched(tmp_path_factory, mlflow_server, clean_env_module) -> tuple[Registry, str]:
    models = Registry(
        make_project(tmp_path_factory.mktemp("monitor") / "project"),
        mlflow_server,
        clean_env_module,
    )
    return models, models.train()


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[TARGET])


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Every 'mean_' and 'worst_' feature 60% higher: a shift no test can miss."""
    out = frame.copy()
    for column in out.columns:
        if column.startswith(("mean_", "worst_")):
            out[column] = out[column] * 1.6
    return out


def run(main, models: Registry, version: str, *args: str) -> int:
    return main([*models.args(), "--version", version, *args], env=models.env)


def summary(models: Registry, kind: str) -> dict:
    return json.loads((models.project / "reports" / f"{kind}.json").read_text())


def test_a_planted_shift_is_drift(watched, breast_cancer, tmp_path, capsys) -> None:
    models, version = watched
    current = tmp_path / "recent.csv"
    features(shifted(breast_cancer.sample(300, random_state=1))).to_csv(current, index=False)
    assert run(drift.main, models, version, "--current", str(current)) == 10
    err = capsys.readouterr().err
    assert f"drift in {models.model} version {version}" in err and "fix:" in err
    found = summary(models, "drift")
    assert found["drift"] is True and found["stale"] is True
    assert found["columns"]["mean_radius"]["drifted"] is True
    assert found["share"] >= 0.5 and found["current"]["rows"] == 300
    assert (models.project / "reports" / "drift.html").stat().st_size > 10_000
    # Logged against the version: a run with the report, and the version's latest result.
    run_ = models.client.get_run(found["run_id"])
    assert run_.data.tags["mlgate.model.version"] == version
    assert run_.data.metrics["drift_share"] == pytest.approx(found["share"])
    logged = {a.path for a in models.client.list_artifacts(found["run_id"], "drift")}
    assert logged == {"drift/drift.html", "drift/drift.json", "drift/drift.md"}
    tags = models.client.get_model_version(models.model, version).tags
    assert tags["mlgate.drift.stale"] == "true" and tags["mlgate.drift.run_id"] == found["run_id"]


def test_data_like_the_training_data_is_no_drift(watched, breast_cancer, tmp_path, capsys) -> None:
    models, version = watched
    current = tmp_path / "recent.parquet"
    features(breast_cancer.sample(300, random_state=2)).to_parquet(current)
    assert run(drift.main, models, version, "--current", str(current)) == 0
    assert "no drift" in capsys.readouterr().out
    found = summary(models, "drift")
    assert found["drift"] is False and found["count"] < len(found["columns"]) / 2
    assert (
        models.client.get_model_version(models.model, version).tags["mlgate.drift.stale"] == "false"
    )


def log_requests(sink: Path, model: str, version: str, frame: pd.DataFrame) -> None:
    """What the model server writes: one line a request of 25 rows."""
    log = PredictionLog(DirectorySink(sink), model, version, list(frame.columns))
    for start in range(0, len(frame), 25):
        block = frame.iloc[start : start + 25].to_numpy(dtype=np.float64)
        log.record(block, np.full(len(block), 0.5))
    assert log.flush()


def test_the_prediction_log_is_the_production_input(
    watched, breast_cancer, tmp_path, capsys
) -> None:
    models, version = watched
    sink = tmp_path / "predictions"
    log_requests(sink, models.model, version, features(shifted(breast_cancer.head(250))))
    code = run(drift.main, models, version, "--set", f"monitor.log_sink={sink}")
    assert code == 10, capsys.readouterr().err
    found = summary(models, "drift")
    assert found["current"] == {"source": str(sink), "rows": 250, "window_hours": 168.0}
    # Too few rows to judge is an error of its own, not "no drift".
    shutil.rmtree(sink)
    log_requests(sink, models.model, version, features(breast_cancer.head(50)))
    assert run(drift.main, models, version, "--current", str(sink)) == 3
    assert "only 50 rows of production data" in capsys.readouterr().err


def test_missing_features_and_no_source_are_refused(
    watched, breast_cancer, tmp_path, capsys
) -> None:
    models, version = watched
    current = tmp_path / "narrow.csv"
    features(breast_cancer).drop(columns=["mean_radius"]).to_csv(current, index=False)
    assert run(drift.main, models, version, "--current", str(current)) == 3
    assert "lacks 1 of the model's features: mean_radius" in capsys.readouterr().err
    assert run(drift.main, models, version) == 2
    assert "monitor.log_sink is not set" in capsys.readouterr().err
    features(breast_cancer).to_csv(current, index=False)
    unknown = ("--current", str(current), "--set", "monitor.drift_method=nope")
    assert run(drift.main, models, version, *unknown) == 2
    assert "monitor.drift_method 'nope' is not a test evidently knows" in capsys.readouterr().err
    # Nothing in Production yet: nothing to watch by default, and lineage says the same.
    assert drift.main([*models.args(), "--current", str(current)], env=models.env) == 2
    assert f"{models.model} has no version in production" in capsys.readouterr().err
    assert audit.main([*models.args(), "staging"], env=models.env) == 2
    assert audit.main([*models.args(), "../1"], env=models.env) == 2
    assert "neither production, staging nor a version number" in capsys.readouterr().err


def test_a_backtest_on_late_labels(watched, breast_cancer, tmp_path, capsys) -> None:
    models, version = watched
    labelled = tmp_path / "labelled.csv"
    breast_cancer.sample(200, random_state=3).to_csv(labelled, index=False)
    assert run(drift.backtest_main, models, version, "--labelled", str(labelled)) == 0
    found = summary(models, "backtest")
    assert found["stale"] is False and found["rows"] == 200
    assert set(found["change"]) >= {"auc", "f1", "log_loss"}
    assert abs(found["change"]["auc"]) < 0.05
    # Labels that contradict the model: the AUC collapses, exit 10.
    flipped = breast_cancer.sample(200, random_state=3)
    flipped[TARGET] = 1 - flipped[TARGET]
    flipped.to_csv(labelled, index=False)
    assert run(drift.backtest_main, models, version, "--labelled", str(labelled)) == 10
    assert "more than the allowed drop" in capsys.readouterr().err
    tags = models.client.get_model_version(models.model, version).tags
    assert tags["mlgate.backtest.stale"] == "true"
    # No labels: said so.
    features(breast_cancer).to_csv(labelled, index=False)
    assert run(drift.backtest_main, models, version, "--labelled", str(labelled)) == 3
    assert "no label column 'diagnosis'" in capsys.readouterr().err


REPOSITORY = "acme/models"


def alert_env(github_api: OpenAPIStandIn, tmp_path: Path, clean_env) -> dict[str, str]:
    return clean_env | {
        "GITHUB_API_URL": github_api.url,
        "GITHUB_TOKEN": VALID_TOKEN,
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "77",
        "GITHUB_OUTPUT": str(tmp_path / "output"),
    }


def stale_summary(tmp_path: Path, version: str = "4", stale: bool = True) -> Path:
    record = {
        "kind": "drift",
        "model": "churn",
        "version": version,
        "checked_at": "2026-11-23T08:00:00+00:00",
        "stale": stale,
        "headline": f"drift in churn version {version}: 2 of 3 features drifted (67%)",
        "run_id": "abc",
        "drift": stale,
        "count": 2,
        "share": 2 / 3,
        "columns": {
            "tenure": {
                "score": 0.4,
                "method": "Wasserstein distance (normed)",
                "threshold": 0.1,
                "drifted": True,
            },
            "spend": {
                "score": 0.3,
                "method": "Wasserstein distance (normed)",
                "threshold": 0.1,
                "drifted": True,
            },
            "age": {
                "score": 0.01,
                "method": "Wasserstein distance (normed)",
                "threshold": 0.1,
                "drifted": False,
            },
        },
        "current": {"source": "s3://logs/prod", "rows": 5000, "window_hours": 168},
        "reference": {"data_md5": "d" * 32, "commit": "c" * 40, "rows": 4000},
    }
    path = tmp_path / f"drift-{version}-{stale}.json"
    path.write_text(json.dumps(record))
    return path


def test_drift_dispatches_retraining_once_and_keeps_one_issue(
    github_api: OpenAPIStandIn, tmp_path, clean_env, capsys
) -> None:
    env = alert_env(github_api, tmp_path, clean_env)
    args = ["--summary", str(stale_summary(tmp_path)), "--retrain-workflow", "on-data-change.yml"]
    assert alert.main(args, env=env) == 0
    assert "retraining dispatched; issue #1 opened" in capsys.readouterr().out
    [(repo, operation, body)] = github_api.dispatches
    assert (repo, operation) == (REPOSITORY, "actions/create-workflow-dispatch")
    assert body["workflow_id"] == "on-data-change.yml" and body["ref"] == "main"
    [issue] = github_api.issues[REPOSITORY]
    assert "tenure" in issue["body"] and "`age`" not in issue["body"]
    assert [label["name"] for label in issue["labels"]] == [alert.LABEL]
    assert "issue-number=1" in (tmp_path / "output").read_text()

    # The next scheduled run sees the same drift: no second dispatch, the same issue updated.
    assert alert.main(args, env=env) == 0
    assert "already dispatched for this version; issue #1 updated" in capsys.readouterr().out
    assert len(github_api.dispatches) == 1 and len(github_api.issues[REPOSITORY]) == 1

    # A new Production version drifts too: dispatched again (as a repository_dispatch here).
    newer = ["--summary", str(stale_summary(tmp_path, "5")), "--retrain-event", "mlgate-retrain"]
    assert alert.main(newer, env=env) == 0
    assert github_api.dispatches[-1][1] == "repos/create-dispatch-event"
    assert github_api.dispatches[-1][2]["client_payload"]["version"] == "5"
    assert len(github_api.issues[REPOSITORY]) == 1
    assert "version 5" in github_api.issues[REPOSITORY][0]["title"]

    # No drift: nothing is called.
    calls = len(github_api.requests)
    quiet = ["--summary", str(stale_summary(tmp_path, "5", stale=False))]
    assert alert.main(quiet, env=env) == 0
    assert "nothing to do" in capsys.readouterr().out and len(github_api.requests) == calls


def test_an_alert_without_permission_says_which(github_api, tmp_path, clean_env, capsys) -> None:
    env = alert_env(github_api, tmp_path, clean_env)
    github_api.fail_next(403, operation="issues/create")
    args = ["--summary", str(stale_summary(tmp_path))]
    assert alert.main(args, env=env) == 8
    assert "issues: write" in capsys.readouterr().err


def test_the_monitor_command_turns_a_stale_model_into_an_output(
    watched, breast_cancer, tmp_path, capsys
) -> None:
    """`mlgate monitor` (the monitor action's one command): a planted shift, which `mlgate
    drift` exits 10 on (test_a_planted_shift_is_drift), is stale=true in $GITHUB_OUTPUT, a
    warning and exit 0, so the workflow's alert job runs. One check (evidently is the cost)."""
    from mlgate.pipeline import monitor

    models, version = watched
    current = tmp_path / "shifted.csv"
    features(shifted(breast_cancer.sample(300, random_state=3))).to_csv(current, index=False)
    outputs = tmp_path / "outputs"
    env = {**models.env, "GITHUB_OUTPUT": str(outputs)}
    args = [*models.args(), "--check", "drift", "--data", str(current), "--version", version]
    assert monitor.main(args, env=env) == 0
    written = outputs.read_text().splitlines()
    assert "stale=true" in written and f"model-version={version}" in written
    assert summary(models, "drift")["stale"] is True
    assert "::warning title=mlgate%3A ModelStale::" in capsys.readouterr().out
