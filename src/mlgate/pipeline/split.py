"""Deterministic train / validation / holdout split, stable across data versions.

Each row's part is decided by a seeded hash of its key (the id column, else its feature
values), never by its position. So a row keeps its part in every data version: a row in today's
holdout was never in an earlier model's training set, and a champion is not flattered by being
scored on rows it learned from. Exact duplicates always share a part. The hash is uniform within
each class, so the split is stratified in expectation; every part must still hold both classes.

The holdout must be reproducible later (evaluation scores champion and candidate on the same
rows), so training logs the split's seed and fractions, the holdout's row keys and its digest.
`holdout_from_keys` rebuilds it from the same data version and checks the digest. `row_hash`
lives in `frames` (the Dask workers import it there) and is re-exported here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mlgate.errors import DataError
from mlgate.pipeline.frames import BUCKETS as BUCKETS  # noqa: PLC0414
from mlgate.pipeline.frames import row_hash as row_hash  # noqa: PLC0414


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    @cached_property
    def holdout_digest(self) -> str:  # logged twice: the tag and the split manifest
        return frame_digest(self.holdout)


def split_frame(
    frame: pd.DataFrame,
    *,
    target: str,
    seed: int,
    validation_fraction: float,
    holdout_fraction: float,
    id_column: str | None = None,
) -> Split:
    """Assign each row by the seeded hash of its key: holdout, then validation, then train."""
    position = row_hash(frame, target=target, seed=seed, id_column=id_column) % BUCKETS / BUCKETS
    # each row's part as 0 holdout, 1 validation, 2 train; each part taken once by its rows'
    # positions (boolean masks cost a pass per mask and part)
    part = (position >= holdout_fraction).view(np.uint8) + (
        position >= holdout_fraction + validation_fraction
    ).view(np.uint8)
    split = Split(
        train=frame.take(np.flatnonzero(part == 2)),
        validation=frame.take(np.flatnonzero(part == 1)),
        holdout=frame.take(np.flatnonzero(part == 0)),
    )
    for name, part in (
        ("train", split.train),
        ("validation", split.validation),
        ("holdout", split.holdout),
    ):
        if part[target].nunique() < 2:
            raise DataError(
                f"the {name} part of the split holds {len(part)} rows and not both classes",
                fix="add rows of the rarer class, or raise "
                "split.holdout_fraction / split.validation_fraction",
            )
    return split


def row_keys(frame: pd.DataFrame, id_column: str | None) -> list[Any]:
    """How a row is named in the logged split: its id column, else its row position."""
    return frame[id_column].tolist() if id_column else [int(i) for i in frame.index]


def holdout_from_keys(
    frame: pd.DataFrame, keys: list[Any], *, id_column: str | None, digest: str
) -> pd.DataFrame:
    """Rebuild the logged holdout from the same data version, refusing one that differs."""
    fix = "evaluate against the data version the model was trained on (mlgate.data.md5)"
    if id_column:
        positions = pd.Index(frame[id_column]).get_indexer(keys)
        if (positions < 0).any():
            raise DataError("holdout rows logged at training are missing from the data", fix=fix)
        holdout = frame.iloc[positions]
    else:
        try:
            holdout = frame.loc[keys]
        except KeyError as exc:
            raise DataError(
                "holdout rows logged at training are missing from the data", fix=fix
            ) from exc
    if frame_digest(holdout) != digest:
        raise DataError("the rebuilt holdout does not match the digest logged at training", fix=fix)
    return holdout


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 over the rows' values and positions, independent of pandas' memory layout."""
    return rows_digest(frame.columns, pd.util.hash_pandas_object(frame, index=True).to_numpy())


def rows_digest(columns: Any, hashed: np.ndarray) -> str:
    """`frame_digest` from its parts: the column names and each row's
    `hash_pandas_object(index=True)`, in the holdout's order. Each row's hash depends only on
    its values, dtypes and index label, so the Dask workers hash their rows where they lie and
    the runner digests them in the key list's order (`onworkers.keyed_holdout_on_workers`)."""
    names = ",".join(map(str, columns)).encode()
    return hashlib.sha256(names + np.asarray(hashed, dtype=np.uint64).tobytes()).hexdigest()
