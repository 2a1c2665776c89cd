"""`train.engine: dask` (issue 21, first slice): training and the gate's scoring on a Dask cluster.

The runner connects to the scheduler named by `dask.scheduler` (none: a `LocalCluster` sized to
the machine) and only submits work:

* `shards.frame` reads the shards of the data version named by data.dvc straight from the DVC
  remote, on the workers, each checked against the manifest's md5 (`read` reads a file, or a
  directory of Parquet or CSV shards, on storage the workers share);
* `split_parts` labels each row train / validation / holdout per partition with the same seeded
  row hash as the local engine (`frames.row_hash`), so a row lands in the same part whatever the
  partitioning;
* `fit` trains with the same `train.params` and early stopping on the validation part, and
  returns the same `xgboost.Booster` the local engine does, cut at its best iteration, so
  logging, registration, bundles and serving do not change. A data version in the DVC remote
  (`mlgate train`) trains by the rule of `plan_training` (dask.training): in the workers'
  memory with `xgboost.dask` when it fits comfortably (`fit_memory`), else in XGBoost's
  external memory, one task per worker over its share of the shards (`fit_external`: the
  version need not fit in the cluster's memory); data.path with `xgboost.dask` (`fit`);
* the steps that go over the whole version (`survey`, `scored`, `holdout_facts`,
  `score_holdout`) read it a partition at a time (`on_partitions`): nothing is persisted;
* `predict` scores the partitions of a dask DataFrame where they lie, every booster at once,
  and gathers one float32 array (a row per booster, the label's when asked); `score` does so
  for a pandas frame on the runner. From these arrays the gate's own functions compute the
  metrics and DeLong's test exactly.

A worker lost while training stops the stage with `ClusterError` (exit 14) before anything is
registered. The workers import mlgate (the partition functions are its own): they run the same
mlgate version as the runner.
"""

from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlgate.errors import ClusterError, DataError
from mlgate.pipeline import shards
from mlgate.pipeline.frames import (
    BUCKETS,
    encode,
    feature_types,
    features_of,
    part_labels_of,
    row_hash,
)
from mlgate.pipeline.holdout import Rule, row_hashes
from mlgate.pipeline.shards import Shards
from mlgate.settings import DaskTls, Settings, tls_material

PART = "__mlgate_part__"  # the column `split_parts` adds: 0 train, 1 validation, 2 holdout
TRAIN, VALIDATION, HOLDOUT = 0, 1, 2
BLOCKSIZE = "64MB"  # a CSV file is read in partitions of about this size
POLL_SECONDS = 0.5  # how often a running training checks that its workers are alive
RELEASE_SECONDS = 2.0  # how often the workers hand back freed memory during a stage (_release)
STALLED_SECONDS = 120.0  # every worker paused (out of memory) this long: the stage fails


@contextmanager
def connect(settings: Settings) -> Iterator[Any]:  # -> distributed.Client
    """A client of the configured scheduler (or of a LocalCluster), with at least one worker."""
    from distributed import Client, LocalCluster

    address = settings.dask.scheduler
    timeout = settings.dask.connect_timeout
    if address is None:
        with (
            LocalCluster(dashboard_address=None, processes=True) as local,  # type: ignore[no-untyped-call]
            Client(local) as client,  # type: ignore[no-untyped-call]
        ):
            yield client
        return
    material = tls_material(settings)  # a tls:// address without material: refused here
    security = _security(material)
    try:
        client = Client(address, timeout=timeout, security=security)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        tls = _tls_failure(exc, address, material)
        if tls is not None:
            raise tls from exc
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            fix="check dask.scheduler (the workflow input dask-scheduler), that the scheduler "
            "runs and that this runner may reach it; raise dask.connect_timeout for a slow start"
            + (
                "; a scheduler that requires TLS takes a tls:// address" if security is None else ""
            ),
        ) from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as exc:
            raise ClusterError(
                f"the Dask scheduler at {address} has no worker",
                fix="start workers (`dask worker " + address + "`) or scale the cluster up",
            ) from exc
        yield client


def _security(material: DaskTls | None) -> Any:
    """The client's TLS for a tls:// scheduler (None: tcp://, or a LocalCluster). The material
    is PEM text (`settings.tls_material`: the DASK_TLS_* secrets, or the dask.tls_* files read
    and checked); mlgate writes it to no file. Dask's `Security` takes text for each (a value
    holding a line break is content, not a path): it loads the CA from memory and the
    certificate and key through a private temporary directory (mkdtemp, 0700) that it removes
    as soon as the TLS context holds them."""
    if material is None:
        return None
    from distributed.security import Security

    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=material.ca,
        tls_client_cert=material.cert,
        tls_client_key=material.key,
        require_encryption=True,
    )


def _tls_failure(exc: BaseException, address: str, material: DaskTls | None) -> ClusterError | None:
    """A connection refused during the TLS handshake, said as such (exit 14), not as an
    unreachable scheduler; None when nothing in the error chain is TLS's. distributed does not
    always chain the ssl error (a peer's alert may come only as the text of a CommClosedError),
    so its text counts too."""
    import re
    import ssl

    if material is None:
        return None
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 16:  # the cause chain, bounded
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " | ".join(str(e) for e in chain)
    found = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    reason = re.search(r"\[SSL: ([A-Z0-9_]+)\]", text) or re.search(r"(SSL\w*Error)", text)
    if found is None and reason is None:
        return None
    origin = material.origin
    if isinstance(found, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        why = found.verify_message if isinstance(found, ssl.SSLCertVerificationError) else ""
        return ClusterError(
            f"TLS: the certificate of the Dask scheduler at {address} is not signed by the CA "
            f"given ({origin})" + (f": {why}" if why else ""),
            fix="DASK_TLS_CA (dask.tls_ca_file) must be the CA that signed the scheduler's "
            "certificate: dask-gateway's cluster.security.tls_ca_file, the operator's or "
            "service's cluster CA; a renewed cluster CA needs the secret updated",
        )
    code = next(g for g in reason.groups() if g) if reason is not None else type(found).__name__
    said = (
        f": the client certificate from {origin} expired at {material.cert_not_after}"
        if material.cert_expired
        else f" ({code}): the scheduler did not accept the client certificate from {origin}, "
        "or it does not speak TLS"
    )
    return ClusterError(
        f"TLS: the handshake with the Dask scheduler at {address} failed{said}",
        fix="DASK_TLS_CERT (dask.tls_cert) must be signed by a CA the scheduler trusts and "
        "valid now: issue a new one (dask-gateway issues one per cluster: take the current "
        "cluster's cluster.security) and update the secrets; check that the scheduler "
        "listens with --protocol tls",
    )


def read(path: Path, dtypes: Mapping[str, Any] | None = None) -> Any:  # -> dask DataFrame
    """The data as a dask DataFrame: a CSV or Parquet file (by extension), or a directory of
    shards of one kind. `dtypes` (the validated frame's) are applied per partition, so every
    row hashes as it does in the local engine."""
    import dask.dataframe as dd

    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix in {".csv", ".parquet", ".pq"})
        kinds = {p.suffix.replace(".pq", ".parquet") for p in shards}
        if len(kinds) != 1:
            raise DataError(
                f"{path} must hold shards of one kind (.csv or .parquet), found "
                f"{', '.join(sorted(kinds)) or 'none'}",
                fix="keep the data version's shards in one format, one file each",
            )
        names = [str(p) for p in shards]
        frame = dd.read_csv(names) if kinds == {".csv"} else dd.read_parquet(names)
    elif path.suffix in {".parquet", ".pq"}:
        frame = dd.read_parquet(str(path))
    elif path.is_file():
        frame = dd.read_csv(str(path), blocksize=BLOCKSIZE)
    else:
        raise DataError(f"data {path} does not exist", fix="run `dvc pull` or correct data.path")
    if dtypes:
        frame = frame.astype({k: v for k, v in dtypes.items() if k in frame.columns})
    return frame


