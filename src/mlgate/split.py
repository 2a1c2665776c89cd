"""Deterministic, stratified train / validation / holdout split.

The holdout must be reproducible later (evaluation scores champion and candidate on the same
rows), so training logs the split's seed and fractions, the holdout's row keys and its digest.
`holdout_from_keys` rebuilds it from the same data version and checks the digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from mlgate.errors import DataError


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    @property
    def holdout_digest(self) -> str:
        return frame_digest(self.holdout)


def split_frame(frame: pd.DataFrame, *, target: str, seed: int, validation_fraction: float,
                holdout_fraction: float) -> Split:
    """Holdout first, then validation from the rest, both stratified on the target."""
    rest, holdout = train_test_split(frame, test_size=holdout_fraction, random_state=seed,
                                     stratify=frame[target])
    relative = validation_fraction / (1.0 - holdout_fraction)
    train, validation = train_test_split(rest, test_size=relative, random_state=seed,
                                         stratify=rest[target])
    return Split(train=train, validation=validation, holdout=holdout)


def row_keys(frame: pd.DataFrame, id_column: str | None) -> list:
    """How a row is named in the logged split: its id column, else its row position."""
    return frame[id_column].tolist() if id_column else [int(i) for i in frame.index]


def holdout_from_keys(frame: pd.DataFrame, keys: list, *, id_column: str | None,
                      digest: str) -> pd.DataFrame:
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
            raise DataError("holdout rows logged at training are missing from the data",
                            fix=fix) from exc
    if frame_digest(holdout) != digest:
        raise DataError("the rebuilt holdout does not match the digest logged at training",
                        fix=fix)
    return holdout


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 over the rows' values and positions, independent of pandas' memory layout."""
    hashed = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    columns = ",".join(map(str, frame.columns)).encode()
    return hashlib.sha256(columns + hashed.tobytes()).hexdigest()
