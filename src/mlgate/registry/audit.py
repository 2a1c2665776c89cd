"""Stage: audit. `mlgate lineage` and `mlgate metrics`, read from the registry alone.

`mlgate lineage [production|staging|N]` traces one model version back to its origin: the commit
and `data.dvc` version it was trained from, the training run with its params and metrics, the
decision that compared it with its champion, the image and its digest, who approved it and
when, the workflow runs, and the versions it replaced. `--json` for machines; the deploy job
writes the same block into its summary.

`mlgate metrics` computes delivery metrics (DORA's four keys, for models) over a window from the
registry's history of Production moves (`mlgate.history.*` tags on the registered model, one a
move): deployment frequency, lead time from the data commit to Production, change failure rate
(deployments later rolled back) and time to restore (how long a withdrawn version served).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlgate import cli
from mlgate.errors import ConfigError
from mlgate.gate.decision import DECISION_ARTIFACT, ModelRef, mlflow_links
from mlgate.github import outputs as github
from mlgate.registry import tracking
from mlgate.settings import Settings

ALIASES = ("production", "staging")


def history(client: Any, name: str, production_model: str | None = None) -> list[dict[str, Any]]:
    """Every recorded pointer move of `name`, oldest first; with a production model of its
    own, its Production moves too, in `name`'s version numbers (a copy's move names its
    original in `mlgate.copy.of`, and the version it replaced in the move's record)."""
    from mlflow.exceptions import MlflowException

    with tracking.errors(f"reading the history of {name}"):
        model = client.get_registered_model(name)
    events = [
        _event(json.loads(value))
        for key, value in model.tags.items()
        if key.startswith(tracking.HISTORY)
    ]
    if production_model and production_model != name:
        with tracking.errors(f"reading the history of {production_model}"):
            try:
                held = client.get_registered_model(production_model).tags
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                held = {}
        for key, value in held.items():
            if key.startswith(tracking.HISTORY):
                event = _original(json.loads(value), name)
                if event is not None:
                    events.append(_event(event))
    return sorted(events, key=lambda e: e["at"])


