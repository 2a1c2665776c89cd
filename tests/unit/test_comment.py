"""The PR gate's comment without a network: rate-limit arithmetic, the pull request read from
the event, the rendered body, the MLflow links and the decision file's schema check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgate.errors import ConfigError, GitHubError
from mlgate.gate import decision
from mlgate.gate.decision import Check, Decision, ModelRef
from mlgate.github import comment
from mlgate.github.api import GitHubAPI, rate_limit_wait
from mlgate.settings import GitHubContext


def sample_decision(passed: bool = True, champion: bool = True) -> dict:
    """A decision record as `mlgate evaluate` writes it."""
    overall = {"auc": 0.97 if passed else 0.70, "f1": 0.9}
    return Decision(
        candidate=ModelRef("breast-cancer-xgb", "3", "run3"),
        champion=ModelRef("breast-cancer-xgb", "2", "run2", "staging") if champion else None,
        data_md5="67373ef1f5eaff3475417c6c0f287ba2.dir",
        holdout_digest="h",
        holdout_rows=114,
        mode="enabled",
        checks=[Check("auc", overall["auc"], 0.8, ">=", passed)],
        metrics={
            "candidate": {"overall": overall, "slices": {}},
            **(
                {"champion": {"overall": {"auc": 0.95, "f1": 0.88}, "slices": {}}}
                if champion
                else {}
            ),
        },
        significance={
            "method": "DeLong",
            "difference": 0.02,
            "ci_low": -0.01,
            "ci_high": 0.05,
            "p_value": 0.2,
            "significant": False,
            "confidence": 0.95,
        }
        if champion
        else None,
        latency_ms={"p50": 0.1, "p95": 0.2, "rows": 200.0},
        model_size_bytes=1000,
        links={"candidate_run": "http://mlflow.example/#/experiments/1/runs/run3"},
    ).to_dict()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1010"}, 11.0),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "990"}, 1.0),  # already past
        ({"x-ratelimit-remaining": "12", "x-ratelimit-reset": "1010"}, None),  # a plain 403
        ({"retry-after": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "5000"}, 2.0),
    ],
)
def test_rate_limit_wait(headers: dict, expected: float | None) -> None:
    assert rate_limit_wait(headers, now=1000.0) == expected


def test_no_token_is_refused_before_any_request() -> None:
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is empty") as error:
        GitHubAPI("http://127.0.0.1:9", None)
    assert "github.token" in error.value.fix


def event(tmp_path: Path, head_repo: str | None = "octo/repo", number: int = 7) -> Path:
    path = tmp_path / "event.json"
    head = {"sha": "a" * 40, "repo": {"full_name": head_repo} if head_repo else None}
    path.write_text(
        json.dumps(
            {
                "pull_request": {
                    "number": number,
                    "head": head,
                    "base": {"repo": {"full_name": "octo/repo"}},
                }
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("head_repo", "fork"), [("octo/repo", False), ("someone/repo", True), (None, True)]
)
def test_pull_request_from_the_event(tmp_path: Path, head_repo: str | None, fork: bool) -> None:
    context = GitHubContext(repository="octo/repo", event_path=event(tmp_path, head_repo))
    pr = comment.pull_request(context)
    assert (pr.repository, pr.number, pr.from_fork, pr.head_sha) == ("octo/repo", 7, fork, "a" * 40)


def test_not_a_pull_request_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not pull_request"):
        comment.pull_request(GitHubContext(repository="octo/repo", event_name="push"))
    assert comment.pull_request(GitHubContext(repository="octo/repo"), number=3).number == 3


def test_body_carries_marker_verdict_significance_and_links(tmp_path: Path) -> None:
    pr = comment.PullRequest("octo/repo", 7, "b" * 40, False)
    body = comment.render(
        sample_decision(),
        key="params.yaml",
        pr=pr,
        run_url="https://github.com/octo/repo/actions/runs/1",
        needs={},
    )
    assert body.startswith("<!-- mlgate:pr-gate key=params.yaml -->\n")
    assert "✅ Gate PASS" in body and "`models:/breast-cancer-xgb/2` (staging)" in body
    assert "95% CI [-0.0100, +0.0500]" in body and "not significant" in body
    assert "[candidate run](http://mlflow.example/#/experiments/1/runs/run3)" in body
    assert "[workflow run](https://github.com/octo/repo/actions/runs/1)" in body
    assert "commit bbbbbbbbbbbb" in body


def test_body_without_a_decision_names_the_failed_job() -> None:
    pr = comment.PullRequest("octo/repo", 7, None, False)
    needs = {"train": {"result": "failure"}, "evaluate": {"result": "skipped"}}
    body = comment.render(None, key="k", pr=pr, run_url=None, needs=needs)
    assert "Gate did not decide" in body and "`train`: failure" in body


def test_body_is_cut_to_githubs_limit() -> None:
    record = sample_decision()
    record["checks"] *= 2000
    pr = comment.PullRequest("octo/repo", 7, None, False)
    body = comment.render(record, key="k", pr=pr, run_url=None, needs={})
    assert len(body) <= comment.MAX_BODY and body.rstrip().endswith(
        "(truncated; the full table is in the job summary)"
    )


@pytest.mark.parametrize("key", ["a-->b", "", "x" * 201, "new\nline"])
def test_keys_that_would_break_the_marker_are_refused(key: str) -> None:
    if key == "":
        assert comment._key(key) == "default"
        return
    with pytest.raises(Exception, match="a key is letters"):
        comment._key(key)


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        ("", "github-actions[bot]"),
        ("my-app[bot]", "my-app[bot]"),
        ("octocat", "octocat"),
        ("-x", None),
        ("a b", None),
        ("x[bot]]", None),
        ("x" * 40, None),
    ],
)
def test_the_author_is_a_login(login: str, expected: str | None) -> None:
    if expected is not None:
        assert comment._author(login) == expected
        return
    with pytest.raises(Exception, match="a GitHub login is"):
        comment._author(login)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", {}),
        (
            "https://user:secret@mlflow.example:8443/base/",
            {
                "candidate_run": "https://mlflow.example:8443/base/#/experiments/4/runs/r3",
                "candidate_version": "https://mlflow.example:8443/base/#/models/m%2Fx/versions/3",
                "champion_version": "https://mlflow.example:8443/base/#/models/m%2Fx/versions/2",
            },
        ),
    ],
)
def test_mlflow_links_drop_credentials(uri: str, expected: dict) -> None:
    links = decision.mlflow_links(uri, ModelRef("m/x", "3", "r3"), ModelRef("m/x", "2", "r2"), "4")
    assert links == expected


def test_decision_file_schema_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "decision.json"
    path.write_text(json.dumps(sample_decision() | {"schema_version": 99}))
    with pytest.raises(ConfigError, match=r"schema_version 99 is not one this mlgate reads \(1,"):
        decision.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable decision JSON"):
        decision.load(path)
    with pytest.raises(ConfigError, match="no decision at"):
        decision.load(tmp_path / "missing.json")
