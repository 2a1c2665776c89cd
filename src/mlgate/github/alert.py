"""Stage: act on a stale model. `mlgate alert` reads the summary `mlgate drift` (or
`mlgate backtest`) wrote and, when the model went stale:

1. dispatches the retraining pipeline through the REST API, once per Production version and
   episode: a `workflow_dispatch` of `--retrain-workflow`, or a `repository_dispatch` of
   `--retrain-event`;
2. opens one issue describing the drift, or updates the open one (found by a hidden marker and
   the `mlgate-drift` label), so repeated scheduled runs never make duplicates.

When the model is not stale it only says so; an open issue stays open for a person to close.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlgate import cli
from mlgate.errors import ConfigError
from mlgate.github import outputs as github
from mlgate.github.api import GitHubAPI
from mlgate.settings import Settings

LABEL = "mlgate-drift"
DISPATCHED = re.compile(r"<!-- mlgate:dispatched version=(\d+) -->")


@dataclass
class Alert:
    message: str
    issue: int | None = None
    issue_url: str | None = None
    dispatched: bool = False


def marker(model: str) -> str:
    return f"<!-- mlgate:monitor model={model} -->"


def issue_body(summary: Mapping[str, Any], settings: Settings, dispatched_for: str | None) -> str:
    kind, model, version = summary["kind"], summary["model"], summary["version"]
    lines = [
        marker(model),
        f"**{summary['headline']}**",
        "",
        f"Checked at {summary['checked_at']} by `mlgate {kind}`"
        + (f" in [this run]({settings.github.run_url})" if settings.github.run_url else "")
        + f"; MLflow run `{summary.get('run_id')}` holds the full report.",
        "",
    ]
    if kind == "drift":
        drifted = [(n, c) for n, c in summary["columns"].items() if c["drifted"]]
        rows: list[tuple[Any, ...]] = [
            (f"`{n}`", f"{c['score']:.4g}", c["method"], f"{c['threshold']:.4g}")
            for n, c in drifted
        ]
        lines += [
            f"{summary['count']} of {len(summary['columns'])} features drifted "
            f"({summary['share']:.0%}); current data: {summary['current']['rows']} rows from "
            f"{summary['current']['source']}.",
            "",
            github.markdown_table(["drifted feature", "score", "test", "threshold"], rows),
        ]
    else:
        rows = [
            (k, f"{summary['training_metrics'].get(k, float('nan')):.4f}", f"{v:.4f}")
            for k, v in summary["metrics"].items()
        ]
        lines.append(github.markdown_table(["metric", "at training", "now"], rows))
    lines += [
        "",
        "**What to do:** the retraining pipeline "
        + (
            f"was dispatched for version {dispatched_for}; its candidate goes through the gate "
            "and the production approval as usual."
            if dispatched_for
            else "was not dispatched (no --retrain-workflow or --retrain-event)."
        ),
        f"Trace the model with `mlgate lineage {version}`; roll back with the rollback workflow "
        "if the model is wrong rather than stale. Close this issue when it is handled; the "
        "next drift opens a new one.",
    ]
    if dispatched_for:
        lines.append(f"<!-- mlgate:dispatched version={dispatched_for} -->")
    return "\n".join(lines) + "\n"


def alert(
    settings: Settings,
    summary: Mapping[str, Any],
    *,
    workflow: str | None = None,
    event_type: str | None = None,
    ref: str | None = None,
) -> Alert:
    g = settings.github
    if not g.repository:
        raise ConfigError(
            "GITHUB_REPOSITORY is not set: no repository to alert",
            fix="run `mlgate alert` in a GitHub Actions job (or set GITHUB_REPOSITORY=OWNER/REPO)",
        )
    if not summary["stale"]:
        return Alert(f"{summary['headline']}: nothing to do")
    repo, model, version = g.repository, summary["model"], summary["version"]
    with GitHubAPI(g.api_url, g.token, permission_hint=PERMISSIONS) as api:
        existing = None
        for item in api.paginate(f"/repos/{repo}/issues?state=open&labels={LABEL}"):
            if "pull_request" not in item and marker(model) in (item.get("body") or ""):
                existing = item
                break
        already = already_dispatched(existing.get("body") if existing else None, version)
        dispatched = False
        if not already and (workflow or event_type):
            path, payload = dispatch_request(
                repo,
                summary,
                workflow=workflow,
                event_type=event_type,
                ref=ref or g.ref,
                run_url=g.run_url,
            )
            api.request("POST", path, json=payload)
            dispatched = True
        body = issue_body(summary, settings, version if (dispatched or already) else None)
        method, path, payload = issue_request(
            repo, None if existing is None else existing["number"], summary, body
        )
        issue = api.json(method, path, json=payload)
        verb = "opened" if existing is None else "updated"
    what = (
        "retraining dispatched"
        if dispatched
        else "retraining already dispatched for this version"
        if already
        else "no retraining configured"
    )
    return Alert(
        f"{summary['headline']}: {what}; issue #{issue['number']} {verb}",
        issue=issue["number"],
        issue_url=issue.get("html_url"),
        dispatched=dispatched,
    )


def already_dispatched(issue_body: str | None, version: str) -> bool:
    """Whether the open issue's body records a dispatch for this Production version."""
    done = DISPATCHED.search(issue_body or "")
    return done is not None and done.group(1) == version


