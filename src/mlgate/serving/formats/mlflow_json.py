"""MLflow's scoring protocol, JSON (`POST /invocations`, application/json): `dataframe_split`,
`dataframe_records`, `instances` or `inputs` (rows, records or {column: [values]}). Answers
`{"predictions": [p, ...]}`, the positive class's probability, plus `"labels"` at the model's
threshold with `?labels=true` or `"params": {"labels": true}`."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgate.serving import fastjson
from mlgate.serving.formats.base import Format, Parsed, Request, predictions, wants_labels
from mlgate.serving.matrix import BadRequest, Matrices, parse_json

KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse(request: Request, checks: Matrices) -> Parsed:
    labels = wants_labels(request)
    # a big dataframe_split body: its numbers straight to numpy (mlgate.serving.fastjson)
    payload = fastjson.dataframe_split(request.body, checks.bundle) or parse_json(request.body)
    if not isinstance(payload, dict):
        raise BadRequest(
            "the JSON body must be an object with one of dataframe_split, "
            "dataframe_records, instances, inputs"
        )
    params = payload.get("params") or {}
    if isinstance(params, dict) and params.get("labels") is True:
        labels = True
    return Parsed(from_payload(payload, checks), labels)


def from_payload(payload: dict[str, Any], checks: Matrices) -> np.ndarray:
    keys = [k for k in KEYS if k in payload]
    if len(keys) != 1:
        raise BadRequest(
            "the JSON body needs exactly one of dataframe_split, dataframe_records, "
            f"instances, inputs (found {', '.join(keys) or 'none'})"
        )
    value = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise BadRequest('dataframe_split must be {"columns": [...], "data": [[...]]}')
        columns = value.get("columns")
        if columns is None:
            return checks.matrix(value["data"], "dataframe_split.data")
        return checks.matrix(value["data"], "dataframe_split.data", columns=columns)
    if keys[0] == "dataframe_records":
        return from_records(value, "dataframe_records", checks)
    if isinstance(value, dict):  # inputs: {column: [values]}
        return from_columns(value, keys[0], checks)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return from_records(value, keys[0], checks)
    return checks.matrix(value, keys[0])


def from_records(records: Any, where: str, checks: Matrices) -> np.ndarray:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest(f"{where} must be a list of objects, one per row")
    wanted = checks.index
    rows = []
    for i, record in enumerate(records):
        if record.keys() != wanted.keys():
            checks.columns_error(list(record), f"{where}[{i}]")
        rows.append([record[name] for name in checks.features])
    return checks.matrix(rows, where)


def from_columns(columns: dict[str, Any], where: str, checks: Matrices) -> np.ndarray:
    checks.check_columns(list(columns), where)
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise BadRequest(f"{where}: every column must be a list of the same length")
    return checks.matrix([columns[name] for name in checks.features], where, by_column=True)


FORMAT = Format("mlflow-json", parse, predictions)
