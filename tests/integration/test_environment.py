"""The GitHub calls of the deploy stage against the API stand-in (GitHub's OpenAPI
description): creating the Environment that gates Production, and reading who approved."""

from __future__ import annotations

import pytest

from mlgate.errors import ApprovalRefused
from mlgate.github import environment
from mlgate.settings import load_settings
from tests.github_openapi import (
    VALID_TOKEN,
    OpenAPIStandIn,
    approvals_answer,
    environment_answer,
)


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


# -- A rollback's decider is read as a deployment's approval is (the twin): fail closed, only
# approvals of the Environment count, never the actor or "unknown". It is refused before
# MLflow is even reached (the tracking URI below answers nothing).
UNREACHABLE_MLFLOW = {"MLGATE_TRACKING_URI": "http://127.0.0.1:9", "MLGATE_TRACKING_RETRIES": "0"}


def test_a_rollback_without_an_approval_of_its_environment_is_refused(github_api, capsys) -> None:
    from mlgate.pipeline import rollback

    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["alice"])
    )
    github_api.respond(
        "actions/get-reviews-for-run",
        approvals_answer(github_api, [("mallory", "approved", "staging")]),
    )
    code = rollback.main(
        ["--reason", "bad model"],
        env=actions_env(github_api, GITHUB_ACTOR="mallory", **UNREACHABLE_MLFLOW),
    )
    err = capsys.readouterr().err
    assert code == 11, err
    assert "no approval of the Environment 'production'" in err
    assert [r.operation for r in github_api.requests] == [
        "repos/get-environment",
        "actions/get-reviews-for-run",
    ]


def test_a_rollback_takes_no_approved_by_in_actions_and_needs_one_outside(
    github_api, capsys
) -> None:
    from mlgate.pipeline import rollback

    args = ["--reason", "bad model", "--approved-by", "mallory"]
    assert rollback.main(args, env=actions_env(github_api, **UNREACHABLE_MLFLOW)) == 11
    assert "--approved-by is not accepted in a GitHub Actions job" in capsys.readouterr().err
    assert rollback.main(["--reason", "bad model"], env=dict(UNREACHABLE_MLFLOW)) == 11
    assert "pass --approved-by LOGIN" in capsys.readouterr().err
    assert github_api.requests == []


# -- The deploy's approval check: Production moves only with a verified approval --------------
def actions_env(stand_in: OpenAPIStandIn, **extra: str) -> dict[str, str]:
    """What an Actions job's step sees (GITHUB_ACTIONS=true), pointed at the stand-in."""
    return env(
        stand_in,
        GITHUB_ACTIONS="true",
        GITHUB_REPOSITORY="acme/models",
        GITHUB_RUN_ID="42",
        **extra,
    )


def test_a_protected_environment_yields_its_approvers_only(github_api) -> None:
    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["alice", "bob"])
    )
    github_api.respond(
        "actions/get-reviews-for-run",
        approvals_answer(
            github_api,
            [
                ("alice", "approved", "Production"),  # GitHub's names ignore case
                ("mallory", "approved", "staging"),  # another Environment of the run
                ("bob", "rejected", "production"),
            ],
        ),
    )
    approval = environment.require_approval(load_settings(env=actions_env(github_api)))
    assert approval.approved_by == ("alice",)
    assert approval.reviewers == ("alice", "bob") and not approval.unprotected
    assert approval.tags() == {
        "mlgate.production.approved_by": "alice",
        "mlgate.production.environment": "production",
    }
    assert [r.path for r in github_api.requests] == [
        "/repos/acme/models/environments/production",
        "/repos/acme/models/actions/runs/42/approvals",
    ]


def test_an_unprotected_environment_is_refused(github_api, capsys) -> None:
    github_api.respond("repos/get-environment", environment_answer(github_api, "prod-eu", None))
    settings = load_settings(env=actions_env(github_api, MLGATE_DEPLOY_ENVIRONMENT="prod-eu"))
    with pytest.raises(ApprovalRefused) as refused:
        environment.require_approval(settings)
    assert refused.value.exit_code == 11
    assert "'prod-eu' of acme/models has no required reviewers" in refused.value.message
    assert "mlgate setup-environment --repository acme/models --environment prod-eu" in (
        refused.value.fix
    )
    assert "allow-unprotected-environment" in refused.value.fix
    assert [r.operation for r in github_api.requests] == ["repos/get-environment"]


def test_the_opt_out_is_recorded(github_api, capsys) -> None:
    github_api.respond("repos/get-environment", environment_answer(github_api, "production", []))
    settings = load_settings(
        env=actions_env(github_api, MLGATE_DEPLOY_ALLOW_UNPROTECTED_ENVIRONMENT="true")
    )
    approval = environment.require_approval(settings)
    assert approval.unprotected and approval.approved_by == ()
    tags = approval.tags()
    assert tags["mlgate.production.approved_by"] == "nobody"
    assert tags["mlgate.production.unprotected_environment"].startswith("true")
    assert "::warning" in capsys.readouterr().out


@pytest.mark.parametrize("status", [403, 401])
def test_unreadable_approvals_are_a_refusal(github_api, status) -> None:
    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["alice"])
    )
    github_api.fail_next(status, operation="actions/get-reviews-for-run")
    with pytest.raises(ApprovalRefused) as refused:
        environment.require_approval(load_settings(env=actions_env(github_api)))
    assert f"GitHub answered {status}" in refused.value.message
    if status == 403:
        assert "actions: read" in refused.value.fix


