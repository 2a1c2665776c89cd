"""Request data to the model's matrix, checked: the checks every request format shares.

A format (mlgate.serving.formats) turns a body into rows, columns or a flat tensor of JSON values
(or a numpy array, for binary tensors) and hands them to `Matrices.matrix`, which applies the
bundle's categorical encoding (mlgate.serving.bundle.encode_json) and refuses, with a 4xx that
names the fix, what the model cannot score: wrong, missing, repeated or non-string column names,
ragged rows, rows whose length differs from the named columns (never scored from shifted values),
non-numbers, nulls and NaN (unless serve.allow_missing), infinities, more rows than
serve.max_rows. The answer is a C-contiguous float64 array with the model's columns in its order.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlgate.serving.bundle import Bundle, CategoryError, encode_json

# A body this big, decoded by orjson into Python objects, holds the GIL for milliseconds
# (100 ms and more at 10 MB): not on the server's scoring thread (`released_gil_only`).
GIL_BYTES = 64 * 1024


class NeedsProcess(Exception):
    """Raised on the server's scoring thread by a body that only orjson can read: the app
    hands the request to its scoring process instead (mlgate.serving.app)."""


_SCOPE = threading.local()


@contextmanager
def released_gil_only() -> Iterator[None]:
    """Within: `parse_json` refuses (NeedsProcess) bodies of GIL_BYTES or more, so that
    what runs here holds the GIL only briefly (the C JSON reader and the trees let go of it)."""
    _SCOPE.active = True
    try:
        yield
    finally:
        _SCOPE.active = False


class BadRequest(Exception):
    """A client error: answered with `status` and a message naming the fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 100_000
    allow_missing: bool = False