def part_of(
    frame: pd.DataFrame,
    *,
    target: str,
    seed: int,
    validation_fraction: float,
    holdout_fraction: float,
    id_column: str | None,
) -> pd.Series:
    """Each row's part by the local engine's rule (`split.split_frame`), for one partition."""
    hashed = row_hash(frame, target=target, seed=seed, id_column=id_column)
    position = hashed % BUCKETS / BUCKETS
    part = np.full(len(frame), TRAIN, dtype="int8")
    part[position < holdout_fraction + validation_fraction] = VALIDATION
    part[position < holdout_fraction] = HOLDOUT
    return pd.Series(part, index=frame.index, name=PART)


def split_parts(frame: Any, settings: Settings) -> Any:
    """`frame` with the PART column, computed partition by partition on the workers."""
    rule = {
        "target": settings.data.target,
        "seed": settings.split.seed,
        "validation_fraction": settings.split.validation_fraction,
        "holdout_fraction": settings.split.holdout_fraction,
        "id_column": settings.data.id_column,
    }
    parts = frame.map_partitions(part_of, **rule, meta=(PART, "int8"))
    return frame.assign(**{PART: parts})


def _inputs(
    part: pd.DataFrame, settings: Settings, categories: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    return encode(features_of(part.drop(columns=[PART]), settings), categories)


def _labels(part: pd.DataFrame, settings: Settings) -> pd.Series:
    return pd.Series(part_labels_of(part, settings).astype("float32"), index=part.index)


def fit(
    client: Any,
    settings: Settings,
    categories: Mapping[str, Sequence[str]],
    sample: pd.DataFrame,
) -> tuple[Any, int]:
    """Train on the cluster with xgboost.dask's DaskQuantileDMatrix (which holds every
    partition of a worker at once), from data.path on storage the workers share, with early
    stopping on the validation part; the booster cut at its best iteration, as `train.fit`
    returns it. `sample` is a few validated rows (their dtypes and the model's feature types).
    A DVC version's shards (`mlgate train`, train.engine: dask) train by `plan_training`
    (`fit_memory` or `fit_external`); this is `make bench`'s dask-train figure."""
    from xgboost import dask as dxgb

    frame = read(settings.path(settings.data.path), sample.dtypes.to_dict())
    data = split_parts(frame, settings).persist()
    empty = sample.iloc[:0].assign(**{PART: np.int8(0)})
    x_meta = _inputs(empty, settings, categories)
    types = feature_types(x_meta, categories)
    matrices: dict[str, Any] = {}
    for name, code in (("train", TRAIN), ("validation", VALIDATION)):
        rows = data[data[PART] == code]
        x = rows.map_partitions(_inputs, settings, categories, meta=x_meta)
        y = rows.map_partitions(_labels, settings, meta=pd.Series([], dtype="float32"))
        matrices[name] = dxgb.DaskQuantileDMatrix(
            client,
            x,
            y,
            feature_types=types,
            enable_categorical=types is not None,
            ref=matrices.get("train"),
        )
    output = watched(
        client,
        lambda: dxgb.train(
            client,
            dict(settings.train.params),
            matrices["train"],
            num_boost_round=settings.train.num_boost_round,
            evals=[(matrices["train"], "train"), (matrices["validation"], "validation")],
            early_stopping_rounds=settings.train.early_stopping_rounds,
            verbose_eval=False,
        ),
        "training",
    )
    booster = output["booster"]
    best = int(booster.best_iteration)
    trimmed = booster[: best + 1]
    trimmed.set_attr(best_iteration=str(best))
    return trimmed, best


def fit_memory(
    client: Any,
    settings: Settings,
    categories: Mapping[str, Sequence[str]],
    sample: pd.DataFrame,
    data: Any,
) -> tuple[Any, int]:
    """Train a DVC version's shards in the workers' memory with xgboost.dask, from `data`
    (`prepared`: lazy), as `fit` trains data.path: each partition's train and validation rows
    (selected by the PART column), encoded as the local engine encodes them and their labels
    by `part_labels_of`, computed in one pass over the shards (each shard read once for the
    four collections) and held only while training (released when it ends, however it ends);
    a `DaskQuantileDMatrix` per part, the validation part's with the train part's bins
    (`ref=`), early stopping on it, the booster cut at its best iteration. Chosen by
    `plan_training` when the version fits comfortably in the workers' memory."""
    from xgboost import dask as dxgb

    empty = sample.iloc[:0].assign(**{PART: np.int8(0)})
    x_meta = _inputs(empty, settings, categories)
    types = feature_types(x_meta, categories)
    y_meta = pd.Series([], dtype="float32")

    def work() -> Any:
        wanted = []
        for code in (TRAIN, VALIDATION):
            rows = data[data[PART] == code]
            wanted.append(rows.map_partitions(_inputs, settings, categories, meta=x_meta))
            wanted.append(rows.map_partitions(_labels, settings, meta=y_meta))
        x_train, y_train, x_valid, y_valid = client.persist(wanted)  # each shard read once
        matrix = dxgb.DaskQuantileDMatrix(
            client, x_train, y_train, feature_types=types, enable_categorical=types is not None
        )
        valid = dxgb.DaskQuantileDMatrix(
            client,
            x_valid,
            y_valid,
            feature_types=types,
            enable_categorical=types is not None,
            ref=matrix,
        )
        return dxgb.train(
            client,
            dict(settings.train.params),
            matrix,
            num_boost_round=settings.train.num_boost_round,
            evals=[(matrix, "train"), (valid, "validation")],
            early_stopping_rounds=settings.train.early_stopping_rounds,
            verbose_eval=False,
        )

    try:
        output = watched(client, work, "training")
    finally:
        # Nothing persisted longer than training: the collections and matrices went with
        # `work`, but a DaskDMatrix refers to itself (its `_init`), so the collector frees
        # them and with them their futures, which the scheduler then forgets. (Client.cancel
        # of the futures tripped an assertion in the scheduler.)
        gc.collect()
    booster = output["booster"]
    best = int(booster.best_iteration)
    trimmed = booster[: best + 1]
    trimmed.set_attr(best_iteration=str(best))
    return trimmed, best


# ---- Which way a DVC version's shards train (dask.training; docs/dask.md, "Training: in
# ---- memory or in external memory"). The rule, in one place:
#
#   in memory when   SAFETY x (held + PARTITION_COPIES x largest + rows x (features x
#                    BIN_BYTES + ROW_STATE)) <= min over workers (MEMORY_SHARE x limit - used)
#
# held: the train and validation rows (as pandas holds them, from the survey) of the
# ceil(partitions / workers) largest partitions, what the busiest worker holds; largest: the
# largest partition as read (a partition in the making is a few copies of it); rows: the
# busiest worker's share of the train and validation rows, quantized (a byte a value) and with
# XGBoost's per-row state while boosting; limit: the worker's --memory-limit, used: its process
# memory now. A worker without a limit (0 or None) sets no bound; no worker with one: in memory.

SAFETY = 2.0  # the estimate is doubled: partitions are not dealt evenly, pandas copies
PARTITION_COPIES = 3  # a partition read, typed and split: its frame and two copies at most
BIN_BYTES = 1  # a quantized feature value (max_bin <= 256: one byte)
ROW_STATE = 64  # bytes per row XGBoost keeps while boosting (gradients, predictions, positions)
MEMORY_SHARE = 0.7  # of a worker's limit: above it Dask spills (then pauses at 0.8)
TRAININGS = ("memory", "external")


@dataclass(frozen=True)
class Footprint:
    """What the in-memory training of a version would hold, from the survey."""

    rows: int  # train and validation rows
    features: int  # the model's input columns
    held: tuple[int, ...]  # per partition: its train and validation rows' bytes in pandas
    largest: int  # the largest partition's bytes in pandas, as read


@dataclass(frozen=True)
class Plan:
    """The training path chosen and why (logged on the training run and on stderr)."""

    training: str  # memory | external
    estimate: int  # bytes the busiest worker would hold training in memory
    room: int | None  # bytes a worker may hold (None: no worker has a memory limit)
    forced: bool  # dask.training named the path; else auto chose it

    def tags(self) -> dict[str, str]:
        return {
            "mlgate.dask.training": self.training,
            "mlgate.dask.training_rule": "forced" if self.forced else "auto",
            "mlgate.dask.training_estimate_bytes": str(self.estimate),
            "mlgate.dask.training_room_bytes": "unlimited" if self.room is None else str(self.room),
        }

    def said(self) -> str:
        room = "no memory limit" if self.room is None else f"room {self.room / 1e6:,.1f} MB"
        why = "dask.training" if self.forced else "dask.training: auto"
        return (
            f"training {'in memory' if self.training == 'memory' else 'in external memory'} "
            f"({why}): in-memory estimate {self.estimate / 1e6:,.1f} MB for the busiest "
            f"worker, {room} per worker"
        )


def plan_training(
    setting: str, footprint: Footprint, workers: Sequence[tuple[int | None, int]]
) -> Plan:
    """The rule above. `setting`: dask.training (auto | memory | external); `workers`: each
    worker's (memory limit, process memory now) in bytes."""
    count = max(1, len(workers))
    share = -(-len(footprint.held) // count)
    busiest = sum(sorted(footprint.held, reverse=True)[:share])
    rows = -(-footprint.rows // count)
    estimate = int(
        SAFETY
        * (
            busiest
            + PARTITION_COPIES * footprint.largest
            + rows * (footprint.features * BIN_BYTES + ROW_STATE)
        )
    )
    limited = [int(MEMORY_SHARE * limit) - used for limit, used in workers if limit]
    room = min(limited) if limited else None
    if setting in TRAININGS:
        return Plan(setting, estimate, room, forced=True)
    fits = room is None or estimate <= room
    return Plan("memory" if fits else "external", estimate, room, forced=False)


def worker_memory(client: Any) -> list[tuple[int | None, int]]:
    """Each worker's (memory limit, process memory now), as the scheduler knows them."""
    found = []
    for info in _identities(client).values():
        used = (info.get("metrics") or {}).get("memory") or 0
        found.append((info.get("memory_limit") or None, int(used)))
    return found


TRACKER_TIMEOUT = 300  # s the tracker waits for every worker to join a training


def fit_external(
    client: Any,
    settings: Settings,
    categories: Mapping[str, Sequence[str]],
    sample: pd.DataFrame,
    source: Shards,
    rule: Rule,
) -> tuple[Any, int]:
    """Train in external memory (XGBoost's `ExtMemQuantileDMatrix`), one task per worker inside
    one XGBoost collective: the shards are dealt to the workers in manifest order (round-robin
    over the sorted worker addresses), each worker reads each of its shards once from the
    remote (md5-checked), types and splits it by `rule` and writes the train and validation
    rows, encoded as the local engine encodes them, to its local disk (`_split_shard`); then
    XGBoost iterates over those files a shard at a time into a quantized matrix cached on the
    same disk (`dask worker --local-directory`), for the train part and, with the train part
    as its reference, the validation part. A worker thus holds one shard in
    memory plus XGBoost's pages in use, whatever the size of the version; the tracker runs on
    the scheduler, as xgboost.dask starts it, so the runner need not be reachable from the
    workers. The booster is the one every member ends with, cut at its best iteration."""
    from distributed.comm.addressing import get_address_host
    from xgboost import dask as dxgb
    from xgboost.collective import Config

    alive = sorted(workers(client))
    dealt: dict[str, list[shards.Shard]] = {w: [] for w in alive}
    for n, shard in enumerate(source.shards):
        dealt[alive[n % len(alive)]].append(shard)
    members = [w for w in alive if dealt[w]]
    empty = sample.iloc[:0].assign(**{PART: np.int8(0)})
    columns = list(_inputs(empty, settings, categories).columns)

    def work() -> list[Any]:
        host = get_address_host(client.scheduler.address).strip("/:")
        # xgboost.dask's own way to start its tracker on the scheduler (a function of xgboost,
        # which the scheduler imports; mlgate need not be installed there)
        tracker = client.run_on_scheduler(
            dxgb._start_tracker, len(members), host, None, TRACKER_TIMEOUT
        )
        args = Config(timeout=TRACKER_TIMEOUT).get_comm_config(tracker)
        futures = [
            client.submit(
                _train_on_worker,
                dealt[w],
                kind=source.kind,
                storage_options=dict(source.storage_options),
                rule=rule,
                settings=settings,
                categories=dict(categories),
                columns=columns,
                collective=args,
                workers=[w],
                allow_other_workers=False,
                pure=False,
                key=f"mlgate-train-external-{n}-{w}",
            )
            for n, w in enumerate(members)
        ]
        # a member that fails before it joins the collective (the remote, its disk) fails the
        # stage now: its peers would wait for it until the tracker's timeout
        wait_for(futures, first_error=True)
        boosters: list[Any] = client.gather(futures)
        return boosters

    boosters = watched(client, work, "training")
    booster = boosters[0]
    best = int(booster.best_iteration)
    trimmed = booster[: best + 1]
    trimmed.set_attr(best_iteration=str(best))
    return trimmed, best


def _split_shard(
    shard: shards.Shard,
    *,
    kind: str,
    storage_options: Mapping[str, Any],
    rule: Rule,
    settings: Settings,
    categories: Mapping[str, Sequence[str]],
    columns: Sequence[str],
    directory: Path,
) -> dict[int, tuple[Path, int]]:
    """`shard` read once from the DVC remote (its md5 checked: `shards.read_shard`), typed and
    split by `rule`, and its train and validation rows, encoded as the local engine encodes
    them, written with their labels to the worker's local `directory` (uncompressed Parquet:
    the dtypes kept, categories already codes): per part, the file
    and its rows. The files are the task's own (a private temporary directory it removes):
    XGBoost's passes over the parts read them, not the remote."""
    typed = rule.typed(shards.read_shard(shard, kind, storage_options))
    codes = rule.parts(typed)
    out: dict[int, tuple[Path, int]] = {}
    for code in (TRAIN, VALIDATION):
        rows = typed[codes == code]
        x = encode(features_of(rows, settings), categories)[list(columns)]
        y = part_labels_of(rows, settings).astype("float32")
        path = directory / f"{shard.md5}-{code}.parquet"
        try:
            x.assign(**{_LABEL: y}).to_parquet(path, index=False, compression=None)
        except OSError as exc:
            raise ClusterError(
                f"cannot write shard {shard.relpath}'s split to the worker's disk "
                f"({directory}): {type(exc).__name__}: {exc}",
                fix="the workers need room on their local directory (`dask worker "
                "--local-directory`) for their share of the version's train and validation "
                "rows (about 8 bytes a value, uncompressed) and XGBoost's pages (docs/dask.md)",
            ) from exc
        out[code] = (path, len(rows))
    del typed
    shards.release_memory()
    return out


_LABEL = "__mlgate_label__"  # the labels' column in `_split_shard`'s files


def _part_batches(
    split: Sequence[tuple[Path, int]], categories: Mapping[str, Sequence[str]], cache: str
) -> Any:  # -> xgboost.DataIter
    """XGBoost's iterator over one part's files (`_split_shard`), a file at a time."""
    import xgboost as xgb

    class Batches(xgb.DataIter):
        def __init__(self) -> None:
            self._next = 0
            self._given = 0
            super().__init__(cache_prefix=cache, release_data=True)

        def reset(self) -> None:
            self._next = 0
            self._given = 0

        def next(self, input_data: Any) -> bool:
            while self._next < len(split):
                path, rows = split[self._next]
                self._next += 1
                if not rows and (self._next < len(split) or self._given):
                    continue
                x = pd.read_parquet(path)  # written by this task, in its own directory
                y = x.pop(_LABEL)
                input_data(data=x, label=y, feature_types=feature_types(x, categories))
                self._given += 1
                return True
            return False

    return Batches()


PAGE_BYTES = 1.5  # bytes of XGBoost's pages per train/validation value (1.1 measured, max_bin
# <= 256; twice that above)


def pages_room(rows: int, columns: int, max_bin: int | None) -> int:
    """The local disk XGBoost's external-memory pages take for `rows` x `columns` values."""
    wide = 2 if (max_bin or 256) > 256 else 1
    return int(PAGE_BYTES * wide * rows * columns)


def no_room(directory: str, needed: int, free: int) -> ClusterError | None:
    """The error for a worker's local directory with less free room than XGBoost's pages need
    (None: enough). Checked before the pages are written: XGBoost writes them from a thread of
    its own, and a failed write (a full disk) aborts the worker process ("FileStream.Write
    incomplete" in its log), which Dask sees as a lost worker."""
    if free >= needed:
        return None
    return ClusterError(
        f"the worker's local directory {directory} has {free / 1e6:,.1f} MB free; XGBoost's "
        f"external-memory pages of its share of the version need about {needed / 1e6:,.1f} MB",
        fix="give the workers more room on their local directory (`dask worker "
        "--local-directory` on a larger disk), more workers (each takes a smaller share), or "
        "dask.training: memory if the version fits in the workers' memory (docs/dask.md)",
    )


def _train_on_worker(
    dealt: Sequence[shards.Shard],
    *,
    kind: str,
    storage_options: Mapping[str, Any],
    rule: Rule,
    settings: Settings,
    categories: Mapping[str, Sequence[str]],
    columns: Sequence[str],
    collective: Mapping[str, Any],
) -> Any:
    """One member of the external-memory training (on a worker): its shards read once from
    the remote and split to the worker's local disk (`_split_shard`), the room for XGBoost's
    pages checked (`no_room`), the train and validation parts quantized there, boosting
    inside the collective. The directory is removed when the task ends, however it ends."""
    import shutil
    import tempfile

    import xgboost as xgb
    from distributed import get_worker
    from xgboost.dask import CommunicatorContext

    worker = get_worker()
    threads = int(worker.state.nthreads)
    params = {**dict(settings.train.params), "nthread": threads}
    with tempfile.TemporaryDirectory(prefix="mlgate-extmem-", dir=worker.local_directory) as tmp:
        split = [
            _split_shard(
                shard,
                kind=kind,
                storage_options=storage_options,
                rule=rule,
                settings=settings,
                categories=categories,
                columns=columns,
                directory=Path(tmp),
            )
            for shard in dealt
        ]
        rows = sum(n for parts in split for _, n in parts.values())
        needed = pages_room(rows, len(columns), params.get("max_bin"))
        refused = no_room(tmp, needed, shutil.disk_usage(tmp).free)
        if refused is not None:
            raise refused
        with CommunicatorContext(**dict(collective)):
            matrices: dict[int, Any] = {}
            for code, name in ((TRAIN, "train"), (VALIDATION, "validation")):
                batches = _part_batches(
                    [parts[code] for parts in split], categories, f"{tmp}/{name}"
                )
                matrices[code] = xgb.ExtMemQuantileDMatrix(
                    batches,
                    max_bin=params.get("max_bin"),
                    ref=matrices.get(TRAIN),
                    enable_categorical=bool(categories),
                    nthread=threads,
                )
            shards.release_memory()  # the batches' frames, before boosting needs its own
            booster = xgb.train(
                params,
                matrices[TRAIN],
                num_boost_round=settings.train.num_boost_round,
                evals=[(matrices[TRAIN], "train"), (matrices[VALIDATION], "validation")],
                early_stopping_rounds=settings.train.early_stopping_rounds,
                verbose_eval=False,
            )
            del matrices
    shards.release_memory()
    return booster


def workers(client: Any) -> set[str]:
    """The addresses of the scheduler's workers now. Asked of the scheduler itself:
    `Client.scheduler_info()` returns a cache that the client's own periodic refresh
    overwrites with a copy holding no workers."""
    return set(_identities(client))


def _identities(client: Any) -> dict[str, Any]:
    identity = client.sync(client.scheduler.identity, n_workers=-1)
    found: dict[str, Any] = identity.get("workers", {})
    return found


def _all_paused(found: dict[str, Any]) -> bool:
    """Whether every worker is paused: Dask pauses a worker whose process memory is above
    its pause threshold (80% of --memory-limit) and runs no task on it until it is below."""
    return bool(found) and all(w.get("status") == "paused" for w in found.values())


def watched(client: Any, work: Any, what: str) -> Any:
    """Run `work` (a stage's tasks on the cluster) while checking that every worker it started
    with is alive: a lost worker leaves its peers waiting in a collective, so the stage fails
    instead (ClusterError), before anything downstream runs. Every `RELEASE_SECONDS` the
    workers hand freed memory back (`_release`); when every worker stays paused for lack of
    memory for `STALLED_SECONDS` all the same, no task would run again: the stage fails
    (ClusterError) rather than wait for ever."""
    started = workers(client)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"mlgate-dask-{what}", daemon=True)
    thread.start()
    released = time.monotonic()
    paused_since: float | None = None
    while thread.is_alive():
        thread.join(POLL_SECONDS)
        if not thread.is_alive():
            break
        found = _identities(client)
        lost = started - set(found)
        if lost:
            raise _worker_lost(lost, what)
        now = time.monotonic()
        if not _all_paused(found):
            paused_since = None
        elif paused_since is None:
            paused_since = now
        elif now - paused_since >= STALLED_SECONDS:
            raise _stalled(what, now - paused_since)
        if now - released >= RELEASE_SECONDS:
            _release(client)
            released = time.monotonic()
    if "error" in box:
        error = box["error"]
        # The work may fail before a poll sees the loss: xgboost.dask refuses a task that Dask
        # re-ran on another worker ("Invalid worker address ... Resilience is not yet
        # supported"), and the nanny may have restarted the worker under a new address.
        try:
            lost = started - workers(client)
        except Exception:  # the scheduler is gone too: the cluster failed
            lost = set()
        if lost:
            raise _worker_lost(lost, what) from error
        if (
            isinstance(error, (OSError, TimeoutError))
            or type(error).__name__ in {"KilledWorker", "CommClosedError", "FutureCancelledError"}
            or "workers died" in str(error)  # xgboost.dask, when the address check above missed
        ):
            raise ClusterError(
                f"the Dask cluster failed during {what}: {type(error).__name__}: {error}",
                fix="re-run the job; check the workers' logs and memory limits",
            ) from error
        raise error
    return box["result"]


def _release(client: Any) -> None:
    """`shards.release_memory` on every worker, outside their tasks (`Client.run` reaches a
    paused worker too): a worker whose process memory stays above Dask's pause threshold
    after a task, with nothing it can spill, would otherwise run no task again. Best effort:
    a worker that does not answer is the watch's business."""
    try:
        client.run(shards.release_memory, on_error="ignore")
    except Exception:  # a failing worker is seen by the watch above
        pass


def _stalled(what: str, seconds: float) -> ClusterError:
    return ClusterError(
        f"every Dask worker has been paused for lack of memory for {seconds:.0f} s during "
        f"{what}, though they were asked to hand freed memory back: the stage would never end",
        fix="give the workers more memory (dask worker --memory-limit) or write the version "
        "as smaller shards (docs/dask.md, Known limits). Nothing was registered",
    )


def _worker_lost(lost: set[str], what: str) -> ClusterError:
    disk = (
        "; a worker whose local directory fills up while XGBoost writes its external-memory "
        "pages aborts ('FileStream.Write incomplete' in its log): give it more room"
        if what == "training"
        else ""
    )
    return ClusterError(
        f"Dask worker {', '.join(sorted(lost))} was lost during {what}",
        fix="re-run the job; if workers keep dying, give them more memory "
        f"(dask worker --memory-limit) or the cluster more workers{disk}. Nothing was "
        "registered",
    )


def score(client: Any, booster: Any, features: pd.DataFrame, what: str) -> np.ndarray:
    """`booster`'s probability per row of `features` (already conformed to the model), scored
    on the workers in partitions: a float32 array in the frame's order (what XGBoost predicts,
    so nothing is rounded)."""
    import dask.dataframe as dd

    # XGBoost compares feature values as float32: casting float64 columns first predicts the
    # same and ships half the bytes to the workers
    wide = [c for c in features.columns if features[c].dtype == np.float64]
    if wide:
        features = features.astype(dict.fromkeys(wide, np.float32))
    count = max(1, len(workers(client)))
    frame = dd.from_pandas(  # type: ignore[no-untyped-call]
        features, npartitions=min(2 * count, max(1, len(features))), sort=False
    )
    scores: np.ndarray = predict(client, [booster], frame, what)[0]
    return scores


def predict(
    client: Any, boosters: Sequence[Any], frame: Any, what: str, label: str | None = None
) -> np.ndarray:
    """Each booster's probability for every row of the dask DataFrame `frame`, its partitions
    scored in parallel where they lie (`Booster.inplace_predict` per partition, the boosters
    sent to each worker once), gathered in the frame's order as one float32 array of shape
    (len(boosters), rows); with `label`, that column (not a feature) is the last row of the
    array. Only these arrays reach the runner: no pandas objects, no feature values."""
    from distributed import wait

    def work() -> np.ndarray:
        models = client.scatter([list(boosters)], broadcast=True)[0]
        parts = client.compute(frame.to_delayed())
        scored = client.map(_predict_part, parts, models=models, label=label, pure=False)
        wait(scored)  # type: ignore[no-untyped-call]
        pieces = client.gather(scored)
        if not pieces:
            return np.empty((len(boosters) + (label is not None), 0), dtype=np.float32)
        return np.concatenate(pieces, axis=1)

    result: np.ndarray = watched(client, work, what)
    return result


def _predict_part(part: pd.DataFrame, models: Sequence[Any], label: str | None) -> np.ndarray:
    """One partition's scores (on a worker): a row per booster, then the label's when asked."""
    features = part.drop(columns=[label]) if label is not None else part
    rows = [np.asarray(m.inplace_predict(features), dtype=np.float32).reshape(-1) for m in models]
    if label is not None:
        rows.append(part[label].to_numpy(dtype=np.float32))
    out = np.empty((len(rows), len(part)), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i] = row
    return out


# ---- The runner never holds the data (issue 21): the version typed, split and summarized on
# ---- the workers; only counts, samples, hashes, scores and labels come back.

SAMPLE_ROWS = 100  # a part's first rows in its schema sample (train.schema_sample)


def prepared(client: Any, located: Shards, rule: Rule) -> Any:  # -> dask DataFrame
    """The version's shards read on the workers (`shards.frame`), typed as the schema coerced
    them (`rule.dtypes`), each row's part added by `rule` (the PART column). Lazy, never
    persisted: each step that goes over it (`survey`, `scored`, `holdout_facts`,
    `score_holdout`) reads every shard again, one partition at a time on each worker, and keeps
    only what it returns, so a version larger than the cluster's memory goes through."""
    frame = shards.frame(client, located)
    wanted = {k: v for k, v in rule.dtypes.items() if k in frame.columns}
    if wanted:
        frame = frame.astype(wanted)
    parts = frame.map_partitions(_rule_part, rule, meta=(PART, "int8"))
    return frame.assign(**{PART: parts})


def _rule_part(part: pd.DataFrame, rule: Rule) -> pd.Series:
    return pd.Series(rule.parts(part), index=part.index, name=PART, dtype="int8")


@dataclass(frozen=True)
class Survey:
    """What training needs of the whole version besides the model, from the workers."""

    columns: list[str]
    rows: dict[int, int]  # per part
    classes: dict[int, dict[Any, int]]  # the target's value counts, per part
    categories: dict[str, list[str]]  # each categorical feature's categories (text, sorted)
    samples: dict[int, pd.DataFrame]  # per part: the rows train.schema_sample takes of it
    hashes: np.ndarray  # the holdout rows' hashes (holdout.row_hashes), uint64
    fingerprints: dict[int, str]  # per part: an order-free fingerprint of its rows
    # per partition, as pandas holds it (`memory_usage(deep=True)`): its train and validation
    # rows, and the whole partition (what `plan_training` weighs)
    held: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def footprint(self, features: int) -> Footprint:
        return Footprint(
            rows=self.rows[TRAIN] + self.rows[VALIDATION],
            features=features,
            held=self.held,
            largest=max(self.sizes, default=0),
        )

    def class_counts(self) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for part in self.classes.values():
            for label, n in part.items():
                counts[label] = counts.get(label, 0) + n
        return counts


def survey(
    client: Any, data: Any, target: str, categorical: Sequence[str], what: str = "the split"
) -> Survey:
    """Each part's rows, classes, schema sample and fingerprint, the categorical features'
    categories and the holdout's row hashes, reduced from every partition of `data`
    (`prepared`): a few bytes a holdout row and a few hundred rows reach the runner."""
    pieces = _each_part(client, data, _survey_part, what, target=target, categorical=categorical)
    codes = (TRAIN, VALIDATION, HOLDOUT)
    rows = {c: sum(p["rows"][c] for p in pieces) for c in codes}
    classes: dict[int, dict[Any, int]] = {c: {} for c in codes}
    sums = {c: [0, 0] for c in codes}
    for piece in pieces:
        for c in codes:
            for label, n in piece["classes"][c].items():
                classes[c][label] = classes[c].get(label, 0) + n
            total, xor = piece["sums"][c]
            sums[c] = [(sums[c][0] + total) % 2**64, sums[c][1] ^ xor]
    samples = {}
    for c in codes:
        sample = pd.concat([p["samples"][c] for p in pieces], ignore_index=True)
        wanted = {k: "category" for k in categorical if k in sample.columns}
        samples[c] = sample.astype(wanted) if wanted else sample  # categories differ by part
    categories: dict[str, set[str]] = {}
    for piece in pieces:
        for column, values in piece["categories"].items():
            categories.setdefault(column, set()).update(values)
    hashes = [p["hashes"] for p in pieces]
    return Survey(
        columns=[str(c) for c in data.columns if c != PART],
        rows=rows,
        classes=classes,
        categories={k: sorted(v) for k, v in categories.items()},
        samples=samples,
        hashes=np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64),
        fingerprints={c: f"{rows[c]}:{sums[c][0]:016x}:{sums[c][1]:016x}" for c in codes},
        held=tuple(p["held"] for p in pieces),
        sizes=tuple(p["size"] for p in pieces),
    )


def _survey_part(part: pd.DataFrame, target: str, categorical: Sequence[str]) -> dict[str, Any]:
    codes = part[PART].to_numpy()
    data = part.drop(columns=[PART])
    hashed = row_hashes(data)
    out: dict[str, Any] = {"rows": {}, "classes": {}, "samples": {}, "sums": {}, "held": 0}
    out["size"] = int(data.memory_usage(deep=True).sum())
    for code in (TRAIN, VALIDATION, HOLDOUT):
        keep = codes == code
        rows = data[keep]
        out["rows"][code] = int(keep.sum())
        counts = rows[target].value_counts(dropna=True) if target in rows.columns else {}
        out["classes"][code] = {k: int(v) for k, v in dict(counts).items()}
        missing = rows.isna().to_numpy()
        firsts = missing.argmax(axis=0)[missing.any(axis=0)].tolist() if len(rows) else []
        out["samples"][code] = rows.iloc[sorted({*range(min(SAMPLE_ROWS, len(rows))), *firsts})]
        mine = hashed[keep]
        xor = int(np.bitwise_xor.reduce(mine)) if len(mine) else 0
        out["sums"][code] = (int(mine.sum(dtype=np.uint64)), xor)
        if code != HOLDOUT:
            out["held"] += int(rows.memory_usage(deep=True).sum())
    out["hashes"] = hashed[codes == HOLDOUT]
    out["categories"] = {
        str(c): set(data[c].dropna().astype(str).unique().tolist())
        for c in categorical
        if c in data.columns
    }
    return out


@dataclass(frozen=True)
class Model:
    """A booster as its UBJ bytes: what is sent to the workers for scoring and waits in their
    memory. A `Booster` object waiting there may be spilled to disk and read back while the
    tasks use it (a worker near its memory limit spills), which left tasks holding a disposed
    booster ("Booster has not been initialized or has already been disposed"); bytes are
    loaded into a `Booster` by the worker's tasks themselves (`_loaded`, once per process)."""

    raw: bytes
    digest: str


def shipped(booster: Any) -> Model:
    raw = bytes(booster.save_raw("ubj"))
    return Model(raw, hashlib.sha256(raw).hexdigest())


_LOADED: dict[str, Any] = {}  # per worker process: the boosters of the last few Models
LOADED_MAX = 4


def _loaded(model: Any) -> Any:
    """The `Booster` of a `Model` (a booster given as such is returned as is)."""
    if not isinstance(model, Model):
        return model
    booster = _LOADED.get(model.digest)
    if booster is None:
        import xgboost as xgb

        booster = xgb.Booster(model_file=bytearray(model.raw))
        if len(_LOADED) >= LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[model.digest] = booster
    return booster


@dataclass(frozen=True)
class Scored:
    """A booster's validation and holdout scores, gathered from the workers."""

    validation: np.ndarray  # float32
    validation_y: np.ndarray  # 0/1
    holdout: np.ndarray  # float32, the holdout's rows in the version's order
    holdout_y: np.ndarray
    masks: dict[str, np.ndarray]  # each slice's holdout rows


def scored(
    client: Any,
    data: Any,
    booster: Any,
    settings: Settings,
    categories: Mapping[str, Sequence[str]],
) -> Scored:
    """`booster`'s probabilities (as `train.predict` gives them: a DMatrix of the encoded
    features) and the 0/1 labels of the validation and holdout rows of `data`, and the holdout
    rows' slice masks (metrics.slices), computed where the partitions lie."""

    def work() -> list[dict[int, Any]]:
        model = client.scatter([shipped(booster)], broadcast=True)[0]
        futures = on_partitions(
            client,
            data,
            _scored_part,
            booster=model,
            settings=settings,
            categories=dict(categories),
        )
        wait_for(futures)
        pieces: list[dict[int, Any]] = client.gather(futures)
        return pieces

    pieces = watched(client, work, "scoring the validation and holdout parts")

    def joined(code: int, i: int, dtype: Any) -> np.ndarray:
        arrays = [p[code][i] for p in pieces]
        return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)

    names = list(settings.metrics.slices)
    masks = joined(HOLDOUT, 2, bool) if names else np.empty((0, 0), dtype=bool)
    return Scored(
        validation=joined(VALIDATION, 0, np.float32),
        validation_y=joined(VALIDATION, 1, np.int8),
        holdout=joined(HOLDOUT, 0, np.float32),
        holdout_y=joined(HOLDOUT, 1, np.int8),
        masks={name: masks[:, i] for i, name in enumerate(names)} if names else {},
    )


