"""The decision record: what `mlgate evaluate` concluded, as versioned JSON and as Markdown.

The JSON (`"schema_version": 2`, written atomically) is what later jobs consume: promotion reads
it from the candidate's run, the pull-request gate renders it as the sticky comment. The
Markdown is rendered from the JSON, not from live objects, so the job summary and the PR comment
show the same table, whichever job renders it. This module imports no ML library, so the job
that only comments stays light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mlgate.errors import ConfigError
from mlgate.github import outputs as github

# 2: non-inferiority on the DeLong interval, `statistics` (the comparison in words), `flags`,
# latency in CPU time with its noise. Version 1 records are still read and rendered.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
DECISION_ARTIFACT = "decision"
# The version tag holding the sha256 of the decision.json evaluate logged on the run: promote and
# deploy read the file from the artifact store and refuse it unless its bytes match (a file
# overwritten after evaluation, or two evaluations whose file and tags crossed).
DIGEST_TAG = "mlgate.decision.sha256"
LOWER_IS_BETTER = frozenset({"brier", "log_loss"})


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float | None
    comparison: str  # how value is held against threshold, e.g. ">="
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass
class Decision:
    candidate: ModelRef
    champion: ModelRef | None
    data_md5: str
    holdout_digest: str
    holdout_rows: int
    mode: str
    checks: list[Check]
    metrics: dict[str, dict[str, Any]]
    significance: dict[str, Any] | None
    latency_ms: dict[str, Any]
    model_size_bytes: int | None
    links: dict[str, str] = field(default_factory=dict)  # MLflow UI pages, when it has one
    statistics: dict[str, Any] | None = None  # significance.statement: test, margin, words
    flags: list[str] = field(default_factory=list)  # warnings that do not fail the gate
    # sha256 of the candidate's booster file as evaluation downloaded and judged it: deploy
    # ships only that booster (None: an older decision, or not an XGBoost flavor).
    candidate_model_sha256: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def reasons(self) -> list[str]:
        return [
            f"{c.name}: {_fmt(c.value)} {_negate(c.comparison)} {_fmt(c.threshold)}"
            + (f" ({c.detail})" if c.detail else "")
            for c in self.checks
            if not c.passed
        ]

    def to_dict(self) -> dict[str, Any]:
        def ref(model: ModelRef | None) -> dict[str, Any] | None:
            return asdict(model) | {"uri": model.uri} if model else None

        return {
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict,
            "mode": self.mode,
            "created_at": self.created_at,
            "candidate": ref(self.candidate),
            "candidate_model_sha256": self.candidate_model_sha256,
            "champion": ref(self.champion),
            "data_md5": self.data_md5,
            "holdout_digest": self.holdout_digest,
            "holdout_rows": self.holdout_rows,
            "checks": [asdict(c) for c in self.checks],
            "reasons": self.reasons,
            "metrics": self.metrics,
            "significance": self.significance,
            "statistics": self.statistics,
            "flags": self.flags,
            "latency_ms": self.latency_ms,
            "model_size_bytes": self.model_size_bytes,
            "links": self.links,
        }

    def to_markdown(self) -> str:
        return render_markdown(self.to_dict())


def load(path: Path) -> dict[str, Any]:
    """Read a decision JSON written by `mlgate evaluate`, refusing other schema versions."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no decision at {path}", fix="run `mlgate evaluate` first") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not a readable decision JSON: {exc}", fix="re-run `mlgate evaluate`"
        ) from exc
    check_schema(record)
    return dict(record)


def check_schema(record: Mapping[str, Any]) -> None:
    if not isinstance(record, Mapping) or record.get("schema_version") not in READABLE_VERSIONS:
        found = record.get("schema_version") if isinstance(record, Mapping) else None
        raise ConfigError(
            f"decision schema_version {found} is not one this mlgate reads "
            f"({', '.join(map(str, READABLE_VERSIONS))})",
            fix="re-run `mlgate evaluate` with this mlgate (or use the mlgate that wrote it)",
        )


