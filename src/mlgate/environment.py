"""One-time setup: create or update the GitHub Environment that gates Production.

`mlgate setup-environment --repository OWNER/REPO --reviewer alice --reviewer team:org/ml-leads`
makes the Environment (default `production`) require one of those reviewers, forbids approving
one's own run (prevent self-review), and lets only protected branches deploy. It is a PUT, so
re-running it converges. It needs a token with administration rights on the repository (a
fine-grained token with "Administration: write", or `gh auth token` of an admin), in
GITHUB_TOKEN; the workflow token cannot do it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mlgate import cli, github
from mlgate.errors import ConfigError
from mlgate.github_api import GitHubAPI
from mlgate.settings import GitHubContext

MAX_REVIEWERS = 6  # GitHub's limit per Environment
REPOSITORY = re.compile(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+")
LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
ENVIRONMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")


def reviewer(value: str) -> tuple[str, str]:
    """`LOGIN` (a user) or `team:ORG/SLUG`."""
    if value.startswith("team:"):
        org, _, slug = value[5:].partition("/")
        if not (LOGIN.fullmatch(org) and slug and re.fullmatch(r"[a-z0-9._-]+", slug)):
            raise argparse.ArgumentTypeError(f"{value!r}: write a team as team:ORG/SLUG")
        return "Team", f"{org}/{slug}"
    if not LOGIN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a GitHub login")
    return "User", value


def environment_body(
    reviewer_ids: Sequence[tuple[str, int]], *, wait_minutes: int, prevent_self_review: bool
) -> dict[str, Any]:
    return {
        "wait_timer": wait_minutes,
        "prevent_self_review": prevent_self_review,
        "reviewers": [{"type": kind, "id": rid} for kind, rid in reviewer_ids],
        "deployment_branch_policy": {"protected_branches": True, "custom_branch_policies": False},
    }


def setup(
    api: GitHubAPI,
    repository: str,
    environment: str,
    reviewers: Sequence[tuple[str, str]],
    *,
    wait_minutes: int = 0,
    prevent_self_review: bool = True,
) -> dict[str, Any]:
    ids = []
    for kind, name in reviewers:
        if kind == "User":
            ids.append((kind, api.json("GET", f"/users/{name}")["id"]))
        else:
            org, slug = name.split("/")
            ids.append((kind, api.json("GET", f"/orgs/{org}/teams/{slug}")["id"]))
    body = environment_body(ids, wait_minutes=wait_minutes, prevent_self_review=prevent_self_review)
    return api.json("PUT", f"/repos/{repository}/environments/{environment}", json=body)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate setup-environment: create or update the Environment that gates Production."""
    parser = argparse.ArgumentParser(prog="mlgate setup-environment", description=main.__doc__)
    parser.add_argument("--repository", metavar="OWNER/REPO", help="default: $GITHUB_REPOSITORY")
    parser.add_argument(
        "--environment", default="production", help="Environment name (default: production)"
    )
    parser.add_argument(
        "--reviewer",
        action="append",
        type=reviewer,
        required=True,
        metavar="LOGIN|team:ORG/SLUG",
        help=f"who may approve; repeatable, at most {MAX_REVIEWERS}",
    )
    parser.add_argument(
        "--wait-minutes",
        type=int,
        default=0,
        help="delay after approval before the job runs (0-43200)",
    )
    parser.add_argument(
        "--allow-self-review",
        action="store_true",
        help="let the person who triggered the run approve it (default: not)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        context = GitHubContext.from_env(os.environ if env is None else env)
        repository = args.repository or context.repository
        if not repository or not REPOSITORY.fullmatch(repository):
            raise ConfigError(
                f"{repository!r} is not OWNER/REPO", fix="pass --repository OWNER/REPO"
            )
        if not ENVIRONMENT.fullmatch(args.environment):
            raise ConfigError(
                f"{args.environment!r} is not an Environment name",
                fix="use letters, digits, '.', '_' or '-'",
            )
        if len(args.reviewer) > MAX_REVIEWERS:
            raise ConfigError(
                f"{len(args.reviewer)} reviewers; GitHub allows {MAX_REVIEWERS}",
                fix="name a team instead of its members",
            )
        if not 0 <= args.wait_minutes <= 43200:
            raise ConfigError("--wait-minutes must be 0-43200 (30 days)", fix="lower it")
        with GitHubAPI(context.api_url, context.token) as api:
            result = setup(
                api,
                repository,
                args.environment,
                args.reviewer,
                wait_minutes=args.wait_minutes,
                prevent_self_review=not args.allow_self_review,
            )
        names = ", ".join(name for _, name in args.reviewer)
        message = (
            f"Environment '{result.get('name', args.environment)}' of {repository}: "
            f"approval by {names}, "
            f"{'no ' if not args.allow_self_review else ''}self-review, "
            "deployments from protected branches only"
        )
        print(message, flush=True)
        github.write_summary(context, message)
        return 0

    return cli.run(action)
