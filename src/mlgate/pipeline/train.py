"""Stage 2: train XGBoost on validated data, log what an auditor needs, register a version.

Order is what keeps failures clean: validation, parameter checks and the tracking-server check
all happen before an MLflow run exists; inside the run, registration is the last write, and a
failure anywhere ends the run FAILED and leaves no model version behind.

The partition functions (features_of, encode, feature_types, labels_of) live in `frames`, which
the Dask workers import without MLflow and pandera; they are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlgate import cli, faults
from mlgate.errors import ConfigError, did_you_mean
from mlgate.files import write_json_atomic
from mlgate.gate import threshold as thresholds
from mlgate.gate.metrics import classification_metrics, slice_masks, slice_metrics
from mlgate.github import outputs as github
from mlgate.pipeline import lineage, pyfunc, shards, validate
from mlgate.pipeline.data import DataVersion, check_id_column, label_classes
from mlgate.pipeline.frames import encode as encode  # noqa: PLC0414
from mlgate.pipeline.frames import feature_types as feature_types  # noqa: PLC0414
from mlgate.pipeline.frames import features_of as features_of  # noqa: PLC0414
from mlgate.pipeline.frames import labels_of as labels_of  # noqa: PLC0414
from mlgate.pipeline.split import Split, row_keys, split_frame
from mlgate.registry import tracking
from mlgate.settings import GitHubContext, Settings

MODEL_ARTIFACT = "model"
CATEGORIES_KEY = pyfunc.CATEGORIES_KEY  # MLmodel metadata: {feature: [category, ...]}
POSITIVE_TAG = "mlgate.data.positive_class"  # the target's value the model predicts (label 1)
NEGATIVE_TAG = "mlgate.data.negative_class"  # the other one (label 0)
_UNUSED = re.compile(r"Parameters: \{(?P<names>[^}]*)\} (?:are|is) not used")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    data_hash: str
    best_iteration: int
    metrics: dict[str, float]
    threshold: float = thresholds.DEFAULT
    threshold_rule: str = "0.5"
    holdout_rows: int = 0
    holdout_positive_rate: float | None = None


def categories_of(frame: pd.DataFrame, settings: Settings) -> dict[str, list[str]]:
    """The declared categorical features (category dtype after validation: the schema says
    `dtype: category`) and each one's categories, as text, sorted: category i is code i."""
    # features_of leaves categorical columns as they are; reading the dtypes here spares its
    # copy of every feature (1.3 CPU s on 1,000,000 x 50).
    not_features = {settings.data.target, settings.data.id_column}
    return {
        str(column): sorted(frame[column].dropna().astype(str).unique().tolist())
        for column, dtype in frame.dtypes.items()
        if column not in not_features and isinstance(dtype, pd.CategoricalDtype)
    }


def dmatrix(
    frame: pd.DataFrame,
    settings: Settings,
    categories: Mapping[str, Sequence[str]] | None,
    label: np.ndarray | None = None,
) -> Any:  # an xgboost.DMatrix
    import xgboost as xgb

    categories = categories or {}  # None: no categorical feature
    features = features_of(frame, settings, view=True)  # XGBoost only reads it
    types = feature_types(features, categories)
    return xgb.DMatrix(
        encode(features, categories),
        label=label,
        feature_types=types,
        enable_categorical=types is not None,
    )


def conform(features: pd.DataFrame, model: Any) -> pd.DataFrame:
    """`features` as a logged model takes them: categorical columns encoded into the model's
    own recorded categories (champion and candidate may know different sets), and cast to the
    types its signature declares (a model logged when every input was double still scores
    int64 data)."""
    if model is None:
        return features
    recorded = (getattr(model.metadata, "metadata", None) or {}).get(CATEGORIES_KEY) or {}
    features = encode(features, recorded)
    schema = model.metadata.get_input_schema()
    if schema is None:
        return features
    doubles = [
        spec.name
        for spec in schema.inputs
        if spec.name in features.columns and str(getattr(spec, "type", "")).endswith("double")
    ]
    return features.astype({name: "float64" for name in doubles}) if doubles else features