def _scored_part(
    part: pd.DataFrame, booster: Any, settings: Settings, categories: Mapping[str, Sequence[str]]
) -> dict[int, Any]:
    import xgboost as xgb

    booster = _loaded(booster)

    codes = part[PART].to_numpy()
    out: dict[int, Any] = {}
    for code in (VALIDATION, HOLDOUT):
        rows = part[codes == code].drop(columns=[PART])
        features = features_of(rows, settings)
        types = feature_types(features, categories)
        if len(rows):
            matrix = xgb.DMatrix(
                encode(features, categories),
                feature_types=types,
                enable_categorical=types is not None,
            )
            proba = np.asarray(booster.predict(matrix), dtype=np.float32)
        else:
            proba = np.empty(0, dtype=np.float32)
        y = np.asarray(part_labels_of(rows, settings), dtype=np.int8)
        masks = _masks(rows, settings.metrics.slices)
        out[code] = (proba, y, masks)
    return out


def _masks(rows: pd.DataFrame, slices: Mapping[str, str]) -> np.ndarray:
    """The slices' row masks, one column per slice (the queries were checked on a sample)."""
    if not slices:
        return np.empty((len(rows), 0), dtype=bool)
    columns = [np.asarray(rows.eval(query), dtype=bool).reshape(-1) for query in slices.values()]
    if not len(rows):
        return np.empty((0, len(columns)), dtype=bool)
    return np.stack(columns, axis=1)