def mlflow_links(
    tracking_uri: str, candidate: ModelRef, champion: ModelRef | None, experiment_id: str
) -> dict[str, str]:
    """MLflow UI pages of the candidate's run and of both versions, for an http(s) tracking
    server (credentials in the URI are dropped); none for a local store."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in {"http", "https"}:
        return {}
    base = urlunsplit(
        (
            parts.scheme,
            (parts.hostname or "") + (f":{parts.port}" if parts.port else ""),
            parts.path.rstrip("/"),
            "",
            "",
        )
    )

    def version_page(model: ModelRef) -> str:
        return f"{base}/#/models/{quote(model.name, safe='')}/versions/{model.version}"

    links = {
        "candidate_run": f"{base}/#/experiments/{experiment_id}/runs/{candidate.run_id}",
        "candidate_version": version_page(candidate),
    }
    if champion:
        links["champion_version"] = version_page(champion)
    return links


def render_markdown(record: Mapping[str, Any]) -> str:
    """The decision as Markdown: verdict line, checks, metrics side by side, significance."""
    passed = record["verdict"] == "pass"
    dry_run = record["mode"] == "dry-run"
    icon = "✅" if passed else ("🟡" if dry_run else "❌")
    candidate, champion = record["candidate"], record.get("champion")
    against = f"`{champion['uri']}` ({champion['alias']})" if champion else "no champion"
    head = (
        f"### {icon} Gate {record['verdict'].upper()}{' (dry run)' if dry_run else ''}"
        f": `{candidate['uri']}` against {against}\n"
        f"Holdout: {record['holdout_rows']} rows of data `{record['data_md5']}`\n\n"
    )
    checks = github.markdown_table(
        ["check", "value", "threshold", "verdict"],
        [
            (
                c["name"],
                _fmt(c["value"]),
                f"{c['comparison']} {_fmt(c['threshold'])}",
                "✅ pass"
                if c["passed"]
                else f"❌ fail{' — ' + c['detail'] if c['detail'] else ''}",
            )
            for c in record["checks"]
        ],
    )
    cand = record["metrics"]["candidate"]["overall"]
    champ = (record["metrics"].get("champion") or {}).get("overall", {})
    metrics = github.markdown_table(
        ["metric", "candidate", "champion", "Δ"],
        [
            (
                f"{k} {'↓' if k in LOWER_IS_BETTER else '↑'}",
                _fmt(v),
                _fmt(champ.get(k)),
                f"{v - champ[k]:+.4f}" if k in champ else "",
            )
            for k, v in cand.items()
        ],
    )
    sig = ""
    if st := record.get("statistics"):
        margin = "none" if st["margin"] is None else f"{st['margin']:g} AUC"
        sig = (
            f"\n\n**Statistics.** Test: {st['test']}. Non-inferiority margin: {margin}. "
            f"{st['conclusion'][0].upper()}{st['conclusion'][1:]}"
        )
    elif s := record.get("significance"):  # schema_version 1
        sig = (
            f"\n\nAUC difference {s['difference']:+.4f}, {int(s['confidence'] * 100)}% CI "
            f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}], p = {s['p_value']:.3g} "
            f"({s['method']}): {'significant' if s['significant'] else 'not significant'}."
        )
    sig += _latency_markdown(record.get("latency_ms") or {})
    if flags := record.get("flags"):
        sig += "\n\n" + "\n".join(f"> ⚠️ {flag}" for flag in flags)
    names = {
        "candidate_run": "candidate run",
        "candidate_version": "candidate version",
        "champion_version": "champion version",
    }
    links = record.get("links") or {}
    link_line = " · ".join(f"[{names.get(k, k)}]({v})" for k, v in links.items())
    return (
        head + checks + "\n\n" + metrics + sig + (f"\n\nMLflow: {link_line}" if link_line else "")
    )


def _latency_markdown(latency: Mapping[str, Any]) -> str:
    """One line: what was measured, how, and the measurement's own noise."""
    cand = latency.get("candidate")
    if not isinstance(cand, Mapping):  # schema_version 1: wall-clock p50 / p95
        return ""

    def one(role: str, m: Mapping[str, Any]) -> str:
        return (
            f"{role} {m['median']:.4f} ms (95% CI {m['ci_low']:.4f}–{m['ci_high']:.4f}, "
            f"MAD {m['mad']:.4f})"
        )

    parts = [one("candidate", cand)]
    if isinstance(champ := latency.get("champion"), Mapping):
        parts.append(one("champion", champ))
    if isinstance(ratio := latency.get("ratio"), Mapping):
        parts.append(
            f"ratio {ratio['median']:.3f} (95% CI {ratio['ci_low']:.3f}–{ratio['ci_high']:.3f})"
        )
    engine = {"compiled": "compiled trees", "xgboost": "XGBoost booster"}.get(
        latency.get("engine", ""), str(latency.get("engine"))
    )
    note = f"; {latency['engine_note']}" if latency.get("engine_note") else ""
    return (
        f"\n\n**Latency** ({engine}{note}; {latency.get('unit', 'ms')}, "
        f"{latency.get('method', '')}): " + "; ".join(parts) + "."
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _negate(comparison: str) -> str:
    return {">=": "<", "<=": ">", "in": "not in"}.get(comparison, f"not {comparison}")
