"""`mlgate alert`'s logic without a server: the issue it writes, when it dispatches again, and
the requests it sends, each held to GitHub's OpenAPI description (tests/github_openapi.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlgate.errors import ConfigError
from mlgate.github import alert
from mlgate.settings import Settings, load_settings
from tests.github_openapi import OpenAPIStandIn

REPO = "octo/models"


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env=env, cwd=tmp_path)


def drift_summary(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "drift",
        "model": "churn",
        "version": "4",
        "stale": True,
        "headline": "2 of 3 features drifted",
        "checked_at": "2026-01-02T03:04:05+00:00",
        "run_id": "abc123",
        "count": 2,
        "share": 2 / 3,
        "columns": {
            "age": {"drifted": True, "score": 0.012345, "method": "ks", "threshold": 0.05},
            "plan": {"drifted": False, "score": 0.5, "method": "chisquare", "threshold": 0.05},
            "spend": {"drifted": True, "score": 0.3, "method": "wasserstein", "threshold": 0.1},
        },
        "current": {"rows": 500, "source": "the prediction log"},
    } | extra


def test_the_drift_issue_lists_the_drifted_features_only(tmp_path: Path) -> None:
    body = alert.issue_body(drift_summary(), settings(tmp_path), None)
    lines = body.splitlines()
    assert lines[0] == "<!-- mlgate:monitor model=churn -->"
    assert lines[1] == "**2 of 3 features drifted**"
    assert "2 of 3 features drifted (67%); current data: 500 rows from the prediction log." in body
    assert "| `age` | 0.01235 | ks | 0.05 |" in lines
    assert "| `spend` | 0.3 | wasserstein | 0.1 |" in lines
    assert "`plan`" not in body
    assert "was not dispatched (no --retrain-workflow or --retrain-event)" in body
    assert "mlgate:dispatched" not in body
    assert "`mlgate lineage 4`" in body
    assert " in [this run](" not in body  # no run outside Actions


def test_the_issue_links_the_run_and_records_the_dispatch(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        GITHUB_ACTIONS="true",
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_REPOSITORY=REPO,
        GITHUB_RUN_ID="99",
    )
    body = alert.issue_body(drift_summary(), s, "4")
    assert f"in [this run](https://github.com/{REPO}/actions/runs/99)" in body
    assert "was dispatched for version 4" in body
    assert body.endswith("<!-- mlgate:dispatched version=4 -->\n")


def test_a_backtest_issue_compares_metrics_with_training(tmp_path: Path) -> None:
    summary = {
        "kind": "backtest",
        "model": "churn",
        "version": "2",
        "headline": "AUC fell",
        "checked_at": "t",
        "metrics": {"auc": 0.71, "brier": 0.2},
        "training_metrics": {"auc": 0.8},
    }
    body = alert.issue_body(summary, settings(tmp_path), None)
    assert "| auc | 0.8000 | 0.7100 |" in body
    assert "| brier | nan | 0.2000 |" in body  # not measured at training: said so


@pytest.mark.parametrize(
    ("issue_body", "version", "already"),
    [
        (None, "4", False),  # no open issue
        ("no marker", "4", False),
        ("x\n<!-- mlgate:dispatched version=4 -->\n", "4", True),
        ("<!-- mlgate:dispatched version=4 -->", "5", False),  # a new Production version
        ("<!-- mlgate:dispatched version=41 -->", "4", False),  # not a prefix match
    ],
)
def test_one_dispatch_per_version(issue_body: str | None, version: str, already: bool) -> None:
    assert alert.already_dispatched(issue_body, version) is already


def test_the_issue_it_writes_reads_back_as_dispatched(tmp_path: Path) -> None:
    """The marker that issue_body writes is the one the next run finds."""
    body = alert.issue_body(drift_summary(), settings(tmp_path), "4")
    assert alert.already_dispatched(body, "4")
    assert not alert.already_dispatched(body, "5")


@pytest.mark.parametrize(
    ("ref", "branch"),
    [
        (None, "main"),
        ("refs/heads/release/1", "release/1"),
        ("refs/tags/v1.2", "v1.2"),
        ("dev", "dev"),
    ],
)
def test_a_workflow_dispatch_names_a_branch_not_a_ref(
    ref: str | None, branch: str, github_request, openapi: OpenAPIStandIn
) -> None:
    path, body = alert.dispatch_request(
        REPO, drift_summary(), workflow="on data.yml", event_type=None, ref=ref, run_url=None
    )
    assert path == f"/repos/{REPO}/actions/workflows/on%20data.yml/dispatches"
    assert body == {"ref": branch}
    assert github_request("POST", path, body)[0] == 204
    assert openapi.violations == []
    [(repo, operation, sent)] = openapi.dispatches
    assert (repo, operation) == (REPO, "actions/create-workflow-dispatch")
    assert sent["ref"] == branch


def test_a_repository_dispatch_carries_the_model(github_request, openapi) -> None:
    summary = drift_summary(headline="h" * 600)
    path, body = alert.dispatch_request(
        REPO, summary, workflow=None, event_type="retrain", ref=None, run_url="https://run"
    )
    assert path == f"/repos/{REPO}/dispatches"
    assert body == {
        "event_type": "retrain",
        "client_payload": {
            "model": "churn",
            "version": "4",
            "kind": "drift",
            "headline": "h" * 500,  # cut to 500
            "run_url": "https://run",
        },
    }
    assert github_request("POST", path, body)[0] == 204
    assert openapi.violations == []


def test_the_issue_is_opened_then_updated_as_github_describes(
    tmp_path: Path, github_request, openapi
) -> None:
    text = alert.issue_body(drift_summary(), settings(tmp_path), None)
    method, path, body = alert.issue_request(REPO, None, drift_summary(), text)
    assert (method, path) == ("POST", f"/repos/{REPO}/issues")
    assert body["title"] == "mlgate: churn version 4 went stale (drift)"
    assert body["labels"] == [alert.LABEL]
    status, opened = github_request(method, path, body)
    assert status == 201
    assert openapi.violations == []

    method, path, body = alert.issue_request(REPO, opened["number"], drift_summary(), text + "!")
    assert (method, path) == ("PATCH", f"/repos/{REPO}/issues/{opened['number']}")
    assert "labels" not in body  # an update keeps the labels people added
    status, updated = github_request(method, path, body)
    assert (status, updated["body"]) == (200, text + "!")
    assert openapi.violations == []


def test_without_a_repository_there_is_nothing_to_alert(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GITHUB_REPOSITORY is not set") as caught:
        alert.alert(settings(tmp_path), drift_summary())
    assert caught.value.exit_code == 2


def test_a_model_that_is_not_stale_calls_nobody(tmp_path: Path) -> None:
    """No API call at all: the token and API URL point nowhere, and no error is raised."""
    s = settings(tmp_path, GITHUB_REPOSITORY=REPO, GITHUB_API_URL="http://127.0.0.1:9")
    result = alert.alert(s, drift_summary(stale=False), workflow="retrain.yml")
    assert result == alert.Alert("2 of 3 features drifted: nothing to do")
