"""Stage: the pull-request gate's sticky comment.

One comment per pull request and model, found again by a hidden marker and edited in place on
every push, so reviewers read the latest verdict instead of a thread of stale ones. It is
rendered from the decision JSON the evaluate job uploaded; when there is none (training or
evaluation failed), the comment says which job failed and links the run. Only a comment the
token's own identity wrote is edited; two racing runs, and a person editing or deleting the
comment, still end with one comment (`upsert`). A run of a commit that is no longer the pull
request's head does not comment: a slow run of an older push never replaces a newer verdict.

Pull requests from forks get a read-only token and no secrets: the comment is skipped and the
job summary says why, so the gate still reports there.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate import cli
from mlgate.errors import ConfigError, GitHubError
from mlgate.gate import decision
from mlgate.github import outputs as github
from mlgate.github.api import GitHubAPI
from mlgate.settings import GitHubContext, process_env

MARKER = "<!-- mlgate:pr-gate key={key} -->"
# The author of comments made with the workflow's own token (GITHUB_TOKEN); a GitHub App's
# token writes as APP[bot], a personal token as its user (`--author`).
BOT = "github-actions[bot]"
KEY = re.compile(r"[A-Za-z0-9._/:@-]{1,200}")  # goes inside an HTML comment: no "-->"
LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")
MAX_BODY = 65_536  # GitHub's limit on a comment body, in characters


@dataclass(frozen=True)
class PullRequest:
    repository: str  # OWNER/REPO of the base repository
    number: int
    head_sha: str | None
    from_fork: bool
    head_from_event: bool = False  # head_sha is the pull request's head at the event


@dataclass(frozen=True)
class Posted:
    comment_id: int | None
    url: str | None
    created: bool
    skipped: str | None = None  # why nothing was posted


def pull_request(context: GitHubContext, number: int | None = None) -> PullRequest:
    """The pull request from the event payload (`--pull-request` wins for the number)."""
    event: dict[str, Any] = {}
    if context.event_path and context.event_path.is_file():
        event = json.loads(context.event_path.read_text(encoding="utf-8"))
    pr = event.get("pull_request") or {}
    number = number or pr.get("number")
    repository = context.repository or ((pr.get("base") or {}).get("repo") or {}).get("full_name")
    if not number or not repository:
        raise ConfigError(
            "no pull request to comment on (the event is "
            f"'{context.event_name or 'unknown'}', not pull_request)",
            fix="call the PR gate from a workflow triggered by `pull_request`, or pass "
            "--pull-request N with GITHUB_REPOSITORY set",
        )
    head_repo = ((pr.get("head") or {}).get("repo") or {}).get("full_name")
    base_repo = ((pr.get("base") or {}).get("repo") or {}).get("full_name") or repository
    return PullRequest(
        repository=repository,
        number=int(number),
        head_sha=(pr.get("head") or {}).get("sha") or context.sha,
        # A deleted fork has no head repo; treat it as a fork too.
        from_fork=bool(pr) and head_repo != base_repo,
        head_from_event=bool((pr.get("head") or {}).get("sha")),
    )


def render(
    record: Mapping[str, Any] | None,
    *,
    key: str,
    pr: PullRequest,
    run_url: str | None,
    needs: Mapping[str, Mapping[str, Any]],
) -> str:
    """The comment body: marker, decision (or what failed), links, and a footer."""
    if record is not None:
        body = decision.render_markdown(record)
    else:
        failed = [f"`{job}`: {info.get('result', 'unknown')}" for job, info in needs.items()]
        body = (
            "### ⚠️ Gate did not decide: no decision was produced\n"
            + ("Jobs: " + ", ".join(failed) + ".\n" if failed else "")
            + "The candidate could not be trained or evaluated; the logs say why."
        )
    footer = []
    if run_url:
        footer.append(f"[workflow run]({run_url})")
    if pr.head_sha:
        footer.append(f"commit {pr.head_sha[:12]}")
    footer.append("this comment is updated in place on every push")
    text = f"{MARKER.format(key=key)}\n{body}\n\n<sub>mlgate · {' · '.join(footer)}</sub>\n"
    if len(text) > MAX_BODY:
        cut = "\n\n… (truncated; the full table is in the job summary)\n"
        text = text[: MAX_BODY - len(cut)] + cut
    return text


def upsert(api: GitHubAPI, pr: PullRequest, marker: str, body: str, author: str = BOT) -> Posted:
    """Edit the comment carrying `marker` written by `author`, or create it: exactly one per PR
    and key, whatever else happens meanwhile.

    - A comment by anyone else is never taken over, even if it carries the marker text.
    - Two gate runs of one PR racing (both find no comment, both create one): after creating,
      the list is read again, and the oldest comment of ours is the one kept. A run whose new
      comment is not the oldest deletes it and edits the oldest; the run that created the
      oldest deletes the newer ones it sees. Every order of the two runs' requests ends with
      one comment.
    - A comment deleted by a person between the list and the edit (404) is created again.
    """
    path = f"/repos/{pr.repository}/issues/{pr.number}/comments"
    for _ in range(3):  # a comment deleted under us each time: give up after three rounds
        ours = _ours(api.paginate(path), marker, author)
        if ours:
            keep, *extra = ours
            _delete(api, pr, extra)  # a race of earlier runs left them
            if keep.get("body") == body:
                return Posted(keep["id"], keep.get("html_url"), created=False)
            edited = api.request(
                "PATCH",
                f"/repos/{pr.repository}/issues/comments/{keep['id']}",
                json={"body": body},
                allow=frozenset({404}),
            )
            if edited.status_code != 404:
                updated = edited.json()
                return Posted(updated["id"], updated.get("html_url"), created=False)
            continue  # deleted by a person meanwhile: look again
        created = api.json("POST", path, json={"body": body})
        login = (created.get("user") or {}).get("login") or author
        if login != author:
            github.annotate(
                "warning",
                f"the gate's comments are written by {login}, not {author}: pass "
                f"`author: {login}` to the comment action (--author), or each run creates a "
                "comment before it finds the one it wrote earlier",
                title="mlgate PR gate",
            )
        again = _ours(api.paginate(path), marker, login)
        oldest = again[0] if again else created
        if oldest["id"] == created["id"]:
            _delete(api, pr, again[1:])  # racers' newer comments
            return Posted(created["id"], created.get("html_url"), created=True)
        _delete(api, pr, [created])  # a racer created one first: edit that one instead
        author = login
    raise GitHubError(
        f"the gate's comment on {pr.repository}#{pr.number} was deleted three times while "
        "this run wrote it",
        fix="re-run the comment job; if a bot deletes comments carrying the marker, exempt it",
    )


def _ours(comments: Iterable[Mapping[str, Any]], marker: str, author: str) -> list[Any]:
    """The comments carrying `marker` that `author` wrote, oldest first (GitHub's ids grow)."""
    mine = [
        c
        for c in comments
        if marker in (c.get("body") or "") and (c.get("user") or {}).get("login") == author
    ]
    return sorted(mine, key=lambda c: int(c["id"]))


def _delete(api: GitHubAPI, pr: PullRequest, comments: Iterable[Mapping[str, Any]]) -> None:
    for extra in comments:  # 404: another run deleted it first
        api.request(
            "DELETE",
            f"/repos/{pr.repository}/issues/comments/{extra['id']}",
            allow=frozenset({404}),
        )


def post(
    context: GitHubContext,
    *,
    decision_file: Path,
    key: str,
    number: int | None = None,
    needs: Mapping[str, Mapping[str, Any]] | None = None,
    author: str = BOT,
) -> Posted:
    pr = pull_request(context, number)
    record = decision.load(decision_file) if decision_file.is_file() else None
    body = render(record, key=key, pr=pr, run_url=context.run_url, needs=needs or {})
    if pr.from_fork:
        why = (
            "this pull request comes from a fork: GitHub gives its workflows a read-only token "
            "and no secrets, so the gate cannot comment; its result is in this summary"
        )
        github.annotate("notice", why, title="mlgate PR gate")
        github.write_summary(context, f"> [!NOTE]\n> The gate did not comment: {why}.")
        return Posted(None, None, created=False, skipped=why)
    with GitHubAPI(context.api_url, context.token) as api:
        if pr.head_from_event and pr.head_sha:
            pull = api.json("GET", f"/repos/{pr.repository}/pulls/{pr.number}")
            head = str((pull.get("head") or {}).get("sha") or "")
            if head and head != pr.head_sha:
                why = (
                    f"this run gated commit {pr.head_sha[:12]}, but the pull request's head is "
                    f"now {head[:12]}: the run of that commit writes the comment, so an older "
                    "verdict never replaces a newer one"
                )
                github.annotate("notice", why, title="mlgate PR gate")
                github.write_summary(context, f"> [!NOTE]\n> The gate did not comment: {why}.")
                return Posted(None, None, created=False, skipped=why)
        return upsert(api, pr, MARKER.format(key=key), body, author)


def _key(value: str) -> str:
    key = value.strip() or "default"
    if not KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(
            f"{value!r}: a key is letters, digits and . _ / : @ - (at most 200)"
        )
    return key


def _author(value: str) -> str:
    login = value.strip() or BOT
    if not LOGIN.fullmatch(login):
        raise argparse.ArgumentTypeError(
            f"{value!r}: a GitHub login is letters, digits and - (a bot's ends in [bot])"
        )
    return login


def _needs(value: str) -> dict[str, dict[str, Any]]:
    try:
        needs = json.loads(value or "{}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--needs is not JSON: {exc}") from exc
    if not isinstance(needs, dict):
        raise argparse.ArgumentTypeError("--needs must be a JSON object (toJSON(needs))")
    return needs


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate comment: post or update the pull-request gate's sticky comment."""
    parser = argparse.ArgumentParser(prog="mlgate comment", description=main.__doc__)
    parser.add_argument(
        "--decision",
        type=Path,
        default=Path("reports/decision.json"),
        help="decision JSON from `mlgate evaluate`; when missing, the comment says the gate "
        "did not decide (default: reports/decision.json)",
    )
    parser.add_argument(
        "--key",
        type=_key,
        default="default",
        help="tells this gate's comment from other mlgate gates on the same PR "
        "(e.g. the params file); default: default",
    )
    parser.add_argument(
        "--pull-request", type=int, metavar="N", help="PR number (default: from the event)"
    )
    parser.add_argument(
        "--needs",
        type=_needs,
        default={},
        metavar="JSON",
        help="toJSON(needs) of the calling job, to say which job failed",
    )
    parser.add_argument(
        "--author",
        type=_author,
        default=BOT,
        metavar="LOGIN",
        help="who the token writes as: only its comments are edited, never another's carrying "
        f"the marker (default: {BOT}, the workflow token; a GitHub App: APP[bot])",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        context = GitHubContext.from_env(process_env() if env is None else env)
        posted = post(
            context,
            decision_file=args.decision,
            key=args.key,
            number=args.pull_request,
            needs=args.needs,
            author=args.author,
        )
        if posted.skipped is None:
            verb = "created" if posted.created else "updated"
            print(f"{verb} the gate comment: {posted.url}", flush=True)
            github.write_summary(context, f"Gate comment {verb}: {posted.url}")
        github.write_outputs(
            context,
            {
                "comment-id": str(posted.comment_id or ""),
                "comment-url": posted.url or "",
                "commented": "true" if posted.skipped is None else "false",
            },
        )
        return 0

    return cli.run(action)
