"""The sticky PR comment against the GitHub API stand-in, which validates every request
against GitHub's published OpenAPI description (see tests/github_openapi.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mlgate.github import comment
from tests.github_openapi import VALID_TOKEN, OpenAPIStandIn
from tests.unit.test_comment import event, sample_decision

REPOSITORY = "octo/repo"


@pytest.fixture
def gate(tmp_path: Path, github_api: OpenAPIStandIn):
    """Run `mlgate comment` as the PR gate's comment job does; returns (exit code, outputs)."""
    decision_file = tmp_path / "decision.json"
    decision_file.write_text(json.dumps(sample_decision()))
    github_api.heads[(REPOSITORY, 7)] = "a" * 40  # the event's head (tests.unit.test_comment)
    env = {
        "GITHUB_API_URL": github_api.url,
        "GITHUB_TOKEN": VALID_TOKEN,
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event(tmp_path)),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "42",
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }

    def run(*args: str, **overrides: str) -> tuple[int, str]:
        (tmp_path / "output").write_text("")
        code = comment.main(["--decision", str(decision_file), *args], env=env | overrides)
        return code, (tmp_path / "output").read_text()

    run.decision_file = decision_file  # type: ignore[attr-defined]
    run.env = env  # type: ignore[attr-defined]
    run.tmp_path = tmp_path  # type: ignore[attr-defined]
    return run


def writes(stand_in: OpenAPIStandIn) -> list[str]:
    return [f"{r.method} {r.operation}" for r in stand_in.requests if r.method != "GET"]


def test_first_run_creates_then_later_runs_edit_the_same_comment(gate, github_api) -> None:
    github_api.add_comment(REPOSITORY, 7, "LGTM")  # a reviewer's comment, never touched
    code, outputs = gate()
    assert code == 0 and "commented=true" in outputs
    assert writes(github_api) == ["POST issues/create-comment"]
    (mine,) = [c for c in github_api.issue_comments(REPOSITORY, 7) if c["body"] != "LGTM"]
    assert mine["body"].startswith("<!-- mlgate:pr-gate key=default -->")
    assert "✅ Gate PASS" in mine["body"] and f"comment-id={mine['id']}" in outputs

    gate.decision_file.write_text(json.dumps(sample_decision(passed=False)))
    assert gate()[0] == 0
    assert writes(github_api) == ["POST issues/create-comment", "PATCH issues/update-comment"]
    comments = github_api.issue_comments(REPOSITORY, 7)
    assert len(comments) == 2 and "❌ Gate FAIL" in comments[1]["body"]
    assert comments[0]["body"] == "LGTM"

    assert gate()[0] == 0  # nothing changed: nothing written
    assert len(writes(github_api)) == 2


def test_the_marker_is_found_past_the_first_page_and_per_key(gate, github_api) -> None:
    for n in range(101):  # ours is the 102nd: on page 2 of 100
        github_api.add_comment(REPOSITORY, 7, f"comment {n}")
    gate("--key", "models/a.yaml")
    gate("--key", "models/b.yaml")
    gate("--key", "models/a.yaml")
    assert writes(github_api) == ["POST issues/create-comment"] * 2
    assert any("page=2" in r.path or r.query.get("page") == ["2"] for r in github_api.requests)
    assert len(github_api.issue_comments(REPOSITORY, 7)) == 103


def ours(stand_in: OpenAPIStandIn) -> list[dict]:
    marker = comment.MARKER.format(key="default")
    return [
        c
        for c in stand_in.issue_comments(REPOSITORY, 7)
        if marker in c["body"] and c["user"]["login"] == comment.BOT
    ]


def test_two_racing_runs_end_with_one_comment(gate, github_api) -> None:
    """Two gate runs of one PR (two pushes in quick succession): both list the comments before
    either creates one (the stand-in holds both lists until both arrived), so both create.
    Each reads the list again after its create; the newer comment is deleted and the older
    one kept, and both runs report that one."""
    from concurrent.futures import ThreadPoolExecutor

    from mlgate.settings import GitHubContext

    github_api.hold("issues/list-comments", parties=2)
    env = {k: v for k, v in gate.env.items() if k not in {"GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"}}
    context = GitHubContext.from_env(env)
    with ThreadPoolExecutor(2) as pool:
        racers = [
            pool.submit(comment.post, context, decision_file=gate.decision_file, key="default")
            for _ in range(2)
        ]
        posted = [racer.result(timeout=120) for racer in racers]
    assert (
        sorted(r.operation for r in github_api.requests if r.method == "POST")
        == ["issues/create-comment"] * 2
    ), "the race happened: both runs created a comment"
    (kept,) = ours(github_api)
    assert {p.comment_id for p in posted} == {kept["id"]}
    assert kept["id"] == min(p.comment_id for p in posted if p.created)
    assert len(github_api.issue_comments(REPOSITORY, 7)) == 1
    assert gate()[0] == 0 and len(ours(github_api)) == 1  # the next push edits that one


