"""`mlgate train` with `train.engine: dask`: the runner never holds the data (issue 21).

The runner reads the version's manifest from the DVC remote (`shards.locate`), never the data:

1. the workers validate the shards (`validate.on_workers`); bad data stops here, as with the
   local engine, and each column's dtype after the schema's coercion comes back;
2. the workers read the shards again, type them with those dtypes and put each row in its part
   by the split's rule (`cluster.prepared`: lazy, never persisted; each step below reads the
   shards again, a partition at a time, so the version may be larger than the cluster's
   memory);
3. from every partition (`cluster.survey`): each part's rows and classes (every part must hold
   both classes, or the same DataError as `split.split_frame`), the categorical features'
   categories, each part's schema sample (the rows `train.schema_sample` takes of it: the
   signature, the input example and the logged datasets' schemas are the local engine's), and
   the holdout rows' hashes, from which the runner computes the holdout digest
   (`holdout.digest`);
4. training, by the rule of `cluster.plan_training` (dask.training: auto) or as dask.training
   says: in the workers' memory with xgboost.dask when the version fits comfortably
   (`cluster.fit_memory`), else in external memory, one XGBoost task per worker over its
   share of the shards (`cluster.fit_external`); the choice and its numbers are tags of the
   training run (`mlgate.dask.training`, ...) and a line on stderr;
5. the validation and holdout rows scored where they lie (`cluster.scored`): the threshold is
   chosen from the validation part's scores and labels, the holdout metrics and slices come from
   the holdout's scores, labels and slice masks, by the local engine's functions.

The split manifest (split/holdout.json) holds the rule and the digest, not the key list
(`holdout.manifest`); the tags, params, lineage and registration are the local engine's.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlgate.errors import DataError
from mlgate.gate import threshold as thresholds
from mlgate.gate.metrics import classification_metrics, slice_masks, slice_metrics
from mlgate.pipeline import holdout, lineage, shards, validate
from mlgate.pipeline.data import DataVersion, check_id_column, label_classes
from mlgate.registry import tracking
from mlgate.settings import Settings

if TYPE_CHECKING:
    from mlgate.pipeline.train import TrainResult

PARTS = {"train": 0, "validation": 1, "holdout": 2}  # cluster.TRAIN, VALIDATION, HOLDOUT


def version_of(settings: Settings, located: shards.Shards) -> DataVersion:
    """The data version as lineage records it, from the manifest alone (no pull): what
    `data.pull` describes for the same data.path."""
    dvc_file = settings.path(settings.data.dvc_file)
    path = settings.path(settings.data.path)
    one_file = len(located.shards) == 1 and path.suffix in shards.KINDS
    return DataVersion(
        dvc_file=str(PurePosixPath(dvc_file.relative_to(settings.project_dir))),
        dvc_md5=located.dvc_md5,
        path=validate._name(settings),
        file_md5=located.shards[0].md5 if one_file else located.dvc_md5,
        remote=located.remote,
        remote_url=located.remote_url,
    )


def train(settings: Settings, cluster_client: Any) -> TrainResult:
    from mlgate.pipeline import cluster
    from mlgate.pipeline.train import check_xgboost_params

    report, located, dtypes = validate.on_workers(settings, cluster_client)
    validate.publish(settings, report, located.dvc_md5)  # bad data stops here
    check_xgboost_params(settings.train.params)
    rule = holdout.Rule.of(settings, dtypes)
    data = cluster.prepared(cluster_client, located, rule)
    target = settings.data.target
    categorical = [
        c for c, t in dtypes.items() if t == "category" and c not in {target, rule.id_column}
    ]
    surveyed = cluster.survey(cluster_client, data, target, categorical)
    sample = surveyed.samples[cluster.TRAIN]
    check_id_column(sample.iloc[:0], settings.data.id_column)
    slice_masks(surveyed.samples[cluster.HOLDOUT], settings.metrics.slices)  # a bad query
    counts = surveyed.class_counts()
    negative, positive = label_classes(
        pd.Series(list(counts)), settings.data.positive_class, target
    )
    for name, code in PARTS.items():
        if len(surveyed.classes[code]) < 2:  # as split.split_frame refuses it
            raise DataError(
                f"the {name} part of the split holds {surveyed.rows[code]} rows and not both "
                "classes",
                fix="add rows of the rarer class, or raise "
                "split.holdout_fraction / split.validation_fraction",
            )
    digest = holdout.digest(surveyed.columns, surveyed.hashes)
    version = version_of(settings, located)
    client = tracking.connect(settings)  # unreachable server: fail here, no run started
    return _train(
        settings,
        cluster_client,
        data,
        surveyed,
        rule,
        digest,
        version,
        report,
        located,
        client,
        (negative, positive, counts),
    )


def _train(
    settings: Settings,
    cluster_client: Any,
    data: Any,
    surveyed: Any,  # cluster.Survey
    rule: holdout.Rule,
    digest: str,
    version: DataVersion,
    checked: validate.Report,
    located: shards.Shards,
    client: Any,
    classes: tuple[Any, Any, dict[Any, int]],
) -> TrainResult:
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    from mlgate.pipeline import cluster
    from mlgate.pipeline.train import (
        NEGATIVE_TAG,
        POSITIVE_TAG,
        TrainResult,
        _log_artifacts,
        _quiet_mlflow_hints,
        encode,
        features_of,
        log_metrics,
        log_model,
        register_version,
        schema_sample,
        tag_run,
        training_run,
    )

    negative, positive, counts = classes
    categories = surveyed.categories
    train_sample = surveyed.samples[cluster.TRAIN]
    features = len(features_of(train_sample.iloc[:0], settings).columns)
    plan = cluster.plan_training(
        settings.dask.training,
        surveyed.footprint(features),
        cluster.worker_memory(cluster_client),
    )
    print(plan.said(), file=sys.stderr, flush=True)
    git = lineage.git_info(settings.project_dir, settings.github)
    with training_run(settings, client, version, git) as (run, lease):
        run_id = run.info.run_id
        mlflow.set_tags(plan.tags())
        if plan.training == "memory":
            booster, best = cluster.fit_memory(
                cluster_client, settings, categories, train_sample, data
            )
        else:
            booster, best = cluster.fit_external(
                cluster_client, settings, categories, train_sample, located, rule
            )
        scores = cluster.scored(cluster_client, data, booster, settings, categories)
        # The threshold is chosen on the validation part; the holdout judges it.
        chosen = thresholds.choose(
            thresholds.parse(settings.metrics.threshold), scores.validation_y, scores.validation
        )
        y = scores.holdout_y
        overall = classification_metrics(y, scores.holdout, chosen.threshold)
        slices = slice_metrics(
            pd.DataFrame(),
            y,
            scores.holdout,
            settings.metrics.slices,
            chosen.threshold,
            masks=scores.masks,
        )
        rows = surveyed.total
        positives = sum(n for label, n in counts.items() if label == positive)
        holdout_rows = surveyed.rows[cluster.HOLDOUT]
        extra = {
            "mlgate.data.rows": rows,
            "mlgate.data.positive_rate": f"{positives / rows:.6f}",
            POSITIVE_TAG: str(positive),
            "mlgate.features.categorical": ",".join(categories) or None,
            NEGATIVE_TAG: str(negative),
            "mlgate.data.class_counts": ",".join(
                f"{label}:{n}" for label, n in pd.Series(counts).sort_index().items()
            ),
            "mlgate.split.seed": settings.split.seed,
            "mlgate.split.holdout_rows": holdout_rows,
            "mlgate.split.holdout_digest": digest,
            **located.lineage(),
        }
        tags = tag_run(settings, client, run, version, git, booster, chosen, extra)

        with _quiet_mlflow_hints():
            # The parts are not on the runner: each is logged by its source, name, schema
            # (from its schema sample, as the local engine infers it) and an order-free
            # fingerprint of its rows (the holdout's: its digest).
            source = resolve_dataset_source(version.object_url)
            sources = {}
            for name, code in PARTS.items():
                sources[name] = MetaDataset(  # type: ignore[abstract]
                    source,
                    name=f"{name}@{version.dvc_md5[:12]}",
                    digest=(digest if code == cluster.HOLDOUT else surveyed.fingerprints[code])[
                        :36
                    ],
                    schema=infer_signature(schema_sample(surveyed.samples[code])).inputs,
                )
                mlflow.log_input(sources[name], context=name)

        inputs = encode(features_of(schema_sample(train_sample), settings), categories)
        model_info = log_model(booster, inputs, categories)

        log_metrics(model_info, overall, slices, best, sources["holdout"])
        manifest = holdout.manifest(
            rule,
            data_md5=version.dvc_md5,
            data_path=version.path,
            rows=holdout_rows,
            holdout_digest=digest,
        )
        _log_artifacts(settings, None, version, checked, located, manifest=manifest)

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
        holdout_rows=holdout_rows,
        holdout_positive_rate=float(np.mean(y)) if len(y) else None,
    )


# ---- `mlgate evaluate` with train.engine: dask, of a model whose manifest is a rule ----


@dataclass(frozen=True)
class RemoteHoldout:
    """A holdout rebuilt on the workers from the logged rule, checked against its digest:
    the rows stay there (`data`, read again by each step); the runner holds their labels and
    masks."""

    data: Any  # dask DataFrame: the version, typed, with its parts (`cluster.prepared`)
    rows: int
    y: np.ndarray  # 0/1 per holdout row, in the version's order
    labels: pd.DataFrame  # the target's distinct values in the holdout (one column)
    masks: dict[str, np.ndarray]
    fairness: pd.DataFrame | None  # gate.fairness_column of every holdout row
    head: pd.DataFrame  # the first holdout rows (the latency check's)
    settings: Settings
    # a key-list holdout (a local-engine model): the holdout's rows as the workers score them
    # (the partitions' order) put in the key list's order, which y, masks and head are in
    order: np.ndarray | None = None
    located: Any = None  # shards.Shards of the version the rows were read from
    as_read: bool = False  # `data` is typed as data.load_frame reads it (cluster.as_read)


def holdout_on_workers(
    settings: Settings, cluster_client: Any, tags: Mapping[str, str], manifest: Mapping[str, Any]
) -> RemoteHoldout:
    """The holdout of the version a model was trained on (`mlgate.data.md5`), read from the
    DVC remote by the workers, typed and split by the manifest's rule, its digest checked
    (a mismatch is a DataError before anything is recorded)."""
    from mlgate.gate.latency import ROWS
    from mlgate.pipeline import cluster

    rule = holdout.Rule.from_manifest(manifest)
    located = shards.locate(settings, md5=tags.get("mlgate.data.md5"))
    data = cluster.prepared(cluster_client, located, rule)
    columns = [c for c in data.columns if c != cluster.PART]
    fairness = settings.gate.fairness_column
    pieces = cluster.holdout_facts(cluster_client, data, settings, fairness, ROWS)
    hashes = (
        np.concatenate([p["hashes"] for p in pieces]) if pieces else np.empty(0, dtype=np.uint64)
    )
    holdout.check(columns, hashes, manifest, tags["mlgate.split.holdout_digest"])
    target = settings.data.target
    labels = list(dict.fromkeys(v for p in pieces for v in p["labels"]))
    names = list(settings.metrics.slices)
    masks = np.concatenate([p["masks"] for p in pieces]) if pieces else np.empty((0, len(names)))
    values = [p["fairness"] for p in pieces if p["fairness"] is not None]
    return RemoteHoldout(
        located=located,
        data=data,
        rows=len(hashes),
        y=np.concatenate([p["y"] for p in pieces]) if pieces else np.empty(0, dtype=np.int8),
        labels=pd.DataFrame({target: labels}),
        masks={name: masks[:, i].astype(bool) for i, name in enumerate(names)},
        fairness=(
            pd.DataFrame({fairness: np.concatenate(values)})
            if fairness and len(values) == len(pieces) and values
            else None
        ),
        head=pd.concat([p["head"] for p in pieces], ignore_index=True).iloc[:ROWS],
        settings=settings,
    )


def score(
    cluster_client: Any, remote: RemoteHoldout, model: Any, booster: Any, what: str
) -> np.ndarray:
    """A logged model's booster scored on the holdout rows where they lie, its inputs
    conformed as `train.conform` does (the model's recorded categories, its double inputs)."""
    from mlgate.pipeline import cluster
    from mlgate.pipeline.train import CATEGORIES_KEY

    recorded = (getattr(model.metadata, "metadata", None) or {}).get(CATEGORIES_KEY) or {}
    schema = model.metadata.get_input_schema()
    doubles = (
        []
        if schema is None
        else [
            spec.name for spec in schema.inputs if str(getattr(spec, "type", "")).endswith("double")
        ]
    )
    scores = cluster.score_holdout(
        cluster_client, remote.data, booster, remote.settings, recorded, doubles, what
    )
    return scores if remote.order is None else scores[remote.order]


def keyed_holdout_on_workers(
    settings: Settings, cluster_client: Any, tags: Mapping[str, str], manifest: Mapping[str, Any]
) -> RemoteHoldout:
    """The holdout of a model trained by the local engine (its manifest: the holdout's key
    list), rebuilt on the workers as `split.holdout_from_keys` rebuilds it on the runner: the
    version the model was trained on (`mlgate.data.md5`) read from the DVC remote and typed as
    `data.load_frame` reads it (`cluster.as_read`), the rows the key list names selected, and
    `split.frame_digest` computed here from their hashes in the key list's order. Missing rows
    or another digest: the local engine's DataError, before anything is recorded."""
    located = shards.locate(settings, md5=tags.get("mlgate.data.md5"))
    keys = list(manifest.get("holdout") or [])
    return keyed_remote(
        settings, cluster_client, located, keys, tags["mlgate.split.holdout_digest"]
    )


def keyed_remote(
    settings: Settings, cluster_client: Any, located: shards.Shards, keys: list[Any], digest: str
) -> RemoteHoldout:
    """`keyed_holdout_on_workers` of the version's shards `located`."""
    from mlgate.gate.latency import ROWS
    from mlgate.pipeline import cluster
    from mlgate.pipeline.split import rows_digest

    fix = "evaluate against the data version the model was trained on (mlgate.data.md5)"
    frame, _ = cluster.as_read(cluster_client, located)
    fairness = settings.gate.fairness_column
    data, pieces = cluster.keyed_holdout(cluster_client, frame, keys, settings, fairness, ROWS)
    at = np.concatenate([p["at"] for p in pieces]) if pieces else np.empty(0, dtype=np.intp)
    order = np.argsort(at, kind="stable")
    if len(at) != len(keys) or not np.array_equal(at[order], np.arange(len(keys))):
        raise DataError(
            "holdout rows logged at training are missing from the data"
            if len(np.unique(at)) < len(keys)
            else f"the data holds {len(at)} rows for the {len(keys)} holdout keys logged at "
            f"training (the id column '{settings.data.id_column}' repeats a value)",
            fix=fix,
        )
    hashes = np.concatenate([p["hashes"] for p in pieces])[order]
    columns = [c for c in data.columns if c != cluster.PART]
    if rows_digest(columns, hashes) != digest:
        raise DataError("the rebuilt holdout does not match the digest logged at training", fix=fix)
    target = settings.data.target
    names = list(settings.metrics.slices)
    masks = np.concatenate([p["masks"] for p in pieces])[order]
    values = [p["fairness"] for p in pieces if p["fairness"] is not None]
    heads = pd.concat([p["head"] for p in pieces])
    head_at = np.concatenate([p["at"][p["at"] < ROWS] for p in pieces])
    return RemoteHoldout(
        data=data,
        rows=len(keys),
        y=np.concatenate([p["y"] for p in pieces])[order],
        labels=pd.DataFrame({target: list(dict.fromkeys(v for p in pieces for v in p["labels"]))}),
        masks={name: masks[:, i].astype(bool) for i, name in enumerate(names)},
        fairness=(
            pd.DataFrame({fairness: np.concatenate(values)[order]})
            if fairness and len(values) == len(pieces) and values
            else None
        ),
        head=heads.iloc[np.argsort(head_at, kind="stable")],
        settings=settings,
        order=order,
        located=located,
        as_read=True,
    )
