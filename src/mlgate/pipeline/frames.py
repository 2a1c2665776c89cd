"""The partition functions the Dask workers run, in a module that imports only numpy and pandas
(and mlgate's settings and errors): a worker's first task imports this, not the training stage
with MLflow and pandera (issue 21). The training stage and the cluster both use these functions,
so a partition is encoded, labelled and hashed the same way on the runner and on a worker.
`tests/unit/test_contracts.py` checks that importing this module loads no training library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlgate.pipeline.data import binary_labels, part_labels
from mlgate.pipeline.pyfunc import encode as _encode

BUCKETS = 1_000_000  # a row's split position is its hash modulo this, over this


def features_of(frame: pd.DataFrame, settings: Any, *, view: bool = False) -> pd.DataFrame:
    """The model's inputs: integer columns stay int64 and booleans bool (the signature then
    declares long and boolean, so `mlflow.pyfunc` takes integer-coded data as it is, and
    refuses a fractional value sent to an integer column instead of truncating it); every
    other column is float64 (double). A frame of its own; `view=True` (for a reader only,
    such as a DMatrix): a column whose type stays is `frame`'s own array, not a copy
    (`columns_of`), so nothing may write to it."""
    drop = [settings.data.target] + ([settings.data.id_column] if settings.data.id_column else [])
    if not view:
        features = frame.drop(columns=[c for c in drop if c in frame.columns])
        dtypes = {column: _feature_dtype(features[column]) for column in features}
        return features.astype({column: dtype for column, dtype in dtypes.items() if dtype})
    features = columns_of(frame, [c for c in frame.columns if c not in drop])
    dtypes = {column: _feature_dtype(features[column]) for column in features}
    cast = {c: dtype for c, dtype in dtypes.items() if dtype and features[c].dtype != dtype}
    # only the columns whose type changes are converted (a float64 column stays the same array)
    return features.astype(cast, copy=False) if cast else features


def columns_of(frame: pd.DataFrame, columns: Sequence[Any]) -> pd.DataFrame:
    """`frame[columns]` without copying the values (pandas copies a selection of columns
    out of its 2-D block: 400 MB for 1,000,000 x 50): a frame of the same column objects,
    each column an array of `frame`'s. Not to be written to. With repeated column names,
    pandas' own copy."""
    if frame.columns.is_unique and len(columns):
        return pd.DataFrame({column: frame[column] for column in columns}, copy=False)
    return frame[list(columns)]


def _feature_dtype(column: pd.Series) -> str | None:
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype):
        return None  # categorical (or refused by validate): encoded by `encode`
    if pd.api.types.is_string_dtype(dtype):
        return None
    if pd.api.types.is_bool_dtype(dtype) and not column.isna().any():
        return "bool"
    if isinstance(dtype, np.dtype) and (
        dtype.kind == "i" or (dtype.kind == "u" and dtype.itemsize < 8)
    ):
        return "int64"
    return "float64"  # floats, nullable integers (NaN is missing), uint64


def encode(features: pd.DataFrame, categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Categorical columns as float64 codes into their recorded categories; a missing value,
    and a category the model never saw, become NaN: XGBoost's missing value, which follows
    each split's default branch (an unseen category is scored as missing). One rule for
    training, evaluation and the logged model's pyfunc flavour (`mlgate.pipeline.pyfunc`)."""
    return _encode(features, categories)


def feature_types(
    features: pd.DataFrame, categories: Mapping[str, Sequence[str]]
) -> list[str] | None:
    """XGBoost's feature_types: 'c' for the categorical features, None when there is none."""
    if not categories:
        return None
    return [
        "c"
        if column in categories
        else "i"
        if pd.api.types.is_bool_dtype(features[column])
        else "int"
        if pd.api.types.is_integer_dtype(features[column])
        else "float"
        for column in features
    ]


def labels_of(frame: pd.DataFrame, settings: Any) -> np.ndarray:
    """The target as 0/1, 1 for data.positive_class (validate has checked the contract)."""
    target = settings.data.target
    return binary_labels(frame[target], settings.data.positive_class, target)


def part_labels_of(frame: pd.DataFrame, settings: Any) -> np.ndarray:
    """`labels_of` a part of a version (a Dask partition's rows of one part of the split),
    which may hold one class of the two or no row (`data.part_labels`)."""
    target = settings.data.target
    return part_labels(frame[target], settings.data.positive_class, target)


def row_hash(frame: pd.DataFrame, *, target: str, seed: int, id_column: str | None) -> np.ndarray:
    """A seeded 64-bit hash of each row's key: its id, else its values without the label (a
    corrected label keeps the row in its part)."""
    keys = columns_of(
        frame, [id_column] if id_column else [c for c in frame.columns if c != target]
    )
    rows = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    # pandas only salts text with hash_key, so mix the seed in and hash once more
    salt = pd.util.hash_array(np.array([seed], dtype="uint64"))[0]
    hashed: np.ndarray = pd.util.hash_array(rows ^ salt)
    return hashed