def _each_part(client: Any, data: Any, function: Any, what: str, **kwargs: Any) -> list[Any]:
    """`function(partition, **kwargs)` on every partition of `data` where it lies; the results
    in the partitions' order."""

    def work() -> list[Any]:
        futures = on_partitions(client, data, function, **kwargs)
        wait_for(futures)
        pieces: list[Any] = client.gather(futures)
        return pieces

    result: list[Any] = watched(client, work, what)
    return result


def on_partitions(client: Any, data: Any, function: Any, **kwargs: Any) -> list[Any]:
    """Futures of `function(partition, **kwargs)`, one per partition of `data`, each a task of
    the graph that reads (and types and splits) its partition: the client holds only the
    results, so a partition is dropped once its function has run and a worker never holds more
    than the partitions it works on (the version may be larger than the cluster's memory).
    Futures in `kwargs` (a scattered booster) are passed as their values."""
    from dask.delayed import delayed

    call = delayed(shards.released, pure=False)
    futures: list[Any] = client.compute(
        [call(part, function, kwargs) for part in data.to_delayed()]
    )
    return futures


def wait_for(futures: Any, first_error: bool = False) -> None:
    """Until every future is done (`first_error`: or one has failed, whose error is raised)."""
    from distributed import wait

    if not first_error:
        wait(futures)  # type: ignore[no-untyped-call]
        return
    pending = list(futures)
    while pending:
        done, left = wait(pending, return_when="FIRST_COMPLETED")  # type: ignore[no-untyped-call]
        for future in done:
            if future.status == "error":
                future.result()  # raises the task's error
        pending = list(left)