def dispatch_request(
    repo: str,
    summary: Mapping[str, Any],
    *,
    workflow: str | None,
    event_type: str | None,
    ref: str | None,
    run_url: str | None,
) -> tuple[str, dict[str, Any]]:
    """The POST (path, body) that dispatches retraining: a workflow_dispatch of `workflow` on
    `ref` (default main), else a repository_dispatch of `event_type`."""
    if workflow:
        return (
            f"/repos/{repo}/actions/workflows/{quote(workflow, safe='')}/dispatches",
            {"ref": _branch(ref or "main")},
        )
    return (
        f"/repos/{repo}/dispatches",
        {
            "event_type": event_type,
            "client_payload": {
                "model": summary["model"],
                "version": summary["version"],
                "kind": summary["kind"],
                "headline": summary["headline"][:500],
                "run_url": run_url,
            },
        },
    )


def issue_request(
    repo: str, number: int | None, summary: Mapping[str, Any], body: str
) -> tuple[str, str, dict[str, Any]]:
    """The request (method, path, body) that opens the issue, or updates issue `number`."""
    title = (
        f"mlgate: {summary['model']} version {summary['version']} went stale ({summary['kind']})"
    )
    if number is None:
        return "POST", f"/repos/{repo}/issues", {"title": title, "body": body, "labels": [LABEL]}
    return "PATCH", f"/repos/{repo}/issues/{number}", {"title": title, "body": body}


def _branch(ref: str) -> str:
    """The branch or tag name a workflow_dispatch takes (GitHub's docs: not a full ref)."""
    return ref.removeprefix("refs/heads/").removeprefix("refs/tags/")


PERMISSIONS = (
    "the alert job needs `permissions: issues: write`, plus `actions: write` for a "
    "workflow_dispatch or `contents: write` for a repository_dispatch"
)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate alert: after `mlgate drift` or `mlgate backtest` found the model stale, dispatch
    retraining and open or update the one issue that describes it."""
    parser = cli.stage_parser("alert", main.__doc__)
    parser.add_argument(
        "--summary",
        required=True,
        type=Path,
        metavar="PATH",
        help="the JSON summary `mlgate drift` or `mlgate backtest` wrote (reports/drift.json)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--retrain-workflow",
        metavar="FILE",
        help="workflow file (or id) to dispatch, e.g. on-data-change.yml (workflow_dispatch)",
    )
    target.add_argument(
        "--retrain-event", metavar="TYPE", help="repository_dispatch event type to send instead"
    )
    parser.add_argument("--ref", help="branch or tag for the workflow_dispatch (default: this ref)")
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        try:
            summary = json.loads(args.summary.read_text())
            summary["stale"], summary["kind"], summary["version"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{args.summary} is not a summary of `mlgate drift` or `mlgate backtest`: {exc}",
                fix="pass the drift.json or backtest.json those commands wrote",
            ) from exc
        result = alert(
            settings,
            summary,
            workflow=args.retrain_workflow or None,
            event_type=args.retrain_event or None,
            ref=args.ref,
        )
        print(result.message, flush=True)
        github.write_outputs(
            settings.github,
            {
                "issue-number": str(result.issue or ""),
                "issue-url": result.issue_url or "",
                "dispatched": str(result.dispatched).lower(),
            },
        )
        github.write_summary(settings.github, f"### Alert\n{result.message}\n")
        return 0

    return cli.run(action)