def _original(event: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A Production move of a copy, in the numbers of its original (None: not mlgate's)."""
    from mlgate.registry.moves import COPY_OF

    of = str(event.get("tags", {}).get(COPY_OF, ""))
    if not of.startswith(f"{name}/"):
        return None
    previous = event.get("tags", {}).get("mlgate.production.previous")
    if "mlgate.rollback.from" in event.get("tags", {}):
        previous = event["tags"]["mlgate.rollback.from"]
    return event | {"version": of.removeprefix(f"{name}/"), "previous": previous}


def _version(value: Any) -> str | None:
    """A version as the registry's REST API spells it (a string): a SQL store hands back
    ints, and history written through one holds ints next to strings."""
    return None if value in (None, "", "none") else str(value)


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return event | {"version": _version(event["version"]), "previous": _version(event["previous"])}


def replaced_versions(
    number: str,
    events: Sequence[Mapping[str, Any]],
    production: Mapping[str, str],
    promotion: Mapping[str, str],
) -> list[str]:
    """The versions `number` replaced (in Production or Staging), each once, oldest first:
    from the history's moves to `number` and from the version's own tags."""
    found = {_version(e["previous"]) for e in events if _version(e["version"]) == number}
    found |= {_version(production.get("previous")), _version(promotion.get("replaced"))}
    return sorted((v for v in found if v is not None), key=int)


def existing(client: Any, name: str, limit: int = 10) -> list[str]:
    """The newest versions of `name`, each with the aliases it holds: `3 (staging)`."""
    with tracking.errors(f"listing the versions of {name}"):
        versions = tracking.search_versions(client, name)
        # search results carry no aliases; the registered model maps each to its version
        held: dict[str, list[str]] = {}
        if versions:
            for alias, number in (client.get_registered_model(name).aliases or {}).items():
                held.setdefault(str(number), []).append(alias)
    newest = sorted({int(v.version) for v in versions}, reverse=True)
    return [
        f"{n}" + (f" ({', '.join(sorted(held[str(n)]))})" if str(n) in held else "")
        for n in newest[:limit]
    ]


def _suggest(client: Any, name: str) -> str:
    found = existing(client, name)
    if not found:
        return f"model '{name}' has no versions: train one (`mlgate train`), or check model.name"
    first = found[0].split(" ")[0]
    return f"versions that exist (newest first): {', '.join(found)}; e.g. `mlgate lineage {first}`"


def resolve(
    client: Any, name: str, which: str | None, production_model: str | None = None
) -> Any:  # ModelVersion
    from mlgate.registry.moves import get_version, production_of

    if which is None or which in ALIASES:
        alias = which or "production"
        if alias == "production":  # the one reader of Production (registry.production_of)
            found = production_of(client, name, production_model or name)
            held = None if found is None else found.source
        else:
            held = tracking.version_by_alias(client, name, alias)
        if held is None:
            given = "no version named and " if which is None else ""
            raise ConfigError(
                f"{given}{name} has no version in {alias}",
                fix=_suggest(client, name),
            )
        return held
    try:
        version = cli.model_version(which)
    except Exception:
        raise ConfigError(
            f"{which!r} is neither production, staging nor a version number",
            fix="use `mlgate lineage production`, `staging` or a version such as 3",
        ) from None
    try:
        return get_version(client, name, version)
    except ConfigError as exc:
        raise ConfigError(exc.message, fix=_suggest(client, name)) from None


def _tags(tags: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}


def _decision(client: Any, run_id: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracking.run_file(client, run_id, f"{DECISION_ARTIFACT}/decision.json", tmp)
        except Exception:  # never evaluated (or the artifact store lost it): say so, go on
            return None
        record: dict[str, Any] = json.loads(Path(path).read_text())
        return record


def lineage(client: Any, settings: Settings, which: str | None) -> dict[str, Any]:
    """The lineage record of one version (see the module's docstring)."""
    from mlgate.registry import moves as registry

    name, holder_model = settings.model.name, settings.model.production_model
    version = resolve(client, name, which, holder_model)
    number = str(version.version)
    tags = {k: v for k, v in version.tags.items() if not k.startswith(tracking.PENDING)}
    aliases = set(version.aliases)
    if holder_model != name:
        # Its record in Production (approval, image, rollback) is on its copy, if it has one.
        with tracking.errors(f"reading the copy of {name} version {number}"):
            copy = registry.find_copy(client, holder_model, name, number)
        if copy is not None and registry.COPY_OF in copy.tags:
            tags = {k: v for k, v in tags.items() if not k.startswith(registry.NOT_COPIED)}
            tags |= {k: v for k, v in copy.tags.items() if not k.startswith(tracking.PENDING)}
        found = registry.production(client, settings)
        aliases.discard("production")
        if found is not None and found.version == number:
            aliases.add("production")
    with tracking.errors(f"reading the training run of {name} version {number}"):
        run = client.get_run(version.run_id)
    links = mlflow_links(
        settings.tracking_uri, ModelRef(name, number, version.run_id), None, run.info.experiment_id
    )
    decision = _decision(client, version.run_id)
    events = [
        e for e in history(client, name, holder_model) if number in (e["version"], e["previous"])
    ]
    production, promotion = _tags(tags, "mlgate.production."), _tags(tags, "mlgate.promotion.")
    replaced = replaced_versions(number, events, production, promotion)

    def ms(value: int | None) -> str | None:
        return None if value is None else _iso(datetime.fromtimestamp(value / 1000, UTC))

    return {
        "model": name,
        "version": number,
        "aliases": sorted(aliases),
        "stage": version.current_stage,
        "source": {
            "commit": tags.get("mlgate.git.commit"),
            "committed_at": tags.get("mlgate.git.committed_at"),
            "ref": tags.get("mlgate.git.ref"),
            "dirty": tags.get("mlgate.git.dirty"),
            "repository": tags.get("mlgate.github.repository"),
        },
        "data": {
            "dvc_file": tags.get("mlgate.data.dvc_file"),
            "md5": tags.get("mlgate.data.md5"),
            "path": tags.get("mlgate.data.path"),
            "remote": tags.get("mlgate.data.remote"),
            "remote_url": tags.get("mlgate.data.remote_url"),
            "object_url": tags.get("mlgate.data.object_url"),
            "rows": tags.get("mlgate.data.rows"),
        },
        "training": {
            "run_id": version.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "started_at": ms(run.info.start_time),
            "ended_at": ms(run.info.end_time),
            "url": links.get("candidate_run"),
            "params": dict(sorted(run.data.params.items())),
            "metrics": dict(sorted(run.data.metrics.items())),
        },
        "decision": None
        if decision is None
        else {
            "verdict": decision["verdict"],
            "mode": decision["mode"],
            "created_at": decision["created_at"],
            "champion": decision["champion"]["version"] if decision["champion"] else None,
            "reasons": decision["reasons"],
            "metrics": decision["metrics"],
        },
        "promotion": promotion
        | ({"outcome": tags["mlgate.promotion"]} if "mlgate.promotion" in tags else {}),
        "image": {
            "ref": tags.get("mlgate.image.ref"),
            "digest": tags.get("mlgate.image.digest"),
            "pushed_at": tags.get("mlgate.image.pushed_at"),
        },
        "production": production,
        "rollback": _tags(tags, "mlgate.rollback."),
        "monitoring": {
            kind: _tags(tags, f"mlgate.{kind}.")
            for kind in ("drift", "backtest")
            if f"mlgate.{kind}.checked_at" in tags
        },
        "workflow_runs": {
            key: value
            for key, value in {
                "train": tags.get("mlgate.github.run_url"),
                "promotion": promotion.get("run_url"),
                "production": production.get("run_url"),
            }.items()
            if value
        },
        "replaced": replaced,
        "history": events,
        "links": links,
    }


def lineage_markdown(record: Mapping[str, Any]) -> str:
    """The lineage as a Markdown table (the deploy job's summary and `mlgate lineage`)."""
    src, data, run = record["source"], record["data"], record["training"]
    decision, image, prod = record["decision"], record["image"], record["production"]
    rows: list[tuple[str, str]] = [
        (
            "model",
            f"`{record['model']}` version {record['version']}"
            + (f" ({', '.join(record['aliases'])})" if record["aliases"] else ""),
        ),
        (
            "commit",
            f"`{src['commit']}`" + (f" ({src['committed_at']})" if src["committed_at"] else ""),
        ),
        ("data", f"`{data['dvc_file']}` md5 `{data['md5']}`, {data['rows'] or '?'} rows"),
        ("DVC remote", f"{data['remote']}: `{data['object_url'] or data['remote_url']}`"),
        (
            "training run",
            f"`{run['run_id']}` ({run['status']}, {run['started_at']})"
            + (f" [MLflow]({run['url']})" if run["url"] else ""),
        ),
        (
            "holdout",
            ", ".join(
                f"{k.removeprefix('holdout_')} {v:.4f}"
                for k, v in run["metrics"].items()
                if k.startswith("holdout_")
            )
            or "–",
        ),
        (
            "params",
            ", ".join(
                f"{k}={v}"
                for k, v in run["params"].items()
                if k.startswith("xgb.") or k.startswith("train.")
            )
            or f"{len(run['params'])} params",
        ),
    ]
    if decision:
        rows.append(
            (
                "decision",
                f"{decision['verdict']} against "
                + (f"version {decision['champion']}" if decision["champion"] else "no champion")
                + f" ({decision['created_at']})",
            )
        )
    if image["ref"]:
        rows.append(("image", f"`{image['ref']}`"))
    if prod:
        rows.append(("approved", f"{prod.get('approved_by', '?')} at {prod.get('since', '?')}"))
    if record["rollback"]:
        rb = record["rollback"]
        rows.append(("rollback", ", ".join(f"{k} {v}" for k, v in sorted(rb.items()))))
    for what, url in record["workflow_runs"].items():
        rows.append((f"{what} run", url))
    rows.append(("replaced", ", ".join(record["replaced"]) or "none"))
    return "### Lineage\n" + github.markdown_table(["", ""], rows) + "\n"


def lineage_text(record: Mapping[str, Any]) -> str:
    """The lineage for a terminal: one `key  value` line each, sections flattened."""
    lines = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            for i, inner in enumerate(value):
                walk(f"{prefix}[{i}]", inner)
        elif value not in (None, {}, []):
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"{prefix:<34} {shown}")

    walk("", {k: v for k, v in record.items() if k not in {"history", "links"}})
    return "\n".join(lines) + "\n"


def delivery_metrics(
    client: Any, settings: Settings, *, days: float, now: datetime | None = None
) -> dict[str, Any]:
    """Deployment frequency, lead time, change failure rate and time to restore over the last
    `days`, from the registry's history of Production moves."""
    name = settings.model.name
    moves = [
        e
        for e in history(client, name, settings.model.production_model)
        if e["alias"] == "production"
    ]
    return delivery(
        name,
        moves,
        days=days,
        now=now or datetime.now(UTC),
        committed_at=lambda version: _committed_at(client, name, version),
    )


def delivery(
    name: str,
    moves: Sequence[dict[str, Any]],
    *,
    days: float,
    now: datetime,
    committed_at: Callable[[str], datetime | None],
) -> dict[str, Any]:
    """The arithmetic of `delivery_metrics` (pure): `moves` are the Production moves of the
    history (`at`, `version`, `tags`; a rollback names the version it withdrew in
    `mlgate.rollback.from`), `committed_at` the data commit time of a version (None: unknown).
    A deploy is a move that is not a rollback; it failed when a rollback withdrew it; a
    restore lasts from the withdrawn version's last move to Production to its rollback."""
    since = now - timedelta(days=days)
    for event in moves:
        event["when"] = datetime.fromisoformat(event["at"])
    rollbacks = [e for e in moves if "mlgate.rollback.from" in e["tags"]]
    deploys = [e for e in moves if "mlgate.rollback.from" not in e["tags"]]
    recent = [e for e in deploys if e["when"] >= since]
    failed = [d for d in recent if any(_withdrew(r, d, moves) for r in rollbacks)]
    lead, skewed = [], []
    for deploy in recent:
        committed = committed_at(deploy["version"])
        if committed is None:
            continue
        hours = (deploy["when"] - committed).total_seconds() / 3600
        if hours < 0:
            # A commit stamped after its own deployment: the committer's clock (or the
            # registry's) is wrong, so the lead time is unknown. Left out of the figures (a
            # clamp to 0 would count an instant delivery that never happened and pull the
            # median down) and listed, so the report says why n is smaller.
            skewed.append({"version": deploy["version"], "hours": hours})
        else:
            lead.append(hours)
    restore = []
    for rb in (r for r in rollbacks if r["when"] >= since):
        served = [d for d in moves if _withdrew(rb, d, moves)]
        if served:
            restore.append((rb["when"] - served[-1]["when"]).total_seconds() / 3600)
    return {
        "model": name,
        "window_days": days,
        "from": _iso(since),
        "to": _iso(now),
        "deployments": len(recent),
        "rollbacks": len([r for r in rollbacks if r["when"] >= since]),
        "deployment_frequency_per_week": len(recent) / (days / 7),
        "lead_time_hours": _spread(lead),
        "lead_time_clock_skew": skewed,
        "change_failure_rate": len(failed) / len(recent) if recent else None,
        "time_to_restore_hours": _spread(restore),
        "moves_recorded": len(moves),
    }


def _withdrew(
    rollback: Mapping[str, Any], deploy: Mapping[str, Any], moves: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether `rollback` withdrew the version that `deploy` put in Production (the last move
    to that version before the rollback)."""
    if rollback["tags"].get("mlgate.rollback.from") != deploy["version"]:
        return False
    if deploy["when"] >= rollback["when"]:
        return False
    later = [m for m in moves if deploy["when"] < m["when"] < rollback["when"]]
    return all(m["version"] != deploy["version"] for m in later)


def _committed_at(client: Any, name: str, version: str) -> datetime | None:
    try:
        tags = client.get_model_version(name, version).tags
    except Exception:  # a deleted version: no lead time for it
        return None
    if value := tags.get("mlgate.git.committed_at"):
        stamp = datetime.fromisoformat(value)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return None


def _spread(hours: Sequence[float]) -> dict[str, float] | None:
    if not hours:
        return None
    return {
        "median": statistics.median(hours),
        "min": min(hours),
        "max": max(hours),
        "n": len(hours),
    }


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def metrics_markdown(m: Mapping[str, Any]) -> str:
    def hours(spread: Mapping[str, float] | None) -> str:
        if spread is None:
            return "–"
        return (
            f"{_duration(spread['median'])} median ({_duration(spread['min'])}–"
            f"{_duration(spread['max'])}, n={spread['n']})"
        )

    rate = m["change_failure_rate"]
    rows = [
        (
            "deployment frequency",
            f"{m['deployment_frequency_per_week']:.2f} a week "
            f"({m['deployments']} in {m['window_days']:g} days)",
        ),
        ("lead time (data commit → Production)", hours(m["lead_time_hours"]) + skew(m)),
        (
            "change failure rate",
            "–" if rate is None else f"{rate:.0%} ({m['rollbacks']} rollbacks)",
        ),
        ("time to restore", hours(m["time_to_restore_hours"])),
    ]
    return (
        f"### Delivery metrics: {m['model']}, {m['from']} to {m['to']}\n"
        + github.markdown_table(["metric", "value"], rows)
        + "\n"
    )


def skew(m: Mapping[str, Any]) -> str:
    """The deployments left out of the lead time, their commit stamped after them."""
    skewed = m.get("lead_time_clock_skew") or []
    if not skewed:
        return ""
    each = ", ".join(f"v{s['version']} ({_duration(-s['hours'])})" for s in skewed)
    return f"; left out, commit stamped after its deployment (clock skew): {each}"


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate lineage: where a model version came from (commit, data, run, decision, image,
    approval) and what it replaced."""
    parser = cli.stage_parser("lineage", main.__doc__)
    parser.add_argument(
        "which",
        nargs="?",
        default=None,
        metavar="production|staging|N",
        help="the version to trace (default: production; without one, the versions that "
        "exist are listed)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        record = lineage(tracking.connect(settings, experiment=False), settings, args.which)
        print(json.dumps(record, indent=2) if args.json else lineage_text(record), flush=True)
        github.write_summary(settings.github, lineage_markdown(record))
        return 0

    return cli.run(action)


def metrics_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate metrics: deployment frequency, lead time, change failure rate and time to
    restore of the model, from the registry's history of Production moves."""
    parser = cli.stage_parser("metrics", metrics_main.__doc__)
    parser.add_argument("--days", type=float, default=90.0, help="the window (default: 90)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    def action() -> int:
        if args.days <= 0:
            raise ConfigError(f"--days must be positive, got {args.days}", fix="e.g. --days 30")
        settings = cli.settings_from(args, env)
        result = delivery_metrics(
            tracking.connect(settings, experiment=False), settings, days=args.days
        )
        print(json.dumps(result, indent=2) if args.json else metrics_markdown(result), flush=True)
        github.write_summary(settings.github, metrics_markdown(result))
        return 0

    return cli.run(action)