def holdout_facts(
    client: Any, data: Any, settings: Settings, fairness: str | None, head: int
) -> list[dict[str, Any]]:
    """What the gate needs of the holdout rows of `data` (`prepared`) besides the scores, per
    partition: their hashes (the digest), 0/1 labels, distinct labels, slice masks, the
    fairness column's values, and the first `head` rows (the latency check's rows)."""
    pieces: list[dict[str, Any]] = _each_part(
        client,
        data,
        _holdout_part,
        "rebuilding the holdout",
        settings=settings,
        fairness=fairness,
        head=head,
    )
    return pieces


def _holdout_part(
    part: pd.DataFrame, settings: Settings, fairness: str | None, head: int
) -> dict[str, Any]:
    rows = part[part[PART].to_numpy() == HOLDOUT].drop(columns=[PART])
    target = settings.data.target
    return {
        "hashes": row_hashes(rows),
        "y": np.asarray(part_labels_of(rows, settings), dtype=np.int8),
        "labels": pd.unique(rows[target].dropna()).tolist() if target in rows.columns else [],
        "masks": _masks(rows, settings.metrics.slices),
        "fairness": (
            rows[fairness].to_numpy(dtype=object) if fairness and fairness in rows.columns else None
        ),
        "head": rows.iloc[:head],
    }


