"""Validation partition by partition, on the Dask workers (train.engine: dask, issue 21).

Each partition of the data version's shards is validated where it lies with the same pandera
schema as on the runner (lazily: every failure). A worker sends back a `Summary` of its
partition, never its rows: for each failing (column, check) a count and the first cases (row
and value), plus the aggregates the checks that span partitions need (the label's classes and
their counts, missing labels, +inf, each feature's dtype). `mlgate.pipeline.validate` merges the
summaries into the one report the local engine writes for the same data.

A row number is the row's place in the whole version (the shards in manifest order): a worker
numbers its partition's rows from 0 and the runner adds the lengths of the partitions before it.
A column declared `unique: true` is checked across partitions: the values seen more than once
are found first (`dask`'s value counts, reduced on the workers), then each partition reports
its rows holding one, as pandera reports a duplicate (every occurrence).

This module imports numpy, pandas and pandera only (the workers import it for their task).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SAMPLES = 5
UNIQUE = "field_uniqueness"  # pandera's name for a column's `unique: true` check
SCHEMA_LEVEL = "DataFrameSchema"


def rank(
    context: str, column: str, check: str, number: Any, positions: Mapping[str, int]
) -> tuple[Any, ...]:
    """Where a failing (column, check) comes in the report: the schema-wide checks first (a
    column missing or unexpected), then, as pandera runs them, the coercions, then each column
    in the schema's order with its nullability, uniqueness, dtype and numbered checks. For a
    schema-wide check `column` is the column it names."""
    builtin = {"not_nullable": 0, UNIQUE: 1}.get(check, 2 if check.startswith("dtype(") else 3)
    numbered = (
        -1 if number is None or (isinstance(number, float) and math.isnan(number)) else number
    )
    return (
        0 if context == SCHEMA_LEVEL else 1,
        0 if check.startswith("coerce_dtype(") else 1,
        positions.get(column, len(positions)),
        builtin,
        int(numbered),
        check,
        column,
    )


def positions(schema: Any, columns: Sequence[Any]) -> dict[str, int]:
    """Each column's place: the schema's columns first, then the data's others."""
    names = [str(c) for c in schema.columns] + [str(c) for c in columns]
    return {name: i for i, name in reversed(list(enumerate(names)))}


def ordered(cases: pd.DataFrame, schema: Any, columns: Sequence[Any]) -> pd.DataFrame:
    """pandera's failure cases in one deterministic order, each schema-wide case under the
    column it names: by `rank`, then as pandera found them (the cases' index: pandera's own
    sort of them is not stable, so beyond 16 cases its order, and so the sample rows, would
    vary from run to run). Within a check the cases come in row order."""
    cases = cases.sort_index(kind="stable")
    schema_level = (cases["schema_context"] == SCHEMA_LEVEL).to_numpy()
    named = np.where(schema_level, cases["failure_case"], cases["column"])
    cases = cases.assign(column=named)
    where = positions(schema, columns)
    keys = [
        rank(str(ctx), str(col), str(chk), num, where)
        for ctx, col, chk, num in zip(
            cases["schema_context"], named, cases["check"], cases["check_number"], strict=True
        )
    ]
    order = sorted(range(len(cases)), key=lambda i: (keys[i], i))
    return cases.iloc[order]


@dataclass
class Failure:
    """One failing (column, check) in one partition."""

    rank: tuple[Any, ...]
    column: str
    check: str
    count: int = 0  # cases at a row
    rows: list[int] = field(default_factory=list)  # the first SAMPLES, partition-local
    values: list[str] = field(default_factory=list)  # their failure cases, repr
    general: list[str] = field(default_factory=list)  # cases at no row (a dtype), repr


@dataclass
class Contract:
    """What the contract checks need of a (raw or validated) partition."""

    single: bool  # the target is one column
    labels: list[Any]  # the target's distinct values, missing ones dropped, as first seen
    missing: int  # missing labels
    missing_rows: list[int]  # the first SAMPLES, partition-local
    features: list[tuple[str, bool, str, list[str]]]  # (column, usable, dtype, two values)


@dataclass
class Summary:
    """What a worker sends back for its partition."""

    rows: int
    columns: list[str]
    failures: list[Failure]
    errors: list[str]  # pandera's non-lazy failures (an empty partition)
    numeric: list[str]  # the numeric columns
    infinite: dict[str, tuple[int, list[str], list[int]]]  # column: count, values, rows
    classes: list[tuple[Any, int]] | None  # the target's value counts as first seen; None: absent
    raw: Contract  # the contract on the partition as read
    validated: Contract | None  # ... and as pandera coerced it (None: it failed)
    dtypes: dict[str, str] = field(default_factory=dict)  # as pandera coerced it ({}: failed)


@functools.lru_cache(maxsize=4)
def _schema(text: str, unique: tuple[str, ...]) -> Any:
    import pandera.pandas as pa

    schema = pa.DataFrameSchema.from_yaml(text)
    for column in unique:
        schema = schema.update_column(column, unique=False)
    return schema


def unique_columns(schema: Any) -> tuple[str, ...]:
    """The columns the schema declares `unique: true` (checked across partitions)."""
    return tuple(str(name) for name, column in schema.columns.items() if column.unique)


