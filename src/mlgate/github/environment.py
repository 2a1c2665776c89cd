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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlgate import cli
from mlgate.errors import ApprovalRefused, ConfigError, GitHubError
from mlgate.github import outputs as github
from mlgate.github.api import GitHubAPI
from mlgate.settings import GitHubContext, Settings, process_env

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
    result: dict[str, Any] = api.json(
        "PUT", f"/repos/{repository}/environments/{environment}", json=body
    )
    return result


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
        context = GitHubContext.from_env(process_env() if env is None else env)
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


# -- The deploy job's check: Production moves only with a verified approval -------------------
# GitHub creates an Environment that a workflow names but that does not exist yet, with no
# protection rules: a caller that never ran `setup-environment` would deploy with nobody
# approving. So the deploy reads the Environment and the run's approvals itself and fails closed.
READ_PERMISSION = (
    "the deploy job needs `permissions: actions: read` (GET .../environments/{name} and "
    ".../actions/runs/{id}/approvals; a fine-grained token or GitHub App needs the "
    '"Actions: read" repository permission) and GITHUB_TOKEN: ${{ github.token }} in its env'
)
UNPROTECTED_TAG = "mlgate.production.unprotected_environment"
ENVIRONMENT_TAG = "mlgate.production.environment"
NOBODY = "nobody"


@dataclass(frozen=True)
class Approval:
    """Who approved this deployment, and under which Environment rules."""

    approved_by: tuple[str, ...]
    environment: str | None = None  # None: outside Actions (--approved-by)
    reviewers: tuple[str, ...] = ()  # the Environment's required reviewers
    unprotected: bool = False  # allow_unprotected_environment was used

    def tags(self) -> dict[str, str]:
        """What the move records on the version (never a silent "unknown")."""
        tags = {"mlgate.production.approved_by": ", ".join(self.approved_by) or NOBODY}
        if self.environment:
            tags[ENVIRONMENT_TAG] = self.environment
        if self.unprotected:
            tags[UNPROTECTED_TAG] = (
                f"true: deployed with allow-unprotected-environment; Environment "
                f"'{self.environment}' required reviewers: {', '.join(self.reviewers) or 'none'}"
            )
        return tags


def required_reviewers(api: GitHubAPI, repository: str, environment: str) -> list[str]:
    """The logins and team slugs of the Environment's `required_reviewers` rules."""
    path = f"/repos/{repository}/environments/{environment}"
    try:
        return reviewer_names(api.json("GET", path))
    except ValueError as exc:  # a body that is not JSON, or not an Environment
        raise ValueError(f"GET {path}: {exc}") from exc


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def reviewer_names(body: Any) -> list[str]:
    """The required reviewers in an Environment as GitHub's GET answers it. An answer that is
    not an Environment as GitHub's API describes it (another shape, a rule or reviewer that
    is not an object, a reviewer without a name) raises ValueError: who must approve is then
    unknown, never "nobody"."""
    if not isinstance(body, Mapping):
        raise ValueError(f"the answer is a {_kind(body)}, not an Environment object")
    rules = body.get("protection_rules", [])
    if not isinstance(rules, list):
        raise ValueError(f"its protection_rules is a {_kind(rules)}, not a list")
    names = []
    for rule in rules:
        if not isinstance(rule, Mapping):
            raise ValueError(f"a protection rule is a {_kind(rule)}, not an object")
        if rule.get("type") != "required_reviewers":
            continue
        entries = rule.get("reviewers", [])
        if not isinstance(entries, list):
            raise ValueError(f"its required_reviewers rule holds a {_kind(entries)}, not a list")
        for entry in entries:
            who = entry.get("reviewer") if isinstance(entry, Mapping) else None
            name = (
                who.get("login") or who.get("slug") or who.get("name")
                if isinstance(who, Mapping)
                else None
            )
            if not name:
                raise ValueError(f"a required reviewer has no login, slug or name: {entry!r:.200}")
            names.append(str(name))
    return names


def run_approvers(api: GitHubAPI, repository: str, run_id: str, environment: str) -> list[str]:
    """Who approved this run's deployment to `environment` (names compared as GitHub does,
    without regard to case); approvals of other Environments of the run do not count."""
    path = f"/repos/{repository}/actions/runs/{run_id}/approvals"
    try:
        return approvers(api.json("GET", path), environment)
    except ValueError as exc:  # a body that is not JSON, or not a list of reviews
        raise ValueError(f"GET {path}: {exc}") from exc


