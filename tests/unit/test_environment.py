"""The Environment's logic without a server: parsing reviewers, the PUT body (held to GitHub's
OpenAPI description), reading required reviewers and a run's approvals out of answers built
from the description's own examples, and what an approval records on the version."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from mlgate.errors import ApprovalRefused
from mlgate.github import environment
from mlgate.github.environment import Approval
from mlgate.settings import Settings, load_settings
from tests.github_openapi import (
    ENVIRONMENT_PATH,
    OpenAPIStandIn,
    approvals_answer,
    environment_answer,
)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("alice", ("User", "alice")),
        ("a-1", ("User", "a-1")),
        ("team:octo-org/ml-leads", ("Team", "octo-org/ml-leads")),
        ("team:org/a.b_c", ("Team", "org/a.b_c")),
    ],
)
def test_a_reviewer_is_a_login_or_a_team(given: str, parsed: tuple[str, str]) -> None:
    assert environment.reviewer(given) == parsed


@pytest.mark.parametrize(
    "given",
    ["-alice", "al ice", "a" * 40, "team:org", "team:org/", "team:org/Leads", "team:/x", ""],
)
def test_a_malformed_reviewer_is_refused(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        environment.reviewer(given)


def test_the_environment_body_is_what_github_takes(github_request, openapi) -> None:
    body = environment.environment_body(
        [("User", 7), ("Team", 12)], wait_minutes=5, prevent_self_review=True
    )
    assert body == {
        "wait_timer": 5,
        "prevent_self_review": True,
        "reviewers": [{"type": "User", "id": 7}, {"type": "Team", "id": 12}],
        "deployment_branch_policy": {"protected_branches": True, "custom_branch_policies": False},
    }
    status, _ = github_request("PUT", "/repos/octo/models/environments/production", body)
    assert status == 200
    assert openapi.violations == []


def test_a_body_github_would_refuse_is_caught_by_the_description(github_request, openapi) -> None:
    """The oracle can fail: a reviewer id as text breaks the description."""
    body = environment.environment_body([("User", 7)], wait_minutes=0, prevent_self_review=False)
    body["reviewers"][0]["id"] = "7"
    status, _ = github_request("PUT", "/repos/octo/models/environments/production", body)
    assert status == 400
    assert openapi.violations
    openapi.violations.clear()


def test_required_reviewers_of_the_descriptions_example(openapi: OpenAPIStandIn) -> None:
    """GitHub's own example names a user (octocat) and a team (justice-league)."""
    example = openapi.example(openapi.spec["paths"][ENVIRONMENT_PATH]["get"], 200)
    assert environment.reviewer_names(example) == ["octocat", "justice-league"]


def test_required_reviewers_of_an_environment(openapi: OpenAPIStandIn) -> None:
    answer = environment_answer(openapi, "production", ["alice", "bob"])
    assert environment.reviewer_names(answer) == ["alice", "bob"]


@pytest.mark.parametrize("reviewers", [None, []])
def test_an_unprotected_environment_has_no_reviewers(openapi, reviewers) -> None:
    answer = environment_answer(openapi, "production", reviewers)
    assert [r["type"] for r in answer["protection_rules"]] == ["branch_policy"]
    assert environment.reviewer_names(answer) == []


def test_an_environment_without_protection_rules(openapi) -> None:
    answer: dict[str, Any] = environment_answer(openapi, "production", None)
    del answer["protection_rules"]
    assert environment.reviewer_names(answer) == []


def test_only_approvals_of_this_environment_count(openapi: OpenAPIStandIn) -> None:
    reviews = approvals_answer(
        openapi,
        [
            ("carol", "approved", "Production"),  # names compared without regard to case
            ("alice", "approved", "production"),
            ("alice", "approved", "production"),  # once
            ("mallory", "approved", "staging"),  # another Environment of the run
            ("dave", "rejected", "production"),
        ],
    )
    assert environment.approvers(reviews, "production") == ["alice", "carol"]


def test_no_approvals(openapi: OpenAPIStandIn) -> None:
    assert environment.approvers([], "production") == []
    assert environment.approvers(approvals_answer(openapi, [("x", "rejected", "p")]), "p") == []


def test_an_approval_records_who_and_where() -> None:
    tags = Approval(("alice", "bob"), "production", ("alice",)).tags()
    assert tags == {
        "mlgate.production.approved_by": "alice, bob",
        "mlgate.production.environment": "production",
    }


def test_an_approval_outside_actions_records_no_environment() -> None:
    assert Approval(("alice",)).tags() == {"mlgate.production.approved_by": "alice"}


def test_an_unprotected_deploy_says_so_and_never_unknown() -> None:
    tags = Approval((), "production", (), unprotected=True).tags()
    assert tags["mlgate.production.approved_by"] == "nobody"
    assert tags[environment.UNPROTECTED_TAG] == (
        "true: deployed with allow-unprotected-environment; Environment 'production' "
        "required reviewers: none"
    )


# -- require_approval's decisions that need no call ------------------------------------------
def _settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env=env, cwd=tmp_path)


def test_outside_actions_the_approver_must_be_named(tmp_path: Path) -> None:
    with pytest.raises(ApprovalRefused) as caught:
        environment.require_approval(_settings(tmp_path))
    assert caught.value.exit_code == 11
    assert "--approved-by" in caught.value.fix


def test_outside_actions_the_named_approver_is_recorded(tmp_path: Path) -> None:
    approval = environment.require_approval(_settings(tmp_path), ["alice"])
    assert approval == Approval(("alice",))
    assert approval.tags() == {"mlgate.production.approved_by": "alice"}


def test_in_actions_a_typed_approver_is_refused(tmp_path: Path) -> None:
    """Anyone could type --approved-by; in a job the approvers are read, never taken."""
    settings = _settings(tmp_path, GITHUB_ACTIONS="true", GITHUB_REPOSITORY="o/r")
    with pytest.raises(ApprovalRefused, match="not accepted in a GitHub Actions job"):
        environment.require_approval(settings, ["alice"])


@pytest.mark.parametrize("missing", ["GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_TOKEN"])
def test_in_actions_without_what_it_needs_to_read_approvals_it_refuses(
    tmp_path: Path, missing: str
) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "5"}
    env |= {"GITHUB_TOKEN": "t"}
    del env[missing]
    with pytest.raises(ApprovalRefused) as caught:
        environment.require_approval(_settings(tmp_path, **env))
    assert caught.value.fix == environment.READ_PERMISSION