def score_holdout(
    client: Any,
    data: Any,
    booster: Any,
    settings: Settings,
    recorded: Mapping[str, Sequence[str]],
    doubles: Sequence[str],
    what: str,
) -> np.ndarray:
    """`booster`'s probability for each holdout row of `data` (`prepared`), scored where the
    partitions lie, the features conformed as `train.conform` conforms them to a logged model
    (`recorded`: its categories; `doubles`: the inputs its signature declares double)."""

    def work() -> np.ndarray:
        model = client.scatter([shipped(booster)], broadcast=True)[0]
        futures = on_partitions(
            client,
            data,
            _score_holdout_part,
            booster=model,
            settings=settings,
            recorded=dict(recorded),
            doubles=list(doubles),
        )
        wait_for(futures)
        pieces = client.gather(futures)
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.float32)

    result: np.ndarray = watched(client, work, what)
    return result


def _score_holdout_part(
    part: pd.DataFrame,
    booster: Any,
    settings: Settings,
    recorded: Mapping[str, Sequence[str]],
    doubles: Sequence[str],
) -> np.ndarray:
    rows = part[part[PART].to_numpy() == HOLDOUT].drop(columns=[PART])
    if not len(rows):
        return np.empty(0, dtype=np.float32)
    booster = _loaded(booster)
    features = encode(features_of(rows, settings), recorded)
    wanted = [d for d in doubles if d in features.columns]
    if wanted:
        features = features.astype(dict.fromkeys(wanted, "float64"))
    return np.asarray(booster.inplace_predict(features), dtype=np.float32).reshape(-1)