class Matrices:
    """The shared checks for one bundle and its limits."""

    def __init__(self, bundle: Bundle, limits: Limits) -> None:
        self.bundle = bundle
        self.limits = limits
        self.features = bundle.features
        self.index = {name: i for i, name in enumerate(self.features)}

    def matrix(
        self,
        data: Any,
        where: str,
        columns: list[Any] | None = None,
        by_column: bool = False,
        shape: list[int] | None = None,
    ) -> np.ndarray:
        """A 2-D float64 array from JSON rows (or columns), checked: numbers only, rectangular,
        finite."""
        if isinstance(data, np.ndarray):  # an OIP binary tensor, already numbers
            if not data.size:
                raise BadRequest(f"{where} has no values; send at least one row")
        elif not isinstance(data, list) or not data:
            raise BadRequest(f"{where} must be a non-empty list of rows")
        # Rows, not values or columns, count against serve.max_rows: checked first where the
        # row count is known without building the array, and again on the array itself.
        rows = shape[0] if shape else (None if by_column else len(data))
        if rows is not None:
            self.check_rows(rows, where)
        in_order = columns == self.features  # the common case: the model's own order
        if columns is not None and not in_order:  # names first: the clearer message
            if not isinstance(columns, list):
                raise BadRequest(f"{where}: columns must be a list of names")
            self.check_columns(columns, f"{where.rsplit('.', 1)[0]}.columns")
        try:  # categorical features: their text to the bundle's codes (issue 19)
            data = encode_json(
                self.bundle,
                data,
                columns=columns,
                by_column=by_column,
                width=shape[1] if shape and len(shape) == 2 else None,
                allow_missing=self.limits.allow_missing,
            )
        except CategoryError as exc:
            raise BadRequest(f"{where}: {exc}") from None
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # ragged, deep
            raise BadRequest(
                f"{where}: rows have different lengths or are not lists of numbers ({exc})"
            ) from None
        if array.dtype.kind in "fiub":  # JSON true/false count as 1/0, as in numpy and pandas
            array = array.astype(np.float64, copy=False)
        elif array.dtype.kind == "O":
            array = objects(array, where)
        else:
            raise BadRequest(f"{where}: values must be numbers (found {kind(array)})")
        if shape is not None:  # OIP v2 sends a flat tensor and its shape
            array = array.reshape(shape)
        if array.ndim != 2:
            raise BadRequest(
                f"{where}: expected rows of {len(self.features)} numbers, "
                f"got an array of shape {list(array.shape)}"
            )
        if by_column:
            array = np.ascontiguousarray(array.T)
        self.check_rows(array.shape[0], where)
        if columns is not None:
            # Every row carries exactly one value per named column, or the values would be
            # matched to the wrong names (an extra value would silently shift them).
            if array.shape[1] != len(columns):
                raise BadRequest(
                    f"{where}: rows have {array.shape[1]} values but columns names "
                    f"{len(columns)}; send one value per column in each row"
                )
            if not in_order:
                array = array[:, [columns.index(name) for name in self.features]]
        if array.shape[1] != len(self.features):
            raise BadRequest(
                f"{where}: rows have {array.shape[1]} values; the model takes "
                f"{len(self.features)} ({few(self.features)})"
            )
        if self.limits.allow_missing:
            if np.isinf(array).any():
                raise BadRequest(f"{where}: infinite values are not valid inputs")
        elif not np.isfinite(array).all():  # (all finite: no infinities either)
            row, col = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise BadRequest(
                f"{where}: row {row}, column '{self.features[col]}' is null, NaN or infinite; "
                "the model was trained without missing values (serve.allow_missing=true to "
                "let XGBoost treat them as missing)"
            )
        return array

    def check_rows(self, rows: int, where: str) -> None:
        if rows > self.limits.max_rows:
            raise BadRequest(
                f"{where} has {rows} rows; serve.max_rows is "
                f"{self.limits.max_rows}: split the batch",
                413,
            )

    def check_columns(self, given: list[Any], where: str) -> None:
        """`given` names each of the model's columns exactly once (any order)."""
        if given == self.features:  # the model's own order: nothing more to check
            return
        if not all(isinstance(g, str) for g in given):
            bad = next(g for g in given if not isinstance(g, str))
            raise BadRequest(
                f"{where}: column names must be strings (found {type(bad).__name__} "
                f"{short(bad)}); GET /version lists the {len(self.features)} inputs"
            )
        if len(given) != len(self.features) or set(given) != self.index.keys():
            self.columns_error(given, where)

    def columns_error(self, given: list[Any], where: str) -> None:
        missing = [f for f in self.features if f not in set(given)]
        extra = [str(g) for g in given if g not in self.index]
        duplicated = sorted({str(g) for g in given if given.count(g) > 1})
        parts = []
        if missing:
            parts.append(f"missing {few(missing)}")
        if extra:
            parts.append(f"unknown {few(extra)}")
        if duplicated:
            parts.append(f"repeated {few(duplicated)}")
        raise BadRequest(
            f"{where}: columns do not match the model's signature: "
            f"{'; '.join(parts)}. GET /version lists the {len(self.features)} inputs"
        )


def objects(array: np.ndarray, where: str) -> np.ndarray:
    """An object array of JSON values (numbers and nulls) as float64, nulls as NaN."""
    flat = array.ravel()
    for value in flat:
        if value is not None and not isinstance(value, (int, float, np.number)):
            raise BadRequest(
                f"{where}: values must be numbers (found {type(value).__name__} {short(value)})"
            )
    try:
        values = [math.nan if v is None else float(v) for v in flat]
    except OverflowError as exc:  # an integer beyond float64
        raise BadRequest(f"{where}: a value is too large for a float64 ({exc})") from None
    return np.array(values, dtype=np.float64).reshape(array.shape)


def parse_json(body: bytes) -> Any:
    """A JSON body, or a 400 saying why not."""
    if not body:
        raise BadRequest("empty body; send JSON")
    if len(body) >= GIL_BYTES and getattr(_SCOPE, "active", False):
        raise NeedsProcess
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def short(value: Any) -> str:
    """A value quoted for an error message, cut to 40 characters."""
    return repr(str(value)[:40])


def few(names: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(f"'{x}'" for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def kind(array: np.ndarray) -> str:
    return {"U": "text", "S": "bytes", "b": "booleans"}.get(array.dtype.kind, str(array.dtype))