def test_a_comment_by_someone_else_carrying_the_marker_is_never_taken_over(
    gate, github_api, capsys
) -> None:
    """The marker is text anyone can paste: only a comment the token's own identity wrote is
    edited. Another bot's or a person's comment with the marker stays as it is."""
    marker = comment.MARKER.format(key="default")
    github_api.add_comment(REPOSITORY, 7, f"{marker}\n### ✅ Gate PASS (not)", login="mallory")
    github_api.add_comment(REPOSITORY, 7, f"{marker}\nsomething", login="other-bot[bot]")
    assert gate()[0] == 0
    gate.decision_file.write_text(json.dumps(sample_decision(passed=False)))
    assert gate()[0] == 0
    assert writes(github_api) == ["POST issues/create-comment", "PATCH issues/update-comment"]
    (mine,) = ours(github_api)
    assert "❌ Gate FAIL" in mine["body"]
    theirs = {c["user"]["login"]: c["body"] for c in github_api.issue_comments(REPOSITORY, 7)}
    assert theirs["mallory"].endswith("(not)") and theirs["other-bot[bot]"].endswith("something")
    capsys.readouterr()
    # told the wrong identity (--author), the run finds nothing of that author and creates a
    # comment, sees who wrote it, deletes it and keeps the one written before; and it says so
    assert gate("--author", "my-app[bot]")[0] == 0
    assert ours(github_api) == [mine] and len(github_api.issue_comments(REPOSITORY, 7)) == 3
    out = capsys.readouterr().out
    assert "written by github-actions[bot], not my-app[bot]" in out and "::warning" in out
    assert writes(github_api)[2:] == ["POST issues/create-comment", "DELETE issues/delete-comment"]


def test_a_comment_edited_or_deleted_by_a_person(gate, github_api) -> None:
    """A person edits the gate's comment: the next run writes the verdict back. A person
    deletes it: the next run creates it again. Deleted between the run's list and its edit
    (GitHub answers 404): the run creates it again, and nothing fails."""
    assert gate()[0] == 0
    (mine,) = ours(github_api)
    rendered = mine["body"]
    mine["body"] = mine["body"].replace("✅ Gate PASS", "✅ Gate PASS, says a person")
    assert gate()[0] == 0
    assert [c["body"] for c in ours(github_api)] == [rendered]

    github_api.comments[(REPOSITORY, 7)].clear()
    code, outputs = gate()
    assert code == 0 and "commented=true" in outputs
    (again,) = ours(github_api)
    assert again["body"] == rendered and again["id"] != mine["id"]

    gate.decision_file.write_text(json.dumps(sample_decision(passed=False)))
    github_api.before("issues/update-comment", github_api.comments[(REPOSITORY, 7)].clear)
    code, outputs = gate()
    assert code == 0, outputs
    (last,) = ours(github_api)
    assert "❌ Gate FAIL" in last["body"] and f"comment-id={last['id']}" in outputs
    assert writes(github_api)[-2:] == ["PATCH issues/update-comment", "POST issues/create-comment"]
    assert [r.status for r in github_api.requests if r.method == "PATCH"][-1] == 404


def test_a_run_of_a_commit_no_longer_the_head_does_not_comment(gate, github_api) -> None:
    """Two pushes: the newer commit's run commented; the older one's slower run ends later.
    It must not replace the newer verdict: it reads the pull request's head, sees it moved,
    and says so in its summary instead."""
    assert gate()[0] == 0
    (newer,) = ours(github_api)
    github_api.heads[(REPOSITORY, 7)] = "b" * 40  # pushed since this run's event
    gate.decision_file.write_text(json.dumps(sample_decision(passed=False)))
    code, outputs = gate()
    assert code == 0 and "commented=false" in outputs
    assert ours(github_api) == [newer] and "✅ Gate PASS" in newer["body"]
    assert writes(github_api) == ["POST issues/create-comment"]
    summary = (gate.tmp_path / "summary").read_text()
    assert "gated commit aaaaaaaaaaaa, but the pull request's head is now bbbbbbbbbbbb" in summary