def check_xgboost_params(params: Mapping[str, Any]) -> None:
    """XGBoost only warns about unknown parameters; make them an error, before any run."""
    import xgboost as xgb

    probe = xgb.DMatrix(np.array([[0.0], [1.0]]), label=np.array([0.0, 1.0]))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            booster = xgb.train(dict(params), probe, num_boost_round=1)
    except xgb.core.XGBoostError as exc:
        raise ConfigError(
            f"train.params is rejected by XGBoost: {str(exc).splitlines()[0]}",
            fix="correct the value in the train.params section",
        ) from exc
    unused = [m.group("names") for w in caught if (m := _UNUSED.search(str(w.message)))]
    if unused:
        known = _config_keys(json.loads(booster.save_config()))
        names = [n.strip().strip('"') for n in ",".join(unused).split(",") if n.strip()]
        hints = "; ".join(f"'{n}'{did_you_mean(n, known)}" for n in names)
        raise ConfigError(
            f"unknown XGBoost parameter(s) in train.params: {hints}",
            fix="see https://xgboost.readthedocs.io/en/stable/parameter.html",
        )
    if params.get("objective", "binary:logistic") != "binary:logistic":
        raise ConfigError(
            "train.params.objective must be binary:logistic (mlgate serves "
            "probabilities of the positive class)",
            fix="remove objective from train.params or set it to binary:logistic",
        )


def _config_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _config_keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _config_keys(v)}
    return set()


def fit(
    split: Split, settings: Settings, categories: Mapping[str, Sequence[str]] | None = None
) -> tuple[Any, int]:  # (the xgboost.Booster, its best iteration)
    """Train with early stopping on the validation set; return the booster cut at its best
    iteration, so what is logged is exactly what was measured. Categorical features train
    with XGBoost's native categorical splits."""
    booster, best, _ = fit_scored(split, settings, categories)
    return booster, best