# ---- A local-engine model evaluated on the workers (issue 21): its split manifest is the
# ---- holdout's key list and `split.frame_digest` over the frame as `data.load_frame` reads it.


def _load_order(located: Shards) -> Shards:
    """The shards in the order `data.load_frame` concatenates a directory's files: by path
    (its parts), hidden files skipped."""
    from dataclasses import replace
    from pathlib import PurePosixPath

    kept = [s for s in located.shards if not PurePosixPath(s.relpath).name.startswith(".")]
    ordered = sorted(kept or located.shards, key=lambda s: PurePosixPath(s.relpath).parts)
    return replace(located, shards=tuple(ordered))


def as_read(client: Any, located: Shards) -> tuple[Any, int]:  # -> (dask DataFrame, rows)
    """The version as `data.load_frame` reads it on the runner, without reading it there: its
    shards in that order, each partition typed as pandas' concatenation of all of them types
    it, and indexed by its rows' positions in that frame; held by the workers. And its rows.

    The common dtypes come from one representative row per shard (each column's first
    non-missing value, else a missing one; none for an empty shard): pandas resolves a
    concatenation's dtypes from the parts' dtypes, emptiness and all-missing columns alone,
    so the representatives resolve as the shards do."""
    import warnings

    import dask.dataframe as dd

    with _pandas_dtypes():
        raw = shards.frame(client, _load_order(located))

    def work() -> tuple[list[Any], list[tuple[int, pd.DataFrame]]]:
        parts = client.compute(raw.to_delayed())
        firsts = client.map(_representative, parts, pure=False)
        wait_for(firsts)
        gathered: list[tuple[int, pd.DataFrame]] = client.gather(firsts)
        return parts, gathered

    parts, firsts = watched(client, work, "reading the shards")
    counts = [n for n, _ in firsts]
    with warnings.catch_warnings():  # pandas' notice on all-missing parts: the same as the runner's
        warnings.simplefilter("ignore", FutureWarning)
        meta = pd.concat([f for _, f in firsts], ignore_index=True).iloc[:0]
    dtypes = {str(k): v for k, v in meta.dtypes.items()}
    offsets = np.cumsum([0, *counts[:-1]]).tolist() if counts else []
    typed = client.map(_as_read_part, parts, offsets, dtypes=dtypes, pure=False)
    with _pandas_dtypes():
        frame = dd.from_delayed(typed, meta=meta, verify_meta=False)
    return frame, sum(counts)