def summarize(
    part: pd.DataFrame,
    schema_text: str,
    target: str,
    id_column: str | None,
    duplicated: Mapping[str, Sequence[Any]],
) -> Summary:
    """Validate one partition (on a worker) and summarize it. `duplicated`: for each column
    declared unique, the values the whole version holds more than once. The memory the
    validation's copies held is handed back when it ends (`shards.release_memory`)."""
    from mlgate.pipeline.shards import release_memory

    try:
        return _summarize(part, schema_text, target, id_column, duplicated)
    finally:
        release_memory()


def _summarize(
    part: pd.DataFrame,
    schema_text: str,
    target: str,
    id_column: str | None,
    duplicated: Mapping[str, Sequence[Any]],
) -> Summary:
    import pandera.errors

    part = part.reset_index(drop=True)
    schema = _schema(schema_text, tuple(sorted(duplicated)))
    cases: list[pd.DataFrame] = []
    errors: list[str] = []
    validated: pd.DataFrame | None = None
    try:
        validated = schema.validate(part, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases.append(exc.failure_cases.sort_index(kind="stable"))  # as pandera found them
    except pandera.errors.SchemaError as exc:
        errors.append(str(exc).splitlines()[0])
    for column, values in duplicated.items():
        if column not in part.columns or not len(values):
            continue
        hit = part[column].isin(pd.Series(values, dtype=object))
        if hit.any():
            cases.append(
                pd.DataFrame(
                    {
                        "schema_context": "Column",
                        "column": column,
                        "check": UNIQUE,
                        "check_number": np.nan,
                        "failure_case": part[column][hit].to_numpy(dtype=object),
                        "index": part.index[hit],
                    }
                )
            )
    failures = _failures(pd.concat(cases, ignore_index=True), schema, part.columns) if cases else []
    return Summary(
        rows=len(part),
        columns=[str(c) for c in part.columns],
        failures=failures,
        errors=errors,
        numeric=[str(c) for c in part.select_dtypes("number").columns],
        infinite=infinite_of(part),
        classes=classes_of(part, target),
        raw=contract_of(part, target, id_column),
        validated=None if validated is None else contract_of(validated, target, id_column),
        dtypes={} if validated is None else {str(c): str(t) for c, t in validated.dtypes.items()},
    )


def infinite_of(frame: pd.DataFrame) -> dict[str, tuple[int, list[str], list[int]]]:
    """+inf and -inf per numeric column (pandera's range checks let +inf through; XGBoost
    refuses it): count, the first values and rows."""
    numeric = frame.select_dtypes("number")
    out = {}
    for column, count in np.isinf(numeric).sum().items():
        if count:
            bad = numeric[column][np.isinf(numeric[column])].head(SAMPLES)
            out[str(column)] = (int(count), [str(v) for v in bad], [int(r) for r in bad.index])
    return out


def classes_of(frame: pd.DataFrame, target: str) -> list[tuple[Any, int]] | None:
    """The target's value counts, missing values dropped, in the order first seen."""
    if target not in frame.columns:
        return None
    counts = frame[target].value_counts(dropna=True, sort=False)
    return [(k, int(v)) for k, v in counts.items()]


def _failures(cases: pd.DataFrame, schema: Any, columns: Sequence[Any]) -> list[Failure]:
    out: dict[tuple[str, str], Failure] = {}
    where = positions(schema, columns)
    for row in ordered(cases, schema, columns).itertuples(index=False):
        key = (str(row.column), str(row.check))
        failure = out.get(key)
        if failure is None:
            context = str(row.schema_context)
            failure = out[key] = Failure(
                rank(context, key[0], key[1], row.check_number, where), *key
            )
        index = row.index
        if index is None or (isinstance(index, float) and math.isnan(index)):
            failure.general.append(repr(row.failure_case))
        else:
            failure.count += 1
            if len(failure.rows) < SAMPLES:
                failure.rows.append(int(index))
                failure.values.append(repr(row.failure_case))
    return list(out.values())


def contract_of(frame: pd.DataFrame, target: str, id_column: str | None) -> Contract:
    single = bool((frame.columns == target).sum() == 1)
    labels: list[Any] = []
    missing = 0
    missing_rows: list[int] = []
    if single:
        column = frame[target]
        labels = list(pd.unique(column.dropna()))
        gaps = column.isna()
        missing = int(gaps.sum())
        missing_rows = [int(i) for i in frame.index[gaps][:SAMPLES]]
    ignored = {target, id_column}
    features = []
    for i, name in enumerate(frame.columns):
        if name in ignored:
            continue
        column = frame.iloc[:, i]
        usable = usable_feature(column)
        values = [] if usable else list(column.dropna().astype(str).unique()[:2])
        features.append((str(name), usable, str(column.dtype), values))
    return Contract(single, labels, missing, missing_rows, features)


def usable_feature(column: pd.Series) -> bool:
    """A feature XGBoost takes: numeric, boolean or declared categorical."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # declared categorical (dtype: category)
        return True
    return pd.api.types.is_bool_dtype(column) or (
        pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_complex_dtype(column)
    )