def fit_scored(
    split: Split, settings: Settings, categories: Mapping[str, Sequence[str]] | None = None
) -> tuple[Any, int, np.ndarray]:
    """`fit`, and the returned booster's scores of the validation part (what the threshold
    is chosen on), from the DMatrix early stopping watched instead of a second one built from
    the same rows (`predict`): the same values."""
    import xgboost as xgb

    dtrain = dmatrix(split.train, settings, categories, labels_of(split.train, settings))
    dvalid = dmatrix(split.validation, settings, categories, labels_of(split.validation, settings))
    booster = xgb.train(
        dict(settings.train.params),
        dtrain,
        num_boost_round=settings.train.num_boost_round,
        # Early stopping watches the last (here: only) evaluation set; scoring the training
        # part too every round would cost time and change nothing that is kept.
        evals=[(dvalid, "validation")],
        early_stopping_rounds=settings.train.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    trimmed = booster[: best + 1]
    trimmed.set_attr(best_iteration=str(best))
    return trimmed, best, np.asarray(trimmed.predict(dvalid))


def schema_sample(frame: pd.DataFrame, rows: int = 100) -> pd.DataFrame:
    """Rows of `frame` from which MLflow infers the schema it would infer from all of it: the
    first `rows`, plus, for each column with a missing value anywhere, the first row holding
    one (a column is optional in the schema exactly when it has one). Inference on the whole
    frame checks every value in Python."""
    missing = frame.isna().to_numpy()
    firsts = missing.argmax(axis=0)[missing.any(axis=0)]
    return frame.iloc[sorted({*range(min(rows, len(frame))), *firsts.tolist()})]


def predict(
    booster: Any,
    frame: pd.DataFrame,
    settings: Settings,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> np.ndarray:
    return np.asarray(booster.predict(dmatrix(frame, settings, categories)))


def train(settings: Settings) -> TrainResult:
    # train.engine: dask: an unreachable scheduler fails here, before anything else; the
    # workers validate, split and train where the shards lie (pipeline/onworkers.py)
    with engine(settings) as cluster_client:
        if cluster_client is not None:  # the data stays on the workers (docs/dask.md)
            from mlgate.pipeline import onworkers

            return onworkers.train(settings, cluster_client)
        frame, version, checked = validate.check(settings)  # bad data stops here
        check_id_column(frame, settings.data.id_column)
        check_xgboost_params(settings.train.params)
        slice_masks(frame, settings.metrics.slices)  # a bad slice query too
        target = settings.data.target
        labels = labels_of(frame, settings)  # 0/1; a label outside the contract stops here
        negative, positive = label_classes(frame[target], settings.data.positive_class, target)
        categories = categories_of(frame, settings)
        split = split_frame(
            frame,
            target=target,
            seed=settings.split.seed,
            validation_fraction=settings.split.validation_fraction,
            holdout_fraction=settings.split.holdout_fraction,
            id_column=settings.data.id_column,
        )
        client = tracking.connect(settings)  # unreachable server: fail here, no run started
        return _train(
            settings, frame, version, checked, split, labels, categories, client, negative, positive
        )


@contextmanager
def engine(settings: Settings) -> Iterator[Any]:
    """The Dask client for train.engine: dask (docs/dask.md), else None."""
    if settings.train.engine != "dask":
        yield None
        return
    from mlgate.pipeline import cluster

    with cluster.connect(settings) as client:
        yield client


def _train(
    settings: Settings,
    frame: pd.DataFrame,
    version: DataVersion,
    checked: validate.Report,
    split: Split,
    labels: np.ndarray,
    categories: dict[str, list[str]],
    client: Any,
    negative: Any,
    positive: Any,
) -> TrainResult:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas  # what mlflow.data.from_pandas is
    from mlflow.models import infer_signature

    target = settings.data.target
    git = lineage.git_info(settings.project_dir, settings.github)

    with training_run(settings, client, version, git) as (run, lease):
        run_id = run.info.run_id
        booster, best, scored = fit_scored(split, settings, categories)
        # The threshold is chosen on the validation part; the holdout judges it.
        chosen = thresholds.choose(
            thresholds.parse(settings.metrics.threshold),
            labels_of(split.validation, settings),
            predict(booster, split.validation, settings, categories) if scored is None else scored,
        )
        proba = predict(booster, split.holdout, settings, categories)
        y = labels_of(split.holdout, settings)
        overall = classification_metrics(y, proba, chosen.threshold)
        slices = slice_metrics(split.holdout, y, proba, settings.metrics.slices, chosen.threshold)

        extra = {
            "mlgate.data.rows": len(frame),
            "mlgate.data.positive_rate": f"{labels.mean():.6f}",
            # What 1 means: serving's labels and every metric are of this class.
            POSITIVE_TAG: str(positive),
            "mlgate.features.categorical": ",".join(categories) or None,
            NEGATIVE_TAG: str(negative),
            "mlgate.data.class_counts": _class_counts(frame[target]),
            "mlgate.split.seed": settings.split.seed,
            "mlgate.split.holdout_rows": len(split.holdout),
            "mlgate.split.holdout_digest": split.holdout_digest,
        }
        tags = tag_run(settings, client, run, version, git, booster, chosen, extra)

        with _quiet_mlflow_hints():
            sources = {
                name: from_pandas(
                    part,
                    source=version.object_url,
                    targets=target,
                    name=f"{name}@{version.dvc_md5[:12]}",
                    # MLflow's own digest, without its scan of every value's type
                    digest=lineage.dataset_digest(part),
                )
                for name, part in (
                    ("train", split.train),
                    ("validation", split.validation),
                    ("holdout", split.holdout),
                )
            }
            for context, dataset in sources.items():
                # MLflow infers a dataset's schema value by value in Python (1.4 µs each:
                # 18 s for three splits of 1M x 50); a schema sample gives the same schema.
                dataset.schema = infer_signature(schema_sample(dataset.df)).inputs
                mlflow.log_input(dataset, context=context)

        # Categorical features enter the input example as their codes (NaN is an unseen or
        # missing category) and the signature as `any`; the categories travel in the model's
        # metadata. The schema sample's rows, not all of them, are converted again (its first
        # rows come first).
        inputs = encode(features_of(schema_sample(split.train), settings), categories)
        model_info = log_model(booster, inputs, categories)

        log_metrics(model_info, overall, slices, best, sources["holdout"])
        _log_artifacts(settings, split, version, checked)

        model_version = register_version(
            settings, client, version, git, run_id, lease, model_info, overall, tags
        )

    return TrainResult(
        run_id=run_id,
        model_name=settings.model.name,
        model_version=str(model_version.version),
        model_uri=f"models:/{settings.model.name}/{model_version.version}",
        data_hash=version.dvc_md5,
        best_iteration=best,
        metrics=overall,
        threshold=chosen.threshold,
        threshold_rule=chosen.rule,
        holdout_rows=len(split.holdout),
        holdout_positive_rate=float(np.mean(y)) if len(y) else None,
    )


@contextmanager
def training_run(
    settings: Settings, client: Any, version: DataVersion, git: lineage.GitInfo
) -> Iterator[tuple[Any, Any]]:  # (MLflow's active Run, its tracking.RunLease)
    """The run a training logs into, by either engine: an earlier attempt's run of the same
    name (a job killed and re-run) is ended and its versions dropped first; the run holds a
    lease while it lives; any MLflow failure inside becomes a TrackingError."""
    import mlflow

    run_name = f"train-{version.dvc_md5[:8]}-{(git.commit or 'nogit')[:8]}"
    for ghost in tracking.end_abandoned_runs(client, settings, run_name):
        print(f"ended run {ghost}, left RUNNING by an earlier attempt of this job", flush=True)
    for dropped in tracking.drop_duplicate_versions(client, settings.model.name):
        print(f"dropped version(s) {', '.join(dropped.extra)}: {dropped.message}", flush=True)
    lease_tags = tracking.RunLease.tags(settings.tracking.run_lease)
    with (
        tracking.errors("logging the training run"),
        mlflow.start_run(run_name=run_name, tags=lease_tags) as run,
        tracking.run_lease(
            client, run.info.run_id, settings, float(lease_tags[tracking.RUN_LEASE])
        ) as lease,
    ):
        faults.reach("train.in_run", settings.tracking.fault_point)  # tests only
        yield run, lease


def tag_run(
    settings: Settings,
    client: Any,
    run: Any,
    version: DataVersion,
    git: lineage.GitInfo,
    booster: Any,
    chosen: thresholds.Chosen,
    extra: Mapping[str, object],
) -> dict[str, str]:
    """The run's lineage tags (the engine's `extra` beside what every run records) and
    params; MLflow's own git tags of another checkout are removed. Returns the tags."""
    import mlflow

    tags = lineage.lineage_tags(
        git=git,
        data=version,
        github=settings.github,
        extra={
            "mlgate.model.class": f"{type(booster).__module__}.{type(booster).__qualname__}",
            "mlgate.model.library": _library_pin(),
            **extra,
            "mlgate.params.sha256": _file_sha256(settings.params_file),
            thresholds.TAG: repr(chosen.threshold),
            thresholds.RULE_TAG: chosen.rule,
            f"{thresholds.TAG}.validation": ", ".join(
                f"{k} {v:.4f}" for k, v in chosen.validation.items()
            ),
        },
    )
    mlflow.set_tags(tags)
    for key in set(lineage.MLFLOW_GIT_TAGS) - set(tags):  # MLflow's, of another checkout
        if key in run.data.tags:
            client.delete_tag(run.info.run_id, key)
    mlflow.log_params(_flat_params(settings, booster, chosen))
    return tags


def log_metrics(
    model_info: Any,
    overall: Mapping[str, float],
    slices: Mapping[str, Mapping[str, float]],
    best: int,
    holdout: Any,  # the holdout's MLflow dataset
) -> None:
    """The holdout's metrics, overall and per slice, and the best iteration, on the model."""
    import mlflow

    values = {f"holdout_{k}": v for k, v in overall.items()}
    for name, sliced in slices.items():
        values.update({f"slice_{name}_{k}": v for k, v in sliced.items()})
    values["best_iteration"] = float(best)
    mlflow.log_metrics(values, model_id=model_info.model_id, dataset=holdout)


def register_version(
    settings: Settings,
    client: Any,
    version: DataVersion,
    git: lineage.GitInfo,
    run_id: str,
    lease: Any,
    model_info: Any,
    overall: Mapping[str, float],
    tags: Mapping[str, str],
) -> Any:  # MLflow's ModelVersion
    """Register the logged model as a new version carrying the run's tags (under its lease)."""
    model_version = tracking.register(
        client,
        name=settings.model.name,
        description=_description(settings, version, git.commit, overall, settings.github),
        model_uri=model_info.model_uri,
        model_id=model_info.model_id,
        run_id=run_id,
        lease=lease,
        tags={
            **tags,
            "mlgate.run_id": run_id,
            **{f"mlgate.metrics.holdout_{k}": f"{v:.6f}" for k, v in overall.items()},
        },
    )
    faults.reach("train.after_register", settings.tracking.fault_point)  # tests only
    return model_version


def log_model(
    booster: Any, inputs: pd.DataFrame, categories: Mapping[str, Sequence[str]]
) -> Any:  # MLflow's ModelInfo
    """Log `booster` in the active run as MLflow's XGBoost flavour; `inputs` (categorical
    features as codes) give its signature and input example. With categorical features its
    pyfunc flavour is mlgate's (`mlgate.pipeline.pyfunc`): it takes the category strings, and
    the categories travel in the model's metadata. Returns MLflow's ModelInfo."""
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature

    signature = infer_signature(inputs, booster.predict(xgb.DMatrix(inputs.head(5))))
    requirements = lineage.serving_requirements()
    log: dict[str, Any] = dict(
        name=MODEL_ARTIFACT,
        signature=pyfunc.any_categories(signature, categories),
        input_example=inputs.head(3),
        pip_requirements=requirements,
        model_format="ubj",
    )
    with lineage.requirements_scan_skipped(requirements):
        if not categories:
            return mlflow.xgboost.log_model(booster, **log)
        return mlflow.models.Model.log(
            artifact_path=None,  # `name` names it (MLflow 3)
            flavor=pyfunc.Flavor,
            flavor_name="xgboost",
            xgb_model=booster,
            metadata={CATEGORIES_KEY: dict(categories)},
            **log,
        )


@contextmanager
def _quiet_mlflow_hints() -> Iterator[None]:
    """Two MLflow hints that do not apply here: a local DVC object path matches two equivalent
    dataset-source classes, and the dataset profile (not the signature, which is all doubles)
    holds the integer label column."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="The specified dataset source can be interpreted in multiple ways",
            category=UserWarning,
        )
        warnings.filterwarnings(
            "ignore", message="Hint: Inferred schema contains integer", category=UserWarning
        )
        yield


def _class_counts(labels: pd.Series) -> str:
    """Class balance as `label:count` pairs, e.g. `0:357,1:212`."""
    return ",".join(
        f"{label}:{count}" for label, count in labels.value_counts().sort_index().items()
    )


def _library_pin() -> str:
    for name in ("xgboost-cpu", "xgboost"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "xgboost"


def _file_sha256(path: Path | None) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None


def _flat_params(settings: Settings, booster: Any, chosen: thresholds.Chosen) -> dict[str, object]:
    params: dict[str, object] = {f"xgb.{k}": v for k, v in settings.train.params.items()}
    params.update(
        {
            "num_boost_round": settings.train.num_boost_round,
            "early_stopping_rounds": settings.train.early_stopping_rounds,
            "split.seed": settings.split.seed,
            "split.validation_fraction": settings.split.validation_fraction,
            "split.holdout_fraction": settings.split.holdout_fraction,
            thresholds.PARAM: chosen.threshold,  # what serving labels with (the bundle)
            thresholds.RULE_PARAM: chosen.rule,
            "data.target": settings.data.target,
            "data.id_column": settings.data.id_column,
            "data.positive_class": settings.data.positive_class,
            "model.num_trees": booster.num_boosted_rounds(),
            "model.num_features": booster.num_features(),
        }
    )
    return params


def _log_artifacts(
    settings: Settings,
    split: Split | None,
    version: DataVersion,
    checked: validate.Report,
    located: shards.Shards | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> None:
    """The run's artifacts. `manifest`: the split manifest when it is not `split`'s key list
    (train.engine: dask logs the rule and a digest: `mlgate.pipeline.holdout`)."""
    import mlflow

    if manifest is None:
        assert split is not None
        key = settings.data.id_column
        manifest = {
            "schema_version": 1,
            "data_md5": version.dvc_md5,
            "data_path": version.path,
            "method": "seeded hash of the row key (id column, else feature values)",
            "seed": settings.split.seed,
            "validation_fraction": settings.split.validation_fraction,
            "holdout_fraction": settings.split.holdout_fraction,
            "key": key or "row position",
            "holdout_digest": split.holdout_digest,
            "holdout": row_keys(split.holdout, key),
        }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "split").mkdir()
        (root / "split" / "holdout.json").write_text(json.dumps(manifest, default=str))
        if located is not None:  # every object the workers read (train.engine: dask)
            write_json_atomic(root / "data" / "objects.json", located.manifest())
        (root / "environment").mkdir()
        (root / "environment" / "installed.txt").write_text(lineage.installed_distributions())
        # This process's own report, not reports/validation.json, which another job in the
        # same checkout may have rewritten since.
        write_json_atomic(
            root / "validation" / "report.json",
            {**asdict(checked), "ok": checked.ok, "data_md5": version.dvc_md5},
        )
        mlflow.log_artifacts(str(root))
        if settings.params_file:
            mlflow.log_artifact(str(settings.params_file), artifact_path="config")
        schema = settings.path(settings.schema.path)
        if schema.is_file():
            mlflow.log_artifact(str(schema), artifact_path="config")


def _description(
    settings: Settings,
    version: DataVersion,
    commit: str | None,
    overall: Mapping[str, float],
    gh: GitHubContext,
) -> str:
    auc = overall.get("auc")
    where = f" by {gh.run_url}" if gh.run_url else ""
    score = f" Holdout AUC {auc:.4f}." if auc is not None else ""
    return (
        f"XGBoost binary classifier trained on {version.path} (DVC md5 {version.dvc_md5}) "
        f"at commit {(commit or 'unknown')[:12]}{where}.{score}"
    )


def holdout_line(result: TrainResult) -> str:
    """One line: how the registered model did on the holdout, at its threshold."""
    m = result.metrics

    def value(key: str) -> str:
        return f"{m[key]:.4f}" if key in m else "undefined"

    rate = (
        f", {result.holdout_positive_rate:.1%} positive"
        if result.holdout_positive_rate is not None
        else ""
    )
    rule = (
        ""
        if result.threshold_rule == f"{result.threshold:g}"
        else (f" ({result.threshold_rule} on validation)")
    )
    return (
        f"holdout ({result.holdout_rows} rows{rate}): AUC {value('auc')}, PR-AUC "
        f"{value('pr_auc')}, F1 {value('f1')}, precision {value('precision')}, recall "
        f"{value('recall')} at threshold {result.threshold:.4g}{rule}"
    )


def report(result: TrainResult, settings: Settings) -> None:
    print(f"registered {result.model_uri} (run {result.run_id}, data {result.data_hash})")
    print(holdout_line(result), flush=True)
    github.write_outputs(
        settings.github,
        {
            "run-id": result.run_id,
            "model-name": result.model_name,
            "model-version": result.model_version,
            "model-uri": result.model_uri,
            "data-hash": result.data_hash,
        },
    )
    rows = [
        ("model", f"`{result.model_uri}`"),
        ("run", f"`{result.run_id}`"),
        ("data (DVC md5)", f"`{result.data_hash}`"),
        ("best iteration", result.best_iteration),
        ("threshold", f"{result.threshold:.4g} ({result.threshold_rule})"),
    ]
    rows += [(f"holdout {k}", f"{v:.4f}") for k, v in result.metrics.items()]
    github.write_summary(
        settings.github,
        "### 🧪 Trained and registered\n" + github.markdown_table(["", "value"], rows),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate train: validate the data, train XGBoost, log to MLflow and register a version."""
    parser = cli.stage_parser("train", main.__doc__)
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        report(train(settings), settings)
        return 0

    return cli.run(action)