def _pandas_dtypes() -> Any:
    """Dask's own conversion of text columns to pyarrow strings (`dataframe.convert-string`,
    decided when a collection is built) turned off: the partitions keep the dtypes pandas
    reads, which `split.frame_digest` hashes and `data.load_frame` gives on the runner."""
    import dask

    return dask.config.set({"dataframe.convert-string": False})


def _representative(part: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    if not len(part):
        return 0, part.iloc[:0]
    columns = {}
    for name in part.columns:
        column = part[name]
        present = column.notna().to_numpy()
        at = int(present.argmax()) if present.any() else 0
        columns[name] = column.iloc[at : at + 1].reset_index(drop=True)
    return len(part), pd.DataFrame(columns)


def _as_read_part(part: pd.DataFrame, offset: int, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    changed = {c: t for c, t in dtypes.items() if c in part.columns and part[c].dtype != t}
    typed = part.astype(changed) if changed else part
    return typed.set_axis(pd.RangeIndex(offset, offset + len(typed)), axis=0)


def keyed_holdout(
    client: Any,
    frame: Any,
    keys: Sequence[Any],
    settings: Settings,
    fairness: str | None,
    head: int,
) -> tuple[Any, list[dict[str, Any]]]:
    """The holdout named by a key list (the id column's values, else row positions) in `frame`
    (`as_read`): the frame with the PART column (HOLDOUT for those rows), held by the workers,
    and per partition what the gate needs of its holdout rows (`_keyed_facts`). The key list
    goes to every worker once."""
    import dask.dataframe as dd

    id_column = settings.data.id_column

    def work() -> tuple[Any, list[dict[str, Any]]]:
        wanted = client.scatter([pd.Index(list(keys))], broadcast=True)[0]
        parts = client.compute(frame.to_delayed())
        marked = client.map(_keyed_part, parts, keys=wanted, id_column=id_column, pure=False)
        facts = client.map(
            _keyed_facts,
            marked,
            keys=wanted,
            settings=settings,
            fairness=fairness,
            head=head,
            pure=False,
        )
        wait_for(facts)
        pieces: list[dict[str, Any]] = client.gather(facts)
        meta = frame._meta.assign(**{PART: np.int8(0)})
        with _pandas_dtypes():
            marked_frame = dd.from_delayed(marked, meta=meta, verify_meta=False)
        return marked_frame, pieces

    result: tuple[Any, list[dict[str, Any]]] = watched(client, work, "rebuilding the holdout")
    return result


def _key_positions(rows: pd.DataFrame, keys: pd.Index, id_column: str | None) -> np.ndarray:
    """Each row's place in the key list (-1: not in it), as `split.holdout_from_keys` finds
    them: by the id column's value, else by the row's position (`rows.index`)."""
    named = pd.Index(rows[id_column]) if id_column else rows.index
    found: np.ndarray = keys.get_indexer(named)
    return found


def _keyed_part(part: pd.DataFrame, keys: pd.Index, id_column: str | None) -> pd.DataFrame:
    held = _key_positions(part, keys, id_column) >= 0
    return part.assign(**{PART: np.where(held, HOLDOUT, TRAIN).astype("int8")})


def _keyed_facts(
    part: pd.DataFrame, keys: pd.Index, settings: Settings, fairness: str | None, head: int
) -> dict[str, Any]:
    """`_holdout_part`'s facts of a keyed holdout's rows (in the partition's order, which
    `score_holdout` keeps), with each row's place in the key list and its
    `hash_pandas_object(index=True)`: `split.frame_digest`'s row hashes, its index being the
    row's position in the whole frame."""
    rows = part[part[PART].to_numpy() == HOLDOUT].drop(columns=[PART])
    at = _key_positions(rows, keys, settings.data.id_column)
    target = settings.data.target
    return {
        "at": at,
        "hashes": pd.util.hash_pandas_object(rows, index=True).to_numpy(dtype=np.uint64),
        "y": np.asarray(part_labels_of(rows, settings), dtype=np.int8),
        "labels": pd.unique(rows[target].dropna()).tolist() if target in rows.columns else [],
        "masks": _masks(rows, settings.metrics.slices),
        "fairness": (
            rows[fairness].to_numpy(dtype=object) if fairness and fairness in rows.columns else None
        ),
        "head": rows[at < head],
    }


# ---- evidently's drift report with the dask engine: a bounded, deterministic sample.

DRIFT_SEED = 0x6D6C67617465  # the drift sample's row-hash seed ("mlgate"), not split.seed's


def drift_sample(
    client: Any, frame: Any, columns: Sequence[str], rows: int, target: str
) -> tuple[pd.DataFrame, int]:
    """At most `rows` rows of `frame` (columns `columns`) and its row count: the rows whose
    seeded hash of their values (`frames.row_hash`, DRIFT_SEED) is among the `rows` smallest,
    drawn on the workers in two passes (each partition's smallest hashes, then the rows at or
    below the runner's cut), sorted by that hash. The same rows whatever the partitioning and
    on every re-run; rows of equal hash are equal rows, so a tie changes no value."""
    smallest = _each_part(
        client, frame, _smallest, "drawing the drift sample", columns=list(columns), rows=rows
    )
    total = sum(n for n, _ in smallest)
    hashes = [h for _, h in smallest]
    pooled = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    if len(pooled) <= rows:
        cut = np.uint64(np.iinfo(np.uint64).max)
    else:
        cut = np.partition(pooled, rows - 1)[rows - 1]
    pieces = _each_part(
        client, frame, _at_most, "drawing the drift sample", columns=list(columns), cut=int(cut)
    )
    kept = [p for p in pieces if len(p)] or pieces[:1]
    sample = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(columns))
    if _HASH in sample.columns:
        sample = sample.sort_values(_HASH, kind="stable").iloc[:rows].drop(columns=[_HASH])
    return sample.reset_index(drop=True), total


_HASH = "__mlgate_drift_hash__"


def _drift_hashes(part: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    hashed: np.ndarray = row_hash(part[list(columns)], target="", seed=DRIFT_SEED, id_column=None)
    return hashed


def _smallest(part: pd.DataFrame, columns: Sequence[str], rows: int) -> tuple[int, np.ndarray]:
    hashed = _drift_hashes(part, columns)
    if len(hashed) > rows:
        hashed = np.partition(hashed, rows - 1)[:rows]
    return len(part), hashed


def _at_most(part: pd.DataFrame, columns: Sequence[str], cut: int) -> pd.DataFrame:
    hashed = _drift_hashes(part, columns)
    keep = hashed <= np.uint64(cut)
    return part.loc[keep, list(columns)].assign(**{_HASH: hashed[keep]})
