"""MLflow's scoring protocol, CSV (`POST /invocations`, text/csv): a header row naming every
column (any order), then one row per line; an empty field is missing. Answers as the JSON format
does (`?labels=true` for the labels)."""

from __future__ import annotations

import csv
import io
import math

from mlgate.serving.formats.base import Format, Parsed, Request, predictions, wants_labels
from mlgate.serving.matrix import BadRequest, Matrices


def parse(request: Request, checks: Matrices) -> Parsed:
    labels = wants_labels(request)
    try:
        text = request.body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"CSV body is not UTF-8: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    categories = checks.bundle.categories
    try:
        header = next(reader, None)
        if not header:
            raise BadRequest("CSV body is empty; send a header row and data rows")
        checks.check_columns(header, "CSV header")
        at = {name: i for i, name in enumerate(header)}  # the names are unique (checked)
        order = [at[name] for name in checks.features]
        rows = []
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise BadRequest(f"CSV line {n} has {len(row)} fields, the header {len(header)}")
            try:
                rows.append(
                    [
                        (row[i] or None)
                        if name in categories  # issue 19
                        else float(row[i])
                        if row[i] != ""
                        else math.nan
                        for name, i in zip(checks.features, order, strict=True)
                    ]
                    if categories
                    else [float(row[i]) if row[i] != "" else math.nan for i in order]
                )
            except ValueError as exc:
                raise BadRequest(f"CSV line {n}: {exc}") from exc
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (128 KB)
        raise BadRequest(f"CSV line {reader.line_num}: {exc}; send one number per field") from None
    return Parsed(checks.matrix(rows, "CSV"), labels)


FORMAT = Format("csv", parse, predictions)
