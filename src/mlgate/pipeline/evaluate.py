"""Stage 3: evaluate a candidate model version against the champion and write the decision.

The champion is the version holding the `production` alias, else `staging`, else none. Both
are loaded through MLflow and scored on the same holdout rows of the candidate's data version,
rebuilt from what training logged. The policy (`gate:` in params.yaml) turns the evidence into
checks; the decision is a versioned JSON record that promotion consumes.

Order (issue 18): the decision is computed, logged to the run, tagged on the version and written
with the step's outputs first; only then, and only with `reports.quality` on, are the ROC and
precision-recall curves (matplotlib) and evidently's HTML reports built and logged. Those
libraries are imported there and nowhere else, so promotion never waits for them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlgate import cli
from mlgate.errors import ConfigError, DataError, GateFailed, ModelError
from mlgate.files import write_json_atomic
from mlgate.gate import threshold as thresholds
from mlgate.gate.decision import (
    DECISION_ARTIFACT,
    DIGEST_TAG,
    Check,
    Decision,
    ModelRef,
    mlflow_links,
)
from mlgate.gate.latency import measure_models
from mlgate.gate.metrics import Ranking, classification_metrics, slice_masks, slice_metrics
from mlgate.gate.significance import PairedAuc, delong, statement
from mlgate.github import outputs as github
from mlgate.pipeline import holdout as holdouts
from mlgate.pipeline.data import check_id_column, file_md5, load_frame, pull
from mlgate.pipeline.split import holdout_from_keys
from mlgate.pipeline.train import conform, engine, features_of, labels_of
from mlgate.registry import tracking
from mlgate.registry.moves import find_champion, get_version
from mlgate.settings import GateSettings, Settings


def data_of(settings: Settings, tags: Mapping[str, str], *, pulled: Path | None) -> pd.DataFrame:
    """The data version a model was trained on: the pulled workspace file when it is that
    version, else read through DVC at the commit that trained it."""
    wanted = tags.get("mlgate.data.file_md5")
    path = tags.get("mlgate.data.path", str(settings.data.path))
    if pulled is not None and pulled.is_file() and file_md5(pulled) == wanted:
        return load_frame(pulled)
    import dvc.api  # only for a version the workspace does not hold (seconds of imports)

    commit = tags.get("mlgate.git.commit")
    try:
        with dvc.api.open(path, repo=str(settings.project_dir), rev=commit, mode="rb") as handle:
            raw = handle.read()
    except Exception as exc:  # DVC and git raise many types here
        raise DataError(
            f"cannot read data version {tags.get('mlgate.data.md5')} ({path} at "
            f"commit {commit}): {exc}",
            fix="check out the full history (actions/checkout with fetch-depth: 0) "
            "and make sure that version was pushed to the DVC remote",
        ) from exc
    with tempfile.NamedTemporaryFile(suffix=Path(path).suffix) as tmp:
        tmp.write(raw)
        tmp.flush()
        if file_md5(Path(tmp.name)) != wanted:
            raise DataError(
                f"{path} at commit {commit} is not the data version the model was trained on",
                fix="re-train the model from a clean commit",
            )
        return load_frame(Path(tmp.name))


def load_model(ref: ModelRef, role: str) -> Any:  # an mlflow.pyfunc.PyFuncModel
    import mlflow

    try:
        return mlflow.pyfunc.load_model(ref.uri, suppress_warnings=True)
    except Exception as exc:  # a missing or corrupt artifact surfaces as many types
        raise _unloadable(ref, role, exc) from exc


def _unloadable(ref: ModelRef, role: str, exc: Exception) -> ModelError:
    return ModelError(
        f"cannot load the {role} {ref.uri}: {(str(exc).splitlines() or [type(exc).__name__])[0]}",
        fix=f"check the artifact store of run {ref.run_id}; re-register the "
        f"{role} or move its alias to a loadable version",
    )


def load_judged(ref: ModelRef, role: str) -> tuple[Any, str | None]:
    """The model, loaded from one download of its artifacts, and the sha256 of the booster
    file in that very download (None when it is no XGBoost flavor): the decision records it,
    and deploy ships only a booster with that digest, so a file changed in the artifact store
    after the evaluation never reaches Production unjudged."""
    import mlflow
    import yaml

    with tempfile.TemporaryDirectory(prefix="mlgate-judged-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=tmp))
            flavors = yaml.safe_load((local / "MLmodel").read_text()).get("flavors") or {}
            data = (flavors.get("xgboost") or {}).get("data")
            digest = hashlib.sha256((local / data).read_bytes()).hexdigest() if data else None
            model = mlflow.pyfunc.load_model(str(local), suppress_warnings=True)
        except Exception as exc:  # a missing or corrupt artifact surfaces as many types
            raise _unloadable(ref, role, exc) from exc
    return model, digest


def input_names(model: Any) -> list[str]:
    schema = model.metadata.get_input_schema()
    return list(schema.input_names()) if schema is not None else []


def predict(model: Any, features: pd.DataFrame, role: str, ref: ModelRef) -> np.ndarray:
    try:
        return np.asarray(model.predict(conform(features, model)), dtype=float).reshape(-1)
    except Exception as exc:
        raise ModelError(
            f"the {role} {ref.uri} cannot score the holdout: {str(exc).splitlines()[0]}",
            fix="candidate and champion must take the same features",
        ) from exc


def same_positive_class(
    holdout: pd.DataFrame,
    settings: Settings,
    tags: Mapping[str, str],
    uri: str,
    positive: str | None = None,
) -> str:
    """The positive class the holdout's 0/1 labels mean (data.positive_class), checked against
    the one recorded with a model at training (issue 19): a model that predicts the other
    class would be scored upside down. Models from before the tag existed predicted 1."""
    from mlgate.pipeline.data import label_classes
    from mlgate.pipeline.train import POSITIVE_TAG

    if positive is None:
        target = settings.data.target
        positive = str(label_classes(holdout[target], settings.data.positive_class, target)[1])
    recorded = tags.get(POSITIVE_TAG)
    if recorded is not None and recorded != positive:
        raise ConfigError(
            f"{uri} was trained to predict the class {recorded!r} of '{settings.data.target}', "
            f"but data.positive_class now makes {positive!r} the positive class",
            fix=f'set data.positive_class to "{recorded}" again, or retrain so that both models '
            "predict the same class",
        )
    return positive


RARE_ROWS = 10  # fewer holdout rows of a class than this: flagged in the decision


def holdout_classes(y: np.ndarray, positive: str) -> list[str]:
    """The gate's rule for the holdout's classes, with or without a champion: at least 2 rows
    of each class (DeLong's test needs 2, and an AUC on one row of a class is that row's rank,
    not evidence), else the evaluation stops (exit 3); fewer than RARE_ROWS of a class is
    judged, and flagged: the AUC and its interval rest on those few rows."""
    labels = np.asarray(y).astype(bool)
    counts = {
        f"the positive class {positive!r}": int(labels.sum()),
        "the negative class": int(len(labels) - labels.sum()),
    }
    rare = min(counts, key=lambda name: counts[name])
    n = counts[rare]
    if n == 0:
        raise DataError(
            f"the holdout ({len(labels)} rows) holds no row of {rare}, so AUC is undefined",
            fix="raise split.holdout_fraction or add rows of the missing class",
        )
    if n < 2:
        raise DataError(
            f"the holdout ({len(labels)} rows) holds 1 row of {rare}: the gate needs at least "
            "2 rows of each class to judge a model (an AUC on one row is that row's rank)",
            fix="raise split.holdout_fraction or add rows of that class; with 1% positives, "
            "a holdout of 1,000 rows holds about 10",
        )
    if n < RARE_ROWS:
        return [
            f"the holdout holds only {n} rows of {rare} (of {len(labels)}): the AUC and its "
            "interval rest on them, so a champion comparison will rarely show non-inferiority; "
            "raise split.holdout_fraction or add rows of that class"
        ]
    return []


def booster_of(model: Any, ref: ModelRef, role: str) -> Any:  # an xgboost.Booster
    """The XGBoost booster inside a loaded pyfunc model (what the serving bundle carries)."""
    try:
        booster = model.get_raw_model()
    except Exception:  # a flavour without get_raw_model: load the booster itself
        import mlflow

        booster = mlflow.xgboost.load_model(ref.uri)
    if not hasattr(booster, "save_raw"):
        raise ModelError(
            f"the {role} {ref.uri} is not an XGBoost Booster",
            fix="register models with `mlgate train`",
        )
    return booster


def disparate_impact(
    frame: pd.DataFrame, proba: np.ndarray, column: str, threshold: float
) -> tuple[float | None, dict[str, float]]:
    """Lowest group positive-prediction rate over the highest (1.0 is parity)."""
    if column not in frame.columns:
        raise ConfigError(
            f"gate.fairness_column '{column}' is not a column of the data",
            fix="name a column of the data, or remove gate.fairness_column",
        )
    predicted = pd.Series(proba >= threshold, index=frame.index)
    # observed: a category with no rows in the holdout is no group (its rate would be NaN)
    rates = predicted.groupby(frame[column], observed=True).mean().to_dict()
    rates = {str(k): float(v) for k, v in rates.items()}
    if len(rates) < 2 or max(rates.values()) == 0:
        return None, rates
    return min(rates.values()) / max(rates.values()), rates


def policy_checks(
    gate: GateSettings,
    *,
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    paired: PairedAuc | None,
    latency_ms: dict[str, Any],  # the decision's latency_ms block (gate.latency)
    fairness: tuple[float | None, dict[str, float]] | None,
) -> list[Check]:
    """The policy, applied. Pure: everything it judges is passed in."""
    checks: list[Check] = []
    auc = candidate["overall"].get("auc")
    if gate.min_auc is not None:
        checks.append(
            Check(
                "auc",
                auc,
                gate.min_auc,
                ">=",
                auc is not None and auc >= gate.min_auc,
                "" if auc is not None else "AUC undefined: the holdout has one class",
            )
        )
    for name, floor in gate.slice_min_auc.items():
        value = candidate["slices"].get(name, {}).get("auc")
        checks.append(
            Check(
                f"auc[{name}]",
                value,
                floor,
                ">=",
                value is not None and value >= floor,
                "" if value is not None else "slice has one class or no rows",
            )
        )
    cand_latency = latency_ms.get("candidate")
    if gate.max_latency_ms is not None and cand_latency is not None:
        high = cand_latency["ci_high"]
        checks.append(
            Check(
                "latency (CPU ms/row)",
                high,
                gate.max_latency_ms,
                "<=",
                high <= gate.max_latency_ms,
                f"upper end of the interval of the median, {latency_ms.get('engine', '?')} "
                f"trees (median {cand_latency['median']:.4f}, MAD {cand_latency['mad']:.4f})",
            )
        )
    if fairness is not None:
        ratio, rates = fairness
        detail = ", ".join(f"{k}: {v:.3f}" for k, v in rates.items())
        # ratio is lowest / highest group rate, so it is at most 1
        fair = (
            ratio is not None
            and ratio != 0
            and gate.fairness_min_ratio <= ratio
            and 1 / ratio <= gate.fairness_max_ratio
        )
        checks.append(
            Check(
                "disparate impact",
                ratio,
                gate.fairness_min_ratio,
                ">=",
                fair,
                f"positive rate by group: {detail}",
            )
        )
    if champion is None:
        if gate.first_model == "reject":
            checks.append(
                Check(
                    "champion exists",
                    None,
                    None,
                    "is",
                    False,
                    "no champion and gate.first_model is reject",
                )
            )
        return checks
    level = f"{paired.confidence * 100:g}%" if paired else ""
    if paired is not None and gate.max_auc_drop is not None:
        checks.append(
            Check(
                "auc vs champion (non-inferiority)",
                paired.ci_low,
                -gate.max_auc_drop,
                ">",
                paired.ci_low > -gate.max_auc_drop,
                f"lower end of the {level} DeLong interval of candidate - champion AUC "
                f"(difference {paired.difference:+.4f}); margin {gate.max_auc_drop:g}",
            )
        )
    if paired is not None and gate.reject_significantly_worse:
        checks.append(
            Check(
                "auc not significantly worse",
                paired.ci_high,
                0.0,
                ">=",
                paired.ci_high >= 0,
                f"upper end of the {level} DeLong interval of candidate - champion AUC "
                f"(p = {paired.p_value:.3g})",
            )
        )
    if paired is not None and gate.min_auc_gain is not None:
        checks.append(
            Check(
                "auc gain over champion",
                paired.ci_low,
                gate.min_auc_gain,
                ">",
                paired.ci_low > gate.min_auc_gain,
                f"lower end of the {level} DeLong interval of candidate - champion AUC "
                f"(difference {paired.difference:+.4f})",
            )
        )
    ratio_latency = latency_ms.get("ratio")
    if gate.max_latency_ratio is not None and ratio_latency is not None:
        checks.append(
            Check(
                "latency vs champion (ratio)",
                ratio_latency["ci_high"],
                gate.max_latency_ratio,
                "<=",
                ratio_latency["ci_high"] <= gate.max_latency_ratio,
                f"upper end of the interval of the median candidate / champion CPU-time "
                f"ratio (median {ratio_latency['median']:.3f})",
            )
        )
    if gate.require_significance:
        checks.append(
            Check(
                "auc gain significant",
                paired.ci_low if paired else None,
                0.0,
                ">",
                bool(paired and paired.ci_low > 0),
                "lower end of the AUC-difference interval",
            )
        )
    if gate.min_f1_ratio is not None:
        f1, champ_f1 = candidate["overall"]["f1"], champion["overall"]["f1"]
        ratio = f1 / champ_f1 if champ_f1 > 0 else (float("inf") if f1 > 0 else 1.0)
        checks.append(
            Check(
                "f1 ratio vs champion",
                ratio,
                gate.min_f1_ratio,
                ">=",
                ratio >= gate.min_f1_ratio,
                f"{f1:.4f} / {champ_f1:.4f}",
            )
        )
    return checks


@dataclass(frozen=True)
class Evidence:
    """What the reports are built from, after the decision is final."""

    client: Any
    holdout: pd.DataFrame | None  # None: on the workers (train.engine: dask)
    y: np.ndarray
    candidate: np.ndarray
    champion: np.ndarray | None
    current: pd.DataFrame | None  # the candidate's data version (None: on the workers)
    pulled: Path | None
    champion_tags: Mapping[str, str] | None
    cluster: Any = None  # the Dask client (train.engine: dask), open until the reports are built
    remote: Any = None  # onworkers.RemoteHoldout: the holdout on the workers


def evaluate(settings: Settings, candidate_version: str) -> Decision:
    """Decide, record the decision, then build the reports (when `reports.quality` is on)."""
    with engine(settings) as cluster_client:
        decision, evidence = _assess(settings, candidate_version, cluster_client)
        record(settings, evidence.client, decision)
        if settings.reports.quality:
            build_reports(settings, decision, evidence)
    return decision


def assess(settings: Settings, candidate_version: str) -> tuple[Decision, Evidence]:
    """The decision, computed (nothing written yet), and the evidence the reports need. With
    train.engine: dask the two models score the holdout on the cluster's workers, and the
    client is closed on return: `build_reports` needs it open (`evaluate` and `main` keep it
    open until the reports are built)."""
    with engine(settings) as cluster_client:
        return _assess(settings, candidate_version, cluster_client)


def score(
    model: Any,
    features: pd.DataFrame,
    role: str,
    ref: ModelRef,
    cluster_client: Any = None,
    remote: Any = None,
) -> np.ndarray:
    """`predict` on the runner, or `xgboost.dask.inplace_predict` of the model's booster on
    the cluster: a float per row either way, which the gate's functions judge alike.
    `remote`: the holdout on the workers (`onworkers.RemoteHoldout`), scored where it lies."""
    if cluster_client is None:
        return predict(model, features, role, ref)
    from mlgate.errors import ClusterError
    from mlgate.pipeline import cluster, onworkers

    booster = booster_of(model, ref, role)
    try:
        if remote is not None:
            return onworkers.score(cluster_client, remote, model, booster, f"scoring the {role}")
        return cluster.score(
            cluster_client, booster, conform(features, model), f"scoring the {role}"
        )
    except ClusterError:
        raise
    except Exception as exc:
        raise ModelError(
            f"the {role} {ref.uri} cannot score the holdout: {str(exc).splitlines()[0]}",
            fix="candidate and champion must take the same features",
        ) from exc


def _assess(
    settings: Settings, candidate_version: str, cluster_client: Any
) -> tuple[Decision, Evidence]:
    client = tracking.connect(settings, experiment=False)
    name = settings.model.name
    version = get_version(client, name, candidate_version)
    with tracking.errors(f"reading the run of {name} version {candidate_version}"):
        run = client.get_run(version.run_id)
    candidate = ModelRef(name, str(version.version), version.run_id)
    tags = dict(version.tags)
    champion = find_champion(client, name, candidate.version, settings.model.production_model)

    with tempfile.TemporaryDirectory() as tmp, tracking.errors("reading the logged split"):
        manifest = json.loads(
            Path(client.download_artifacts(run.info.run_id, "split/holdout.json", tmp)).read_text()
        )
    remote: Any = None  # onworkers.RemoteHoldout: the holdout stays on the workers
    pulled: Path | None = None
    frame: pd.DataFrame | None = None
    if cluster_client is not None:
        from mlgate.pipeline import onworkers

        # the holdout rebuilt where the version lies, from the logged rule (a dask-trained
        # model) or key list (a local-engine model), its digest checked on the runner
        rebuild = (
            onworkers.holdout_on_workers
            if holdouts.is_rule(manifest)
            else onworkers.keyed_holdout_on_workers
        )
        remote = rebuild(settings, cluster_client, tags, manifest)
        holdout = remote.head  # the first rows only: the latency check's
        y = remote.y
        labelled = remote.labels
    else:
        pulled = settings.path(Path(pull(settings).path))
        frame = data_of(settings, tags, pulled=pulled)
        check_id_column(frame, settings.data.id_column)
        if holdouts.is_rule(manifest):  # trained with train.engine: dask: a rule and a digest
            holdout = holdouts.from_rule(
                frame, manifest, digest_tag=tags["mlgate.split.holdout_digest"]
            )
        else:
            holdout = holdout_from_keys(
                frame,
                manifest["holdout"],
                id_column=settings.data.id_column,
                digest=tags["mlgate.split.holdout_digest"],
            )
        y = labels_of(holdout, settings)  # 0/1, 1 = data.positive_class
        labelled = holdout
    rows = len(y)
    positive = same_positive_class(labelled, settings, tags, candidate.uri)
    few = holdout_classes(y, positive)  # stops the gate, or flags a rare class
    features = features_of(holdout, settings)
    # a bad query fails before loading
    masks = remote.masks if remote is not None else slice_masks(holdout, settings.metrics.slices)

    cand_model, cand_sha256 = load_judged(candidate, "candidate")
    flags: list[str] = list(few)
    threshold = model_threshold(tags, run.data.params, settings, "candidate", flags)
    cut = {"candidate": threshold}
    cand_proba = score(cand_model, features, "candidate", candidate, cluster_client, remote)
    # each model's scores are sorted once, for its metrics, its slices and DeLong's test
    ranked = {"candidate": Ranking(y, cand_proba)}
    metrics: dict[str, dict[str, Any]] = {
        "candidate": _metrics(holdout, ranked["candidate"], settings, threshold, masks)
    }
    champ_proba, paired, champ_model, champion_tags = None, None, None, None
    if champion is not None:
        champ_model = load_model(champion, "champion")
        with tracking.errors("reading the champion's lineage"):
            champion_tags = dict(client.get_model_version(name, champion.version).tags)
            champion_params = (
                {}
                if thresholds.TAG in champion_tags
                else client.get_run(champion.run_id).data.params
            )
        cut["champion"] = model_threshold(
            champion_tags, champion_params, settings, "champion", flags
        )
        same_positive_class(labelled, settings, champion_tags, champion.uri, positive)
        if set(input_names(champ_model)) != set(input_names(cand_model)):
            theirs, ours = set(input_names(champ_model)), set(input_names(cand_model))

            def listed(names: set[str]) -> str:
                shown = sorted(names)
                more = f", ... ({len(shown)} in all)" if len(shown) > 10 else ""
                return (", ".join(shown[:10]) + more) if shown else "none"

            raise ModelError(
                f"candidate {candidate.uri} and champion {champion.uri} take "
                f"different features (only the candidate takes: {listed(ours - theirs)}; "
                f"only the champion takes: {listed(theirs - ours)}): a column added, "
                "dropped or renamed since the champion was trained",
                fix="a model with new features cannot be compared on the same "
                "rows: promote it deliberately (move the alias by hand) or keep "
                "the features",
            )
        champ_proba = score(champ_model, features, "champion", champion, cluster_client, remote)
        ranked["champion"] = Ranking(y, champ_proba)
        metrics["champion"] = _metrics(
            holdout, ranked["champion"], settings, cut["champion"], masks
        )
        try:
            paired = delong(
                y,
                cand_proba,
                champ_proba,
                settings.gate.confidence,
                (ranked["candidate"], ranked["champion"]),
            )
        except ValueError as exc:  # fewer than 2 rows of a class: no interval, fail closed
            raise DataError(
                f"the holdout cannot compare the models: {exc}",
                fix="raise split.holdout_fraction or add rows of the rarer class",
            ) from exc
    for role, value in cut.items():
        metrics[role]["threshold"] = value
        flags += thresholds.flags(role, metrics[role]["overall"], value)
    latency_ms: dict[str, Any] = {"note": "not measured: no latency check is on"}
    if settings.gate.max_latency_ms is not None or settings.gate.max_latency_ratio is not None:
        boosters = {"candidate": booster_of(cand_model, candidate, "candidate")}
        if champion is not None:
            boosters["champion"] = booster_of(champ_model, champion, "champion")
        latency_ms = measure_models(
            boosters,
            conform(features, cand_model).to_numpy(dtype="float64"),
            compiler=settings.serve.compiler,
        )
    fairness = (
        disparate_impact(
            holdout if remote is None else _fairness_rows(remote, settings),
            cand_proba,
            settings.gate.fairness_column,
            threshold,
        )
        if settings.gate.fairness_column
        else None
    )
    checks = policy_checks(
        settings.gate,
        candidate=metrics["candidate"],
        champion=metrics.get("champion"),
        paired=paired,
        latency_ms=latency_ms,
        fairness=fairness,
    )
    decision = Decision(
        candidate=candidate,
        champion=champion,
        data_md5=tags["mlgate.data.md5"],
        holdout_digest=tags["mlgate.split.holdout_digest"],
        holdout_rows=rows,
        mode=settings.gate.mode,
        checks=checks,
        metrics=metrics,
        significance=paired.to_dict() if paired else None,
        latency_ms=latency_ms,
        model_size_bytes=cand_model.metadata.model_size_bytes,
        candidate_model_sha256=cand_sha256,
        statistics=(
            statement(paired, margin=settings.gate.max_auc_drop, rows=rows) if paired else None
        ),
        flags=flags,
        links=mlflow_links(settings.tracking_uri, candidate, champion, run.info.experiment_id),
    )
    evidence = Evidence(
        client,
        holdout if remote is None else None,
        y,
        cand_proba,
        champ_proba,
        frame,
        pulled,
        champion_tags,
        cluster_client,
        remote,
    )
    return decision, evidence


def _fairness_rows(remote: Any, settings: Settings) -> pd.DataFrame:
    """gate.fairness_column of the holdout rows on the workers (refused as on the runner when
    the data has no such column)."""
    if remote.fairness is None:
        raise ConfigError(
            f"gate.fairness_column '{settings.gate.fairness_column}' is not a column of the data",
            fix="name a column of the data, or remove gate.fairness_column",
        )
    fairness: pd.DataFrame = remote.fairness
    return fairness


def build_reports(settings: Settings, decision: Decision, evidence: Evidence) -> list[Path]:
    """The curves and evidently's reports, after the decision is recorded: logged to the
    candidate's run and copied next to decision.json. They explain the decision; they never
    change it."""
    e = evidence
    with tempfile.TemporaryDirectory(prefix="mlgate-curves-") as tmp:
        private = Path(tmp)
        plot_curves(private / "curves.png", e.y, e.candidate, e.champion, decision)
        with tracking.errors("logging the decision curves"):
            e.client.log_artifact(
                decision.candidate.run_id, str(private / "curves.png"), DECISION_ARTIFACT
            )
        _publish(private, outputs_dir(settings, decision.candidate))
    curves = outputs_dir(settings, decision.candidate) / "curves.png"
    if e.remote is not None:  # train.engine: dask: the rows stay on the workers
        inputs = worker_inputs(settings, decision, e)
    else:
        assert e.holdout is not None and e.current is not None
        reference = (
            data_of(settings, e.champion_tags, pulled=e.pulled)
            if e.champion_tags is not None
            else None
        )
        inputs = local_inputs(
            settings, e.holdout, e.candidate, e.champion, current=e.current, reference=reference
        )
    written = quality_report(settings, decision, inputs, client=e.client)
    return [curves, *written]


@dataclass(frozen=True)
class ReportInputs:
    """What evidently's reports are run on: the quality report's scored holdout (the candidate's,
    and the champion's as its reference), the drift report's two frames (the candidate's data,
    the champion's training data), the columns each describes, and, with the dask engine, what
    they were drawn from (`evidently-inputs.json`)."""

    quality: pd.DataFrame
    quality_reference: pd.DataFrame | None
    quality_columns: Mapping[str, list[str] | None]
    drift: tuple[pd.DataFrame, pd.DataFrame] | None  # current, reference
    drift_columns: Mapping[str, list[str] | None]
    about: dict[str, Any] | None = None


def _kinds(inputs: pd.DataFrame) -> dict[str, list[str] | None]:
    """Categorical features (issue 19) are described as such, the others as numbers."""
    features = list(inputs.columns)
    numbers = [c for c in features if pd.api.types.is_numeric_dtype(inputs[c])]
    return {
        "numerical_columns": numbers,
        "categorical_columns": [c for c in features if c not in numbers] or None,
    }


def local_inputs(
    settings: Settings,
    holdout: pd.DataFrame,
    cand: np.ndarray,
    champ: np.ndarray | None,
    *,
    current: pd.DataFrame,
    reference: pd.DataFrame | None,
) -> ReportInputs:
    """The local engine's: the holdout's rows with each model's scores and the 0/1 target, and
    the two data versions' features, every row."""
    target = settings.data.target
    inputs = features_of(holdout, settings)
    features = list(inputs.columns)
    kinds = _kinds(inputs)

    def scored(proba: np.ndarray) -> pd.DataFrame:
        return holdout.assign(probability=proba, **{target: labels_of(holdout, settings)})

    return ReportInputs(
        quality=scored(cand),
        quality_reference=scored(champ) if champ is not None else None,
        quality_columns=kinds,
        drift=(current[features], reference[features]) if reference is not None else None,
        drift_columns=kinds,
    )


SAMPLE_METHOD = (
    "the rows whose seeded 64-bit hash of their feature values is among the smallest, drawn on "
    "the Dask workers (the same rows on every run, whatever the partitioning)"
)


def worker_inputs(settings: Settings, decision: Decision, e: Evidence) -> ReportInputs:
    """With the dask engine: the quality report from every holdout row the gate judged (its
    0/1 labels and the two models' scores, which is all evidently's ClassificationPreset
    reads), and the drift report from a bounded sample of each data version
    (`reports.drift_sample_rows`, `cluster.drift_sample`), read as the local engine reads it."""
    from mlgate.pipeline import cluster, shards

    target = settings.data.target
    remote = e.remote

    def scored(proba: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({target: e.y, "probability": proba})

    about: dict[str, Any] = {
        "schema_version": 1,
        "engine": "dask",
        "quality": {
            "rows": len(e.y),
            "holdout_rows": decision.holdout_rows,
            "columns": [target, "probability"],
            "rows_from": "every holdout row the gate judged: its label and each model's score",
        },
        "drift": None,
    }
    drift = None
    kinds: dict[str, list[str] | None] = {"numerical_columns": [], "categorical_columns": None}
    if e.champion_tags is not None:
        size = settings.reports.drift_sample_rows
        features = list(features_of(remote.head, settings).columns)

        def sample(located: Any, frame: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
            if frame is None:
                frame, _ = cluster.as_read(e.cluster, located)
            rows, total = cluster.drift_sample(e.cluster, frame, features, size, target)
            return rows, {
                "data_md5": located.dvc_md5,
                "rows": len(rows),
                "of": total,
                "rows_sha256": holdouts.digest(list(rows.columns), holdouts.row_hashes(rows)),
            }

        current, said = sample(remote.located, remote.data if remote.as_read else None)
        champion_md5 = e.champion_tags.get("mlgate.data.md5")
        if champion_md5 == remote.located.dvc_md5:
            reference, told = current, said
        else:
            reference, told = sample(shards.locate(settings, md5=champion_md5))
        drift = (current, reference)
        kinds = _kinds(features_of(current, settings))
        about["drift"] = {
            "sample_rows": size,
            "method": SAMPLE_METHOD,
            "current": said,
            "reference": told,
        }
        print(
            f"evidently's drift report: a sample of {said['rows']:,} of {said['of']:,} rows of "
            f"the candidate's data and {told['rows']:,} of {told['of']:,} of the champion's "
            "(reports.drift_sample_rows)",
            flush=True,
        )
    return ReportInputs(
        quality=scored(e.candidate),
        quality_reference=scored(e.champion) if e.champion is not None else None,
        quality_columns={"numerical_columns": [], "categorical_columns": None},
        drift=drift,
        drift_columns=kinds,
        about=about,
    )


def _metrics(
    frame: pd.DataFrame,
    ranked: Ranking,
    settings: Settings,
    threshold: float,
    masks: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    y, proba = ranked.y, ranked.proba
    return {
        "overall": classification_metrics(y, proba, threshold, ranked),
        "slices": slice_metrics(
            frame, y, proba, settings.metrics.slices, threshold, ranked, masks=masks
        ),
    }


def model_threshold(
    tags: Mapping[str, str],
    params: Mapping[str, str],
    settings: Settings,
    role: str,
    flags: list[str],
) -> float:
    """The threshold a model is served with: the one recorded at its training. A model
    recorded without one is judged at metrics.threshold when that is a number, else at the
    bundle's default (0.5), and the decision says so."""
    value, _ = thresholds.recorded(tags, params)
    if value is not None:
        return value
    configured = settings.metrics.threshold
    value = configured if isinstance(configured, float) else thresholds.DEFAULT
    flags.append(
        f"the {role} has no recorded threshold (trained before mlgate recorded one): its "
        f"threshold metrics use {value:g}"
    )
    return value


def outputs_dir(settings: Settings, candidate: ModelRef) -> Path:
    """Where one candidate's evaluation outputs go: `reports/<model>/v<N>/`. Evaluations of
    different candidates in one checkout so never share a file."""
    return settings.path(settings.reports.dir) / candidate.name / f"v{candidate.version}"


def _publish(private: Path, out: Path) -> None:
    """Copy each file of this process's private folder into `out`, each atomically (a reader
    sees the old file or the new one)."""
    out.mkdir(parents=True, exist_ok=True)
    for source in private.iterdir():
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{source.name}.")
        try:
            with os.fdopen(fd, "wb") as handle, source.open("rb") as data:
                shutil.copyfileobj(data, handle)
            os.replace(tmp, out / source.name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def record(settings: Settings, client: Any, decision: Decision) -> Path:
    """Write the decision JSON, log it to the candidate's run, tag the version.
    What is logged is written from `decision`, in a folder private to this process, never read
    back from a shared one; the copies under `outputs_dir` are for the job's artifact upload."""
    with tempfile.TemporaryDirectory(prefix="mlgate-decision-") as tmp:
        private = Path(tmp)
        write_json_atomic(private / "decision.json", decision.to_dict())
        # the digest of the bytes logged, kept in the registry beside the verdict (not in the
        # artifact store with the file): promote and deploy check the file they read against it
        digest = hashlib.sha256((private / "decision.json").read_bytes()).hexdigest()
        with tracking.errors("recording the decision"):
            path = str(private / "decision.json")
            client.log_artifact(decision.candidate.run_id, path, DECISION_ARTIFACT)
            # MlflowClient.set_model_version_tag reads the registered model before each write
            # only to refuse a prompt; MLflow has no public call that writes a version's tags
            # at once or without that read. So the model is read once here, a prompt refused,
            # and each tag is one request to MLflow's own registry client (7 requests, not 12)
            name = decision.candidate.name
            tracking.refuse_prompt(name, client.get_registered_model(name).tags)
            registry = tracking.writes(client)
            for key, value in {
                DIGEST_TAG: digest,
                "mlgate.decision.verdict": decision.verdict,
                "mlgate.decision.mode": decision.mode,
                "mlgate.decision.champion": decision.champion.uri if decision.champion else "none",
                "mlgate.decision.reasons": "; ".join(decision.reasons)[:4900]
                or "all checks passed",
                "mlgate.decision.created_at": decision.created_at,
            }.items():
                registry.set_model_version_tag(name, decision.candidate.version, key, value)
        out = outputs_dir(settings, decision.candidate)
        _publish(private, out)
    return out / "decision.json"


def quality_report(
    settings: Settings, decision: Decision, inputs: ReportInputs, *, client: Any
) -> list[Path]:
    """evidently HTML reports: data drift from the champion's training data to the
    candidate's, and classification quality of both models on the holdout."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset

    target = settings.data.target
    tmp = tempfile.TemporaryDirectory(prefix="mlgate-evidently-")  # private to this process
    private = Path(tmp.name)
    written = []
    scored = DataDefinition(
        **inputs.quality_columns,
        classification=[BinaryClassification(target=target, prediction_probas="probability")],
    )

    def dataset(frame: pd.DataFrame) -> Dataset:
        return Dataset.from_pandas(frame, data_definition=scored)

    sampled = (inputs.about or {}).get("drift")
    with tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quality = Report([ClassificationPreset()]).run(
            current_data=dataset(inputs.quality),
            reference_data=(
                dataset(inputs.quality_reference) if inputs.quality_reference is not None else None
            ),
        )
        written.append(private / "evidently-quality.html")
        quality.save_html(str(written[-1]))
        if inputs.drift is not None:
            plain = DataDefinition(**inputs.drift_columns)
            current, reference = inputs.drift
            metadata = (
                {
                    "sample": f"{sampled['current']['rows']} of {sampled['current']['of']} rows "
                    f"(candidate's data), {sampled['reference']['rows']} of "
                    f"{sampled['reference']['of']} (champion's): {SAMPLE_METHOD}"
                }
                if sampled
                else None
            )
            drift = Report([DataDriftPreset()], metadata=metadata).run(
                current_data=Dataset.from_pandas(current, data_definition=plain),
                reference_data=Dataset.from_pandas(reference, data_definition=plain),
            )
            written.append(private / "evidently-drift.html")
            drift.save_html(str(written[-1]))
        if inputs.about is not None:
            write_json_atomic(private / "evidently-inputs.json", inputs.about)
            written.append(private / "evidently-inputs.json")
        with tracking.errors("logging the evidently reports"):
            for path in written:
                client.log_artifact(decision.candidate.run_id, str(path), DECISION_ARTIFACT)
        out = outputs_dir(settings, decision.candidate)
        _publish(private, out)
    return [out / path.name for path in written]


def plot_curves(
    path: Path, y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, decision: Decision
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    models = [(f"candidate v{decision.candidate.version}", cand)]
    if champ is not None and decision.champion:
        models.append((f"champion v{decision.champion.version}", champ))
    for label, proba in models:
        fpr, tpr, _ = roc_curve(y, proba)
        precision, recall, _ = precision_recall_curve(y, proba)
        roc_ax.plot(fpr, tpr, label=label)
        pr_ax.plot(recall, precision, label=label)
    roc_ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc_ax.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    pr_ax.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(decision: Decision, settings: Settings, *, fail: bool = True) -> None:
    publish(decision, settings)
    enforce(decision, fail=fail)


def publish(decision: Decision, settings: Settings) -> None:
    """The decision table on stdout and in the job summary, and the step's outputs."""
    print(decision.to_markdown(), flush=True)
    github.write_summary(settings.github, decision.to_markdown())
    github.write_outputs(
        settings.github,
        {
            "verdict": decision.verdict,
            "candidate-version": decision.candidate.version,
            "champion-version": decision.champion.version if decision.champion else "",
            "decision": github.relative(
                outputs_dir(settings, decision.candidate) / "decision.json", Path.cwd()
            ),
            "reports-dir": github.relative(outputs_dir(settings, decision.candidate), Path.cwd()),
        },
    )
    for flag in decision.flags:
        github.annotate("warning", flag, title="mlgate gate: flag")


def enforce(decision: Decision, *, fail: bool = True) -> None:
    """Annotate the reasons of a failed gate; raise GateFailed when it is enforced."""
    if decision.passed:
        return
    enforced = fail and decision.mode == "enabled"
    for reason in decision.reasons:
        github.annotate("error" if enforced else "warning", reason, title="mlgate gate")
    if enforced:
        raise GateFailed(
            f"{decision.candidate.uri} failed the gate: " + "; ".join(decision.reasons),
            fix="see the decision table; change the model or data, or the gate: "
            "policy in params.yaml if the policy is what is wrong",
        )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate evaluate: score a candidate version against the champion and write the decision."""
    parser = cli.stage_parser("evaluate", main.__doc__)
    cli.add_candidate_version(parser, "to evaluate")
    parser.add_argument(
        "--fail-on-gate",
        choices=("true", "false"),
        default="true",
        help="false: exit 0 when the gate fails (the pipeline's promote step "
        "enforces it); default true",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        # The decision first: recorded on the run and the version, then the step's outputs and
        # summary; the reports (slow imports) after it, then the exit code of the gate.
        # With train.engine: dask the client stays open for the reports' drift samples.
        with engine(settings) as cluster_client:
            decision, evidence = _assess(settings, args.candidate_version, cluster_client)
            record(settings, evidence.client, decision)
            publish(decision, settings)
            if settings.reports.quality:
                print(
                    "decision recorded; building the curves and evidently reports ...", flush=True
                )
                build_reports(settings, decision, evidence)
        enforce(decision, fail=args.fail_on_gate == "true")
        return 0

    return cli.run(action)