def approvers(reviews: Any, environment: str) -> list[str]:
    """The logins that approved `environment` in a run's approvals as GitHub answers them. An
    answer that is not a list of review objects raises ValueError (who approved is unknown)."""
    if not isinstance(reviews, list) or not all(isinstance(r, Mapping) for r in reviews):
        raise ValueError(f"the answer is a {_kind(reviews)}, not a list of review objects")
    wanted = environment.lower()
    return sorted(
        {
            review["user"]["login"]
            for review in reviews
            if isinstance(review, dict)
            and review.get("state") == "approved"
            and (review.get("user") or {}).get("login")
            and any(
                str((e or {}).get("name", "")).lower() == wanted
                for e in review.get("environments") or []
            )
        }
    )


def require_approval(settings: Settings, given: Sequence[str] = ()) -> Approval:
    """The approval this deployment moves Production on, or ApprovalRefused.

    In an Actions job: the Environment must have required reviewers (or the caller opted out
    with deploy.allow_unprotected_environment, which is recorded), and the approvers are read
    from the run's approvals; `--approved-by` is refused there, since anyone could type it.
    Outside Actions nothing can be read, so `--approved-by` is required."""
    g, d = settings.github, settings.deploy
    if not g.actions:
        if not given:
            raise ApprovalRefused(
                "outside a GitHub Actions job nobody's approval can be read, and Production "
                "is not moved without one",
                fix="pass --approved-by LOGIN (who approved this deployment; recorded on the "
                "version), or deploy through the deploy workflow behind its Environment",
            )
        return Approval(tuple(given))
    if given:
        raise ApprovalRefused(
            "--approved-by is not accepted in a GitHub Actions job: the approvers are read "
            "from the run's approvals",
            fix="drop --approved-by; the Environment's reviewers approve the deploy job",
        )
    if not (g.repository and g.run_id and g.token):
        raise ApprovalRefused(
            "cannot read the Environment and the run's approvals: GITHUB_REPOSITORY, "
            "GITHUB_RUN_ID or GITHUB_TOKEN is empty",
            fix=READ_PERMISSION,
        )
    environment = d.environment
    where = f"Environment '{environment}' of {g.repository}"
    try:
        with GitHubAPI(g.api_url, g.token, permission_hint=READ_PERMISSION) as api:
            reviewers = required_reviewers(api, g.repository, environment)
            if not reviewers:
                if not d.allow_unprotected_environment:
                    raise ApprovalRefused(
                        f"the {where} has no required reviewers: nobody would approve what goes "
                        "to Production (GitHub creates an Environment a workflow names, "
                        "unprotected); nothing was built or moved",
                        fix=f"run `mlgate setup-environment --repository {g.repository} "
                        f"--environment {environment} --reviewer LOGIN` with an admin token (or "
                        "add required reviewers under Settings > Environments), then re-run; to "
                        "deploy without approval on purpose, set the deploy workflow's input "
                        "allow-unprotected-environment: true (recorded on the version)",
                    )
                github.annotate(
                    "warning",
                    f"the {where} has no required reviewers; deploying without approval "
                    "because allow-unprotected-environment is set (recorded on the version)",
                )
                return Approval((), environment, (), unprotected=True)
            who = run_approvers(api, g.repository, g.run_id, environment)
    except GitHubError as exc:
        raise ApprovalRefused(
            f"cannot verify the approval of this deployment: {exc.message}", fix=exc.fix
        ) from exc
    except ValueError as exc:  # an answer GitHub's API does not give: unknown, never "none"
        raise ApprovalRefused(
            f"cannot verify the approval of this deployment: GitHub's answer about the {where} "
            f"is not what its API describes ({exc}), so who must approve, or who did, is "
            "unknown; nothing was built or moved (allow-unprotected-environment does not "
            "apply to an answer that cannot be read)",
            fix="check GITHUB_API_URL (a proxy or GitHub Enterprise Server answering "
            "otherwise?) and re-run the job",
        ) from exc
    if who:
        return Approval(tuple(who), environment, tuple(reviewers))
    if d.allow_unprotected_environment:
        github.annotate(
            "warning",
            f"run {g.run_id} has no approval of the {where} (protection rules bypassed?); "
            "deploying because allow-unprotected-environment is set (recorded on the version)",
        )
        return Approval((), environment, tuple(reviewers), unprotected=True)
    raise ApprovalRefused(
        f"run {g.run_id} has no approval of the {where}, although it requires "
        f"{', '.join(reviewers)}: an administrator may have bypassed the protection rules, "
        "or the job is bound to another Environment; nothing was built or moved",
        fix=f"bind the deploy job to `environment: {environment}` (the workflow input "
        "`environment` sets both) and have a reviewer approve the run",
    )