def test_an_unreadable_environment_names_the_permission(github_api) -> None:
    github_api.fail_next(403, operation="repos/get-environment")
    with pytest.raises(ApprovalRefused) as refused:
        environment.require_approval(load_settings(env=actions_env(github_api)))
    assert "GitHub answered 403 to GET /repos/acme/models/environments/production" in (
        refused.value.message
    )
    assert "permissions: actions: read" in refused.value.fix


def test_a_protected_environment_without_an_approval_of_this_run_is_refused(github_api) -> None:
    """An administrator may bypass the protection rules: then nobody approved this run."""
    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["alice"])
    )
    github_api.respond(
        "actions/get-reviews-for-run",
        approvals_answer(github_api, [("alice", "approved", "staging")]),
    )
    with pytest.raises(ApprovalRefused, match="no approval of the Environment 'production'"):
        environment.require_approval(load_settings(env=actions_env(github_api)))


def test_who_approved_is_never_guessed(github_api) -> None:
    # Outside Actions: --approved-by is required, and taken as given.
    with pytest.raises(ApprovalRefused, match="outside a GitHub Actions job"):
        environment.require_approval(load_settings(env=env(github_api)))
    given = environment.require_approval(load_settings(env=env(github_api)), ["carol"])
    assert given.tags() == {"mlgate.production.approved_by": "carol"}
    # In Actions: anyone could type --approved-by; the run's approvals decide.
    with pytest.raises(ApprovalRefused, match="not accepted in a GitHub Actions job"):
        environment.require_approval(load_settings(env=actions_env(github_api)), ["carol"])
    # In Actions without a token: nothing can be read, so nothing moves.
    bare = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/models", "GITHUB_RUN_ID": "42"}
    with pytest.raises(ApprovalRefused, match="GITHUB_TOKEN is empty"):
        environment.require_approval(load_settings(env=bare))
    assert github_api.requests == []


def malformed_environment(stand_in: OpenAPIStandIn, how: str) -> object:
    """GET .../environments/production answered in a shape GitHub's description does not
    allow (the stand-in records each as a violation of the description: the oracle; a
    reviewer object without its login passes the stand-in's check, and names nobody)."""
    answer = environment_answer(stand_in, "production", ["alice"])
    if how == "a list":
        return [answer]
    if how == "rules as text":
        return answer | {"protection_rules": "required_reviewers"}
    if how == "rules of text":
        return answer | {"protection_rules": ["required_reviewers"]}
    [rule] = [r for r in answer["protection_rules"] if r["type"] == "required_reviewers"]
    rule["reviewers"] = [{"type": "User", "reviewer": {"id": 1}}]  # a reviewer without a login
    return answer


@pytest.mark.parametrize("opt_out", ["false", "true"])
@pytest.mark.parametrize(
    "how", ["a list", "rules as text", "rules of text", "a reviewer without a login"]
)
def test_an_environment_answer_that_cannot_be_read_is_refused_never_unprotected(
    github_api, how, opt_out
) -> None:
    """Read leniently, each of these once meant "no required reviewers" (with the opt-out: a
    deploy recorded as unprotected) or a traceback (a list). Who must approve is unknown:
    refused (exit 11), whatever allow-unprotected-environment says."""
    github_api.respond("repos/get-environment", malformed_environment(github_api, how))
    github_api.respond(
        "actions/get-reviews-for-run",
        approvals_answer(github_api, [("alice", "approved", "production")]),
    )
    extra = {"MLGATE_DEPLOY_ALLOW_UNPROTECTED_ENVIRONMENT": opt_out}
    with pytest.raises(ApprovalRefused) as refused:
        environment.require_approval(load_settings(env=actions_env(github_api, **extra)))
    message = refused.value.message
    assert refused.value.exit_code == 11
    assert "GitHub's answer about the Environment 'production' of acme/models" in message
    assert "GET /repos/acme/models/environments/production" in message
    assert "nothing was built or moved" in message and "GITHUB_API_URL" in refused.value.fix
    if how != "a reviewer without a login":  # which the stand-in's schema check lets through
        assert any("repos/get-environment" in v for v in github_api.violations), how
    github_api.violations.clear()  # the stand-in confirmed the answer breaks the description


@pytest.mark.parametrize("opt_out", ["false", "true"])
def test_approvals_that_cannot_be_read_are_refused_never_none(github_api, opt_out) -> None:
    github_api.respond(
        "repos/get-environment", environment_answer(github_api, "production", ["alice"])
    )
    reviews = approvals_answer(github_api, [("alice", "approved", "production")])
    github_api.respond("actions/get-reviews-for-run", {"reviews": reviews})  # not a list
    extra = {"MLGATE_DEPLOY_ALLOW_UNPROTECTED_ENVIRONMENT": opt_out}
    with pytest.raises(ApprovalRefused) as refused:
        environment.require_approval(load_settings(env=actions_env(github_api, **extra)))
    assert "GET /repos/acme/models/actions/runs/42/approvals" in refused.value.message
    assert "the answer is a dict, not a list of review objects" in refused.value.message
    assert any("actions/get-reviews-for-run" in v for v in github_api.violations)
    github_api.violations.clear()