def test_no_decision_still_comments_what_failed(gate, github_api) -> None:
    gate.decision_file.unlink()
    code, _ = gate("--needs", json.dumps({"train": {"result": "failure", "outputs": {}}}))
    assert code == 0
    (body,) = [c["body"] for c in github_api.issue_comments(REPOSITORY, 7)]
    assert "Gate did not decide" in body and "`train`: failure" in body


def test_fork_pull_requests_report_in_the_summary_only(gate, github_api, capsys) -> None:
    path = event(gate.tmp_path, head_repo="someone/fork")
    code, outputs = gate(GITHUB_EVENT_PATH=str(path))
    assert code == 0 and "commented=false" in outputs
    assert github_api.requests == []
    assert "comes from a fork" in (gate.tmp_path / "summary").read_text()
    assert "::notice" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("status", "operation", "expected"),
    [
        (401, None, "invalid or expired"),
        (403, "issues/create-comment", "pull-requests: write"),
        (404, "issues/list-comments", "check the repository and pull request number"),
        (410, "issues/list-comments", "issues are disabled"),
        (422, "issues/create-comment", "Body is too long"),
    ],
)
def test_api_errors_are_clear_and_write_nothing(
    gate, github_api, capsys, status, operation, expected
) -> None:
    if status == 401:
        code, outputs = gate(GITHUB_TOKEN="ghs_expired")
    else:
        github_api.fail_next(status, operation=operation)
        code, outputs = gate()
    err = capsys.readouterr().err
    assert code == 8, err
    assert f"GitHub answered {status}" in err and expected in err
    assert "comment-id" not in outputs and github_api.issue_comments(REPOSITORY, 7) == []
    assert VALID_TOKEN not in err


def test_server_errors_are_retried_with_backoff(gate, github_api) -> None:
    github_api.fail_next(502, operation="issues/list-comments", times=2)
    assert gate()[0] == 0
    # the PR's head; the list, retried twice; the create; the list read again (a racer's?)
    assert [r.status for r in github_api.requests] == [200, 502, 502, 200, 201, 200]


@pytest.mark.parametrize(
    "headers",
    [
        lambda: {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()))},
        lambda: {"retry-after": "1"},
    ],
    ids=["primary-403", "secondary-retry-after"],
)
def test_rate_limits_are_waited_out(gate, github_api, headers) -> None:
    github_api.fail_next(403, headers())
    start = time.monotonic()
    code, _ = gate()
    assert code == 0 and time.monotonic() - start >= 0.9
    assert [r.status for r in github_api.requests][:2] == [403, 200]
    assert len(github_api.issue_comments(REPOSITORY, 7)) == 1


def test_a_rate_limited_create_is_retried_once_it_resets(gate, github_api) -> None:
    github_api.fail_next(429, {"retry-after": "1"}, operation="issues/create-comment")
    assert gate()[0] == 0
    assert writes(github_api) == ["POST issues/create-comment"] * 2
    assert [r.status for r in github_api.requests if r.method == "POST"] == [429, 201]
    assert len(github_api.issue_comments(REPOSITORY, 7)) == 1


def test_a_rate_limit_far_away_fails_at_once_with_its_reset_time(gate, github_api, capsys):
    reset = int(time.time()) + 3600
    github_api.fail_next(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    start = time.monotonic()
    code, _ = gate()
    err = capsys.readouterr().err
    assert code == 8 and time.monotonic() - start < 30
    assert "rate limit resets at" in err and "re-run after the reset" in err
    assert len(github_api.requests) == 1


def test_the_stand_in_holds_requests_to_the_description(github_api_session) -> None:
    """The contract check is real: requests GitHub would refuse are refused here too."""
    import requests

    stand_in = github_api_session
    stand_in.reset()
    headers = {
        "Authorization": f"Bearer {VALID_TOKEN}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    base = f"{stand_in.url}/repos/{REPOSITORY}/issues"
    assert (
        requests.post(f"{base}/7/comments", json={"text": "x"}, headers=headers).status_code == 400
    )
    assert requests.get(f"{base}/seven/comments", headers=headers).status_code == 400
    assert (
        requests.get(f"{base}/7/comments", params={"per_page": "many"}, headers=headers).status_code
        == 400
    )
    assert requests.get(f"{stand_in.url}/no/such/route", headers=headers).status_code == 404
    assert requests.get(f"{stand_in.url}/rate_limit", headers=headers).status_code == 200
    assert len(stand_in.violations) == 4, stand_in.violations
    assert "'body' is a required property" in stand_in.violations[0]
    stand_in.reset()
