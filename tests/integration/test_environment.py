"""The GitHub calls of the deploy stage against the API stand-in (GitHub's OpenAPI
description): creating the Environment that gates Production, and reading who approved."""

from __future__ import annotations

import pytest

from mlgate import deploy, environment
from mlgate.settings import load_settings
from tests.github_openapi import VALID_TOKEN, OpenAPIStandIn


def env(stand_in: OpenAPIStandIn, **extra: str) -> dict[str, str]:
    return {"GITHUB_API_URL": stand_in.url, "GITHUB_TOKEN": VALID_TOKEN, **extra}


def test_setup_environment_puts_reviewers_and_branch_policy(github_api, capsys) -> None:
    code = environment.main(
        ["--repository", "acme/models", "--reviewer", "alice", "--reviewer", "team:acme/ml-leads"],
        env=env(github_api),
    )
    assert code == 0, capsys.readouterr().err
    calls = [(r.method, r.operation) for r in github_api.requests]
    assert calls == [
        ("GET", "users/get-by-username"),
        ("GET", "teams/get-by-name"),
        ("PUT", "repos/create-or-update-environment"),
    ]
    body = github_api.requests[-1].body
    assert github_api.requests[-1].path == "/repos/acme/models/environments/production"
    assert body["prevent_self_review"] is True and body["wait_timer"] == 0
    assert [r["type"] for r in body["reviewers"]] == ["User", "Team"]
    assert body["deployment_branch_policy"] == {
        "protected_branches": True,
        "custom_branch_policies": False,
    }
    assert "approval by alice, acme/ml-leads" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--repository", "not a repo", "--reviewer", "alice"], 2, "is not OWNER/REPO"),
        (["--repository", "acme/models", "--reviewer", "x y"], 2, "is not a GitHub login"),
        (["--repository", "acme/models", "--reviewer", "team:acme"], 2, "team:ORG/SLUG"),
        (["--repository", "acme/models", *["--reviewer", "u"] * 7], 2, "GitHub allows 6"),
        (
            ["--repository", "acme/models", "--environment", "prod/../x", "--reviewer", "a"],
            2,
            "is not an Environment name",
        ),
    ],
)
def test_setup_environment_refuses_bad_input_before_any_call(
    github_api, capsys, args, code, words
) -> None:
    try:
        result = environment.main(args, env=env(github_api))
    except SystemExit as exc:  # argparse's own usage errors
        result = exc.code
    assert result == code
    assert words in capsys.readouterr().err
    assert github_api.requests == []


def test_a_token_without_admin_rights_gets_the_fix(github_api, capsys) -> None:
    github_api.fail_next(422, operation="repos/create-or-update-environment")
    code = environment.main(
        ["--repository", "acme/models", "--reviewer", "alice"], env=env(github_api)
    )
    assert code == 8 and "GitHub answered 422" in capsys.readouterr().err


def test_approvers_are_read_for_the_run(github_api) -> None:
    settings = load_settings(
        env=env(github_api, GITHUB_REPOSITORY="acme/models", GITHUB_RUN_ID="42")
    )
    assert deploy.approvers(settings, []) == ["octocat"]  # the description's example review
    assert [r.operation for r in github_api.requests] == ["actions/get-reviews-for-run"]
    assert deploy.approvers(settings, ["bob"]) == ["bob"]


def test_approvers_unreadable_is_a_warning_not_a_failure(github_api, capsys) -> None:
    github_api.fail_next(403)
    settings = load_settings(
        env=env(github_api, GITHUB_REPOSITORY="acme/models", GITHUB_RUN_ID="42")
    )
    assert deploy.approvers(settings, []) == []
    assert "could not read the approvals" in capsys.readouterr().out
