"""Stage: watch the Production model. `mlgate drift` and `mlgate backtest`.

`mlgate drift` compares recent production inputs (the serving image's prediction log, or a file
or DVC-tracked path) with the data the Production version was trained on, using evidently's data
drift preset: one statistical test per feature, and drift when the share of drifted features
reaches `monitor.drift_share`. `mlgate backtest` scores the Production version on data whose
labels arrived later and compares the metrics with those it had at training time.

Both write an HTML report, a JSON summary and a Markdown summary under `reports.dir`, log them
to MLflow as a run tagged with the model version (metrics also on the version's logged model),
tag the version with the latest result, and exit 10 when the model went stale (drift found, or
AUC dropped by more than `monitor.max_auc_drop`), so that a workflow can act on it.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from mlgate import cli
from mlgate.errors import ConfigError, DataError, ModelStale
from mlgate.github import outputs as github
from mlgate.pipeline.data import load_frame
from mlgate.registry import tracking
from mlgate.settings import MonitorSettings, Settings

PRODUCTION = "production"
LOGGED = "mlgate.prediction_log"  # DataFrame.attrs flag: rows read from the prediction log


@dataclass
class Result:
    """The outcome of a check, as written to `<kind>.json`."""

    kind: str  # drift | backtest
    model: str
    version: str
    stale: bool
    headline: str
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None


def monitored_version(client: Any, settings: Settings, version: str | None) -> Any:  # ModelVersion
    """The version named, else the one in Production."""
    from mlgate.registry.audit import resolve

    return resolve(
        client, settings.model.name, version or PRODUCTION, settings.model.production_model
    )


def current_frame(settings: Settings, source: str | None) -> tuple[pd.DataFrame, str]:
    """Recent production inputs and where they came from: the prediction log (a sink directory
    or s3:// prefix, `monitor.log_sink` by default, rows of the last `monitor.window_hours`),
    a data file, or a DVC-tracked path that is not in the workspace."""
    source = source or settings.log_sink
    if source is None:
        raise ConfigError(
            "no production data to compare: monitor.log_sink is not set and no --current was given",
            fix="set monitor.log_sink to where the serving image writes its prediction log, "
            "or pass --current PATH (a data file, a DVC-tracked path or a log directory)",
        )
    local = settings.path(Path(source)) if "://" not in source else None
    if source.startswith("s3://") or (local is not None and local.is_dir()):
        return _from_log(settings, source if local is None else str(local)), source
    if local is not None and local.is_file():
        return load_frame(local, settings.data.max_bytes), str(source)
    return _from_dvc(settings, source), f"{source} (DVC)"


def _from_log(settings: Settings, url: str) -> pd.DataFrame:
    from mlgate.serving.predlog import open_sink, read_log

    since = datetime.now(UTC) - timedelta(hours=settings.monitor.window_hours)
    sink = open_sink(url, settings.monitor.log_endpoint_url)
    blocks: dict[tuple[str, ...], list[list[Any]]] = {}
    try:
        for entry in read_log(sink, settings.model.name, since=since):
            blocks.setdefault(tuple(entry["columns"]), []).extend(entry["data"])
    except Exception as exc:  # boto3, OS and decoding errors alike: the log cannot be read
        raise DataError(
            f"cannot read the prediction log at {url}: {type(exc).__name__}: {exc}",
            fix="check monitor.log_sink and the credentials that can read it",
        ) from exc
    frames = [pd.DataFrame(rows, columns=list(cols)) for cols, rows in blocks.items()]
    logged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    logged.attrs[LOGGED] = True  # categorical columns hold the server's codes
    return logged


def decode(frame: pd.DataFrame, categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The prediction log's categorical columns back to their categories: the server logs
    code i for the i-th recorded category and NaN for a missing or unseen one (left missing)."""
    out = frame.copy()
    for column, names in categories.items():
        if column in out.columns:
            codes = pd.to_numeric(out[column], errors="coerce")
            known = codes.notna() & (codes >= 0) & (codes < len(names))
            values = pd.Series(None, index=out.index, dtype=object)
            values[known] = [names[int(code)] for code in codes[known]]
            out[column] = values
    return out


def _from_dvc(settings: Settings, path: str) -> pd.DataFrame:
    import tempfile

    import dvc.api

    try:
        with dvc.api.open(path, repo=str(settings.project_dir), mode="rb") as handle:
            raw = handle.read()
    except Exception as exc:  # DVC raises many types for a missing path or remote
        raise DataError(
            f"--current {path} is neither a file, a log directory nor a DVC-tracked path "
            f"that can be read: {exc}",
            fix="pass an existing data file, or `dvc add` the file and push it to the remote",
        ) from exc
    with tempfile.NamedTemporaryFile(suffix=Path(path).suffix) as tmp:
        tmp.write(raw)
        tmp.flush()
        return load_frame(Path(tmp.name), settings.data.max_bytes)


def _features(
    frame: pd.DataFrame, features: Sequence[str], what: str, categorical: Sequence[str] = ()
) -> pd.DataFrame:
    """The model's features of `frame`: numbers as numbers (text that is none: missing), and
    the categorical ones as text (missing stays missing), so that a category sent as a string
    and one read from a CSV as an integer compare equal."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if missing[10:] else "")
        raise DataError(
            f"the {what} lacks {len(missing)} of the model's features: {shown}",
            fix="compare data with the same columns as the training data",
        )
    out = frame[list(features)].copy()
    for column in features:
        values = out[column]
        if column in categorical:
            text = values.astype(object).map(str)
            out[column] = text.where(values.notna().to_numpy(), None).astype(object)
        else:
            out[column] = pd.to_numeric(values, errors="coerce")
    return out


def categorical_features(
    reference: pd.DataFrame, features: Sequence[str], tags: Mapping[str, str]
) -> list[str]:
    """The features to compare as categories: those the version was trained with as
    categorical (its `mlgate.features.categorical` tag), and any text column."""
    declared = set(filter(None, (tags.get("mlgate.features.categorical") or "").split(",")))
    return [
        f
        for f in features
        if f in declared
        or isinstance(reference[f].dtype, pd.CategoricalDtype)
        or not (
            pd.api.types.is_numeric_dtype(reference[f]) or pd.api.types.is_bool_dtype(reference[f])
        )
    ]


def recorded_categories(settings: Settings, model_version: Any) -> dict[str, list[str]]:
    """The category lists the version was logged with (its MLmodel's metadata)."""
    import mlflow

    uri = f"models:/{settings.model.name}/{model_version.version}"
    with tracking.errors(f"reading the categories of {uri}"):
        metadata = mlflow.models.get_model_info(uri).metadata or {}
    return dict(metadata.get("mlgate.categories") or {})


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed)


def drift(settings: Settings, *, current: str | None = None, version: str | None = None) -> Result:
    from mlgate.pipeline.evaluate import data_of
    from mlgate.pipeline.train import features_of

    m = settings.monitor
    client = tracking.connect(settings)
    model_version = monitored_version(client, settings, version)
    tags = dict(model_version.tags)
    frame, source = current_frame(settings, current)
    reference = data_of(settings, tags, pulled=settings.path(settings.data.path))
    features = list(features_of(reference, settings).columns)
    categorical = categorical_features(reference, features, tags)
    if frame.attrs.get(LOGGED) and categorical:
        frame = decode(frame, recorded_categories(settings, model_version))
    recent = _features(frame, features, f"production data ({source})", categorical)
    if len(recent) < m.min_rows:
        raise DataError(
            f"only {len(recent)} rows of production data in {source} (monitor.min_rows is "
            f"{m.min_rows}): too few to judge drift",
            fix="widen monitor.window_hours, wait for more traffic, or lower monitor.min_rows",
        )
    recent = _sample(recent, m.max_rows, settings.split.seed)
    baseline = _sample(_features(reference, features, "training data", categorical), m.max_rows, 0)
    snapshot, summary = compare(baseline, recent, categorical, m)
    summary.update(
        current={"source": source, "rows": len(recent), "window_hours": m.window_hours},
        reference={
            "data_md5": tags.get("mlgate.data.md5"),
            "commit": tags.get("mlgate.git.commit"),
            "rows": len(baseline),
        },
    )
    name = settings.model.name
    drifted = [c for c, v in summary["columns"].items() if v["drifted"]]
    headline = (
        f"{'drift' if summary['drift'] else 'no drift'} in {name} version "
        f"{model_version.version}: {len(drifted)} of {len(features)} features drifted "
        f"({summary['share']:.0%}; threshold {m.drift_share:.0%})"
        + (f": {', '.join(drifted[:10])}" if drifted else "")
    )
    result = Result("drift", name, str(model_version.version), summary["drift"], headline, summary)
    out = settings.path(settings.reports.dir)
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / "drift.html"))
    result.files.append(out / "drift.html")
    _record(
        client,
        settings,
        model_version,
        result,
        metrics={
            "drift_share": summary["share"],
            "drifted_features": summary["count"],
            "current_rows": len(recent),
        },
    )
    return result


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    categorical: Sequence[str],
    monitor: MonitorSettings,
) -> tuple[Any, dict[str, Any]]:
    """evidently's data drift preset on the same columns of two frames: the categorical
    columns declared to it as such (it then chooses a categorical test: chi-square, or
    Jensen-Shannon on larger samples), the others as numerical. Returns evidently's snapshot
    (for its HTML report) and `drift_summary` of it."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import StatTestNotFoundError
    from evidently.presets import DataDriftPreset

    features = list(reference.columns)
    definition = DataDefinition(
        numerical_columns=[f for f in features if f not in categorical],
        categorical_columns=[f for f in features if f in categorical],
    )
    preset = DataDriftPreset(
        drift_share=monitor.drift_share,
        method=monitor.drift_method,
        threshold=monitor.drift_threshold,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            snapshot = Report([preset], include_tests=True).run(
                current_data=Dataset.from_pandas(current[features], data_definition=definition),
                reference_data=Dataset.from_pandas(reference, data_definition=definition),
            )
        except StatTestNotFoundError as exc:  # an unknown monitor.drift_method
            raise ConfigError(
                f"monitor.drift_method {monitor.drift_method!r} is not a test evidently knows: "
                f"{exc}",
                fix="use one of evidently's stattests (ks, wasserstein, psi, jensenshannon, "
                "...), or leave it unset for evidently's choice per feature",
            ) from exc
    return snapshot, drift_summary(snapshot.dict(), features, categorical)


def drift_summary(
    report: Mapping[str, Any], features: Sequence[str], categorical: Sequence[str] = ()
) -> dict[str, Any]:
    """The verdict, the share and one entry per feature, from evidently's snapshot dict: the
    share test (DriftedColumnsCount) decides; each feature's ValueDrift gives its score and
    the test evidently ran on it (`method`, e.g. "chi-square p_value"), and `kind` says
    whether the feature was compared as categorical or numerical."""
    columns: dict[str, dict[str, Any]] = {}
    count = share = 0.0
    for metric in report["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":DriftedColumnsCount"):
            count, share = metric["value"]["count"], metric["value"]["share"]
        elif config["type"].endswith(":ValueDrift"):
            columns[config["column"]] = {
                "score": metric["value"],
                "method": config["method"],
                "threshold": config["threshold"],
                "kind": "categorical" if config["column"] in categorical else "numerical",
                "drifted": False,
            }
    share_test = None
    for test in report.get("tests", []):
        params = test["metric_config"]["params"]
        if params["type"].endswith(":ValueDrift") and params["column"] in columns:
            columns[params["column"]]["drifted"] = test["status"] == "FAIL"
        elif params["type"].endswith(":DriftedColumnsCount"):
            share_test = test["status"]
    return {
        "drift": share_test == "FAIL",
        "count": int(count),
        "share": float(share),
        "columns": {f: columns[f] for f in features if f in columns},
    }


def backtest(settings: Settings, *, labelled: str, version: str | None = None) -> Result:
    """Score the monitored version on newly labelled data; compare with training time."""
    from mlgate.gate.decision import ModelRef
    from mlgate.gate.metrics import classification_metrics, slice_metrics
    from mlgate.gate.threshold import threshold_of
    from mlgate.pipeline.evaluate import load_model, predict
    from mlgate.pipeline.train import features_of, labels_of

    client = tracking.connect(settings)
    model_version = monitored_version(client, settings, version)
    tags = dict(model_version.tags)
    frame, source = current_frame(settings, labelled)
    target = settings.data.target
    if target not in frame.columns:
        raise DataError(
            f"{source} has no label column '{target}': a backtest needs the labels that "
            "arrived later",
            fix=f"add the '{target}' column (data.target), or point --labelled at labelled data",
        )
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if len(frame) < settings.monitor.min_rows:
        raise DataError(
            f"only {len(frame)} labelled rows in {source} (monitor.min_rows is "
            f"{settings.monitor.min_rows})",
            fix="wait for more labels, or lower monitor.min_rows",
        )
    ref = ModelRef(settings.model.name, str(model_version.version), model_version.run_id)
    model = load_model(ref, "monitored")
    proba = predict(model, features_of(frame, settings), "monitored", ref)
    y = labels_of(frame, settings)  # 0/1, 1 = data.positive_class
    # The threshold the model serves with (recorded at training), not today's setting.
    cut = threshold_of(tags, settings)
    now = classification_metrics(y, proba, cut)
    slices = slice_metrics(frame, y, proba, settings.metrics.slices, cut)
    then = {
        key.removeprefix("mlgate.metrics.holdout_"): float(value)
        for key, value in tags.items()
        if key.startswith("mlgate.metrics.holdout_")
    }
    change = {k: now[k] - then[k] for k in now if k in then}
    drop = -change.get("auc", 0.0)
    stale = drop > settings.monitor.max_auc_drop
    summary = {
        "stale": stale,
        "rows": len(frame),
        "source": source,
        "metrics": now,
        "training_metrics": then,
        "change": change,
        "slices": slices,
        "max_auc_drop": settings.monitor.max_auc_drop,
    }
    name = settings.model.name
    auc_text = (
        f"AUC {now['auc']:.4f} vs {then['auc']:.4f} at training ({change['auc']:+.4f})"
        if "auc" in change
        else "AUC not comparable"
    )
    headline = (
        f"{name} version {model_version.version} on {len(frame)} newly labelled rows: {auc_text}"
        + (f": more than the allowed drop of {settings.monitor.max_auc_drop}" if stale else "")
    )
    result = Result("backtest", name, str(model_version.version), stale, headline, summary)
    _record(
        client,
        settings,
        model_version,
        result,
        metrics={
            **{f"backtest_{k}": v for k, v in now.items()},
            **{f"backtest_{k}_change": v for k, v in change.items()},
            "backtest_rows": len(frame),
        },
    )
    return result


def to_markdown(result: Result) -> str:
    icon = "⚠️" if result.stale else "✅"
    lines = [
        f"### {icon} {result.kind.capitalize()}: {result.model} version {result.version}",
        "",
        result.headline,
        "",
    ]
    s = result.summary
    rows: list[tuple[str, ...]]
    if result.kind == "drift":
        rows = [
            (
                f"`{name}`",
                f"{c['score']:.4g}",
                f"{c['method']} ({c.get('kind', 'numerical')})",
                f"{c['threshold']:.4g}",
                "❌ drifted" if c["drifted"] else "ok",
            )
            for name, c in sorted(s["columns"].items(), key=lambda kv: not kv[1]["drifted"])
        ]
        lines.append(github.markdown_table(["feature", "score", "test", "threshold", ""], rows))
        lines.append(
            f"\nCurrent: {s['current']['rows']} rows from {s['current']['source']}; reference: "
            f"{s['reference']['rows']} training rows (data `{s['reference']['data_md5']}`)."
        )
    else:
        rows = [
            (
                str(k),
                f"{s['training_metrics'][k]:.4f}" if k in s["training_metrics"] else "–",
                f"{v:.4f}",
                f"{s['change'][k]:+.4f}" if k in s["change"] else "–",
            )
            for k, v in s["metrics"].items()
        ]
        lines.append(github.markdown_table(["metric", "at training", "now", "change"], rows))
    if result.run_id:
        lines.append(f"\nMLflow run: `{result.run_id}`.")
    return "\n".join(lines) + "\n"


def _record(
    client: Any,
    settings: Settings,
    model_version: Any,
    result: Result,
    metrics: Mapping[str, float],
) -> None:
    """Write the JSON and Markdown summaries, log a run for this check with the files, and tag
    the version with the latest result."""
    import mlflow

    out = settings.path(settings.reports.dir)
    out.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "kind": result.kind,
        "model": result.model,
        "version": result.version,
        "checked_at": when,
        "stale": result.stale,
        "headline": result.headline,
        **result.summary,
    }
    with tracking.errors(f"logging the {result.kind} check to MLflow"):
        experiment = mlflow.set_experiment(settings.tracking.experiment)
        run = client.create_run(
            experiment.experiment_id,
            run_name=f"{result.kind} v{result.version} {when}",
            tags={
                "mlgate.monitor": result.kind,
                "mlgate.model.name": result.model,
                "mlgate.model.version": result.version,
                f"mlgate.{result.kind}.stale": str(result.stale).lower(),
                **(
                    {"mlgate.github.run_url": settings.github.run_url}
                    if settings.github.run_url
                    else {}
                ),
            },
        )
        result.run_id = run.info.run_id
        record["run_id"] = result.run_id
        (out / f"{result.kind}.json").write_text(json.dumps(record, indent=2, default=str))
        (out / f"{result.kind}.md").write_text(to_markdown(result))
        result.files += [out / f"{result.kind}.json", out / f"{result.kind}.md"]
        model_id = getattr(model_version, "model_id", None)
        for metric, number in metrics.items():
            client.log_metric(result.run_id, metric, float(number), model_id=model_id)
        for path in result.files:
            client.log_artifact(result.run_id, str(path), result.kind)
        client.set_terminated(result.run_id, "FINISHED")
        name, version = result.model, result.version
        for key, value in {
            f"mlgate.{result.kind}.checked_at": when,
            f"mlgate.{result.kind}.stale": str(result.stale).lower(),
            f"mlgate.{result.kind}.run_id": result.run_id,
            f"mlgate.{result.kind}.headline": result.headline[:4900],
        }.items():
            client.set_model_version_tag(name, version, key, value)


def report(settings: Settings, result: Result) -> None:
    print(to_markdown(result), flush=True)
    github.write_summary(settings.github, to_markdown(result))
    github.write_outputs(
        settings.github,
        {
            "stale": str(result.stale).lower(),
            "model-version": result.version,
            "summary": github.relative(
                settings.path(settings.reports.dir) / f"{result.kind}.json", Path.cwd()
            ),
            "run-id": result.run_id or "",
        },
    )
    if result.stale:
        raise ModelStale(
            result.headline,
            fix=f"see {result.kind}.html / {result.kind}.md; retrain on recent data "
            "(the drift-monitor workflow dispatches the pipeline)",
        )


def _parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    parser = cli.stage_parser(name, doc)
    parser.add_argument(
        "--version",
        type=cli.model_version,
        metavar="N",
        help="the model version to check (default: the one in Production)",
    )
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate drift: compare recent production inputs with the Production model's training
    data (evidently); exit 10 when the share of drifted features reaches monitor.drift_share."""
    parser = _parser("drift", main.__doc__)
    parser.add_argument(
        "--current",
        metavar="PATH",
        help="production inputs: a prediction-log directory or s3:// prefix (default: "
        "monitor.log_sink), a data file, or a DVC-tracked path",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        report(settings, drift(settings, current=args.current, version=args.version))
        return 0

    return cli.run(action)


def backtest_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate backtest: score the Production model on data whose labels arrived later; exit 10
    when its AUC fell more than monitor.max_auc_drop below its training-time AUC."""
    parser = _parser("backtest", backtest_main.__doc__)
    parser.add_argument(
        "--labelled",
        required=True,
        metavar="PATH",
        help="data with the labels that arrived later (data.target): a file or a DVC-tracked path",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        report(settings, backtest(settings, labelled=args.labelled, version=args.version))
        return 0

    return cli.run(action)
