"""Property tests of the model server's input handling (issue 20): for requests generated across
every format the server accepts (MLflow's dataframe_split / dataframe_records / instances /
inputs JSON, CSV, OIP v2 JSON with one tensor or one input per feature), in any column order,
with and without a corruption (an extra or a missing value, a repeated, unknown or non-string
name, a value of the wrong type, nested junk), the answer is either a 4xx with a message, or a
200 whose probabilities equal an independent oracle: the XGBoost Booster's own `predict` on
exactly the generated rows in the model's feature order (never the server's scoring path).

A correct encoding must get that 200; a corrupted one must get a 4xx (scoring it would mean the
values were matched to the wrong names). Arbitrary JSON in every slot must never get a 5xx."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlgate.serving.app import App, Limits
from mlgate.serving.bundle import load_bundle
from tests import boosters

FEATURES = list(boosters.PROP.features)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[App, Any]:
    """The app serving a small generated model, and that model's Booster (the oracle)."""
    dest = boosters.bundle(boosters.PROP, tmp_path_factory.mktemp("bundle") / "b")
    booster = boosters.booster(boosters.PROP)
    return App(load_bundle(dest), Limits(max_body_bytes=256 * 1024, max_rows=64)), booster


def oracle(booster: Any, rows: list[list[float]]) -> np.ndarray:
    import xgboost as xgb

    matrix = xgb.DMatrix(np.asarray(rows, dtype=np.float64), feature_names=FEATURES)
    return booster.predict(matrix)


def call(app: App, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", content_type.encode())],
        "query_string": b"",
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


# -- generated requests ---------------------------------------------------------------------------
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(-1000, 1000)
rows_strategy = st.integers(1, 6).flatmap(
    lambda n: st.lists(
        st.lists(values, min_size=len(FEATURES), max_size=len(FEATURES)), min_size=n, max_size=n
    )
)
junk_value = st.sampled_from(["x", "1", [1.0], {"v": 1}, None, [], [[1]]])
junk_scalar = st.sampled_from(["x", "1", {"v": 1}, None])
junk_name = st.sampled_from([["f_a"], {"f_a": 1}, 1, None, "f_z", ""])
FORMATS = [
    "split",
    "split-nocolumns",
    "records",
    "instances",
    "instances-records",
    "inputs",
    "inputs-columns",
    "csv",
    "oip-tensor",
    "oip-tensor-nested",
    "oip-per-feature",
]
CORRUPTIONS = ["none", "extra", "missing", "repeat-name", "bad-name", "bad-value"]
# Which corruptions a format can express (a format without names cannot repeat one).
NAMED = {"split", "records", "instances-records", "inputs-columns", "csv", "oip-per-feature"}
POSITIONAL = {
    "split",
    "split-nocolumns",
    "instances",
    "inputs",
    "csv",
    "oip-tensor",
    "oip-tensor-nested",
}


def encode(fmt: str, rows: list[list[Any]], order: list[int], corruption: str, draw) -> tuple:
    """(path, body, content type) for `rows` (in the model's feature order) sent in `fmt` with
    the columns in `order`, corrupted as asked."""
    names: list[Any] = [FEATURES[i] for i in order]
    table = [[row[i] for i in order] for row in rows]  # the values in the sent column order
    r = draw(st.integers(0, len(rows) - 1))
    c = draw(st.integers(0, len(FEATURES) - 1))
    if corruption == "extra":
        table[r] = [*table[r], draw(values)]
    elif corruption == "missing":
        table[r] = table[r][:-1] if c == len(FEATURES) - 1 else table[r][:c] + table[r][c + 1 :]
    elif corruption == "repeat-name":
        names[c] = names[(c + 1) % len(names)]
    elif corruption == "bad-name":
        names[c] = draw(junk_name)
    elif corruption == "bad-value":
        table[r] = [*table[r]]
        # OIP v2 JSON may nest a tensor's data, so for one input per feature [1.0] is the
        # number 1.0: that format gets junk that is junk under any reading.
        table[r][c] = draw(junk_scalar if fmt == "oip-per-feature" else junk_value)
    invocations, infer = "/invocations", "/v2/models/prop/infer"

    def dumps(payload: Any) -> bytes:
        return json.dumps(payload).encode()

    if fmt == "split":
        return invocations, dumps({"dataframe_split": {"columns": names, "data": table}}), "json"
    if fmt == "split-nocolumns":
        data = _model_order(table, order)
        return invocations, dumps({"dataframe_split": {"data": data}}), "json"
    if fmt in {"records", "instances-records"}:
        records = [_record(names, row) for row in table]
        key = "dataframe_records" if fmt == "records" else "instances"
        return invocations, dumps({key: records}), "json"
    if fmt in {"instances", "inputs"}:
        data = _model_order(table, order)
        return invocations, dumps({fmt: data}), "json"
    if fmt == "inputs-columns":
        columns = _columns(names, table)
        return invocations, dumps({"inputs": columns}), "json"
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(names)
        for row in table:
            writer.writerow([json.dumps(v) if isinstance(v, (list, dict)) else v for v in row])
        return invocations, text.getvalue().encode(), "csv"
    if fmt in {"oip-tensor", "oip-tensor-nested"}:
        data = _model_order(table, order)
        flat = [v for row in data for v in row]
        tensor = {
            "name": "input-0",
            "shape": [len(rows), len(FEATURES)],
            "datatype": "FP64",
            "data": data if fmt == "oip-tensor-nested" else flat,
        }
        return infer, dumps({"inputs": [tensor]}), "json"
    assert fmt == "oip-per-feature"
    shape_2d = draw(st.booleans())
    tensors = []
    for j, name in enumerate(names):
        column = [row[j] for row in table if j < len(row)]
        data = [[v] for v in column] if shape_2d else column
        shape = [len(rows), 1] if shape_2d else [len(rows)]
        tensors.append({"name": name, "shape": shape, "datatype": "FP64", "data": data})
    return infer, dumps({"inputs": tensors}), "json"


def _model_order(table: list[list[Any]], order: list[int]) -> list[list[Any]]:
    """Rows back in the model's feature order (formats without names); a row of the wrong
    length is sent as it is."""
    back = np.argsort(order)
    return [[row[i] for i in back] if len(row) == len(order) else row for row in table]


def _record(names: list[Any], row: list[Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for j, value in enumerate(row):
        key = names[j] if j < len(names) else "f_extra"
        record[key if isinstance(key, str) else json.dumps(key)] = value
    return record


def _columns(names: list[Any], table: list[list[Any]]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for j, name in enumerate(names):
        key = name if isinstance(name, str) else json.dumps(name)
        columns[key] = [row[j] for row in table if j < len(row)]
    return columns


@st.composite
def requests(draw) -> tuple:
    fmt = draw(st.sampled_from(FORMATS))
    possible = ["none", "bad-value"]
    if fmt in POSITIONAL or fmt in {"records", "instances-records"}:
        possible += ["extra", "missing"]
    if fmt in NAMED:
        possible += ["repeat-name", "bad-name"]
    corruption = draw(st.sampled_from(possible))
    rows = draw(rows_strategy)
    named = fmt in NAMED
    order = draw(st.permutations(range(len(FEATURES)))) if named else list(range(len(FEATURES)))
    path, body, kind = encode(fmt, rows, list(order), corruption, draw)
    return fmt, corruption, rows, path, body, kind


def _is_refused_correctly(status: int, out: Any) -> bool:
    message = out.get("message") or out.get("error")
    return 400 <= status < 500 and isinstance(message, str) and len(message) > 10


@SETTINGS
@given(request=requests())
def test_every_format_scores_exactly_the_named_columns_or_refuses(served, request) -> None:
    app, booster = served
    fmt, corruption, rows, path, body, kind = request
    content_type = "text/csv" if kind == "csv" else "application/json"
    status, out = call(app, path, body, content_type)
    if corruption != "none" and not (
        # a CSV field holding the text "1" is the number 1: a harmless "bad value"
        status == 200 and fmt == "csv" and corruption == "bad-value"
    ):
        assert _is_refused_correctly(status, out), (fmt, corruption, status, out)
        return
    assert status == 200, (fmt, corruption, out)
    if path.startswith("/v2"):
        got = out["outputs"][0]["data"]
    else:
        got = out["predictions"]
    want = oracle(booster, _csv_rows(rows, body, fmt))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@SETTINGS
@given(request=requests())
def test_the_json_fast_path_scores_like_the_booster_or_refuses(
    served, monkeypatch, request
) -> None:
    """The same property with every JSON body, however small, offered to the fast path
    (serving/fastjson.py: numbers parsed by C into numpy); a correct one-tensor OIP body and a
    correct dataframe_split take it."""
    from mlgate.serving import fastjson

    monkeypatch.setattr(fastjson, "MIN_BODY", 0)
    app, _ = served
    fmt, corruption, *_, body, _ = request
    if fmt in {"oip-tensor", "oip-tensor-nested"} and corruption == "none":
        assert fastjson.oip(body, app.bundle) is not None
    if fmt == "split" and corruption == "none":
        assert fastjson.dataframe_split(body, app.bundle) is not None
    test_every_format_scores_exactly_the_named_columns_or_refuses.hypothesis.inner_test(
        served, request
    )


def _csv_rows(rows: list[list[Any]], body: bytes, fmt: str) -> list[list[Any]]:
    """The rows the request carried; for a CSV "bad value" that is still a number (the text "1"),
    the number that CSV field holds, read back with the csv module and the header's names."""
    if fmt != "csv":
        return rows
    reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig")))
    return [[float(record[name]) for name in FEATURES] for record in reader]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=25,
)
maybe_name = st.sampled_from(FEATURES) | json_values


@SETTINGS
@given(
    key=st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]),
    columns=st.lists(maybe_name, max_size=5) | json_values,
    data=json_values,
    split=st.booleans(),
)
def test_nested_junk_in_mlflow_json_is_a_4xx_never_a_500(served, key, columns, data, split) -> None:
    app, _ = served
    value = {"columns": columns, "data": data} if key == "dataframe_split" and split else data
    status, out = call(app, "/invocations", json.dumps({key: value}).encode(), "application/json")
    assert status == 200 or _is_refused_correctly(status, out), (status, out)


@SETTINGS
@given(
    tensors=st.lists(
        st.fixed_dictionaries(
            {
                "name": maybe_name,
                "shape": st.lists(st.integers(0, 5), max_size=3) | json_values,
                "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES"]) | json_values,
                "data": st.lists(values | json_values, max_size=10) | json_values,
            }
        ),
        max_size=5,
    ),
    outputs=st.none()
    | json_values
    | st.lists(st.fixed_dictionaries({"name": maybe_name}), max_size=3),
)
def test_nested_junk_in_oip_json_is_a_4xx_never_a_500(served, tensors, outputs) -> None:
    app, _ = served
    payload: dict[str, Any] = {"inputs": tensors}
    if outputs is not None:
        payload["outputs"] = outputs
    body = json.dumps(payload).encode()
    status, out = call(app, "/v2/models/prop/infer", body, "application/json")
    assert status == 200 or _is_refused_correctly(status, out), (status, out)


@SETTINGS
@given(
    header=st.lists(st.sampled_from(FEATURES) | st.text(max_size=6), max_size=6),
    rows=st.lists(st.lists(st.text(max_size=8) | values.map(str), max_size=6), max_size=4),
)
def test_any_csv_is_a_4xx_or_the_boosters_answer(served, header, rows) -> None:
    app, booster = served
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    status, out = call(app, "/invocations", text.getvalue().encode(), "text/csv")
    if status != 200:
        assert _is_refused_correctly(status, out), (status, out)
        return
    # Scored: then the header named each feature once and every field was a finite number;
    # the oracle reads the same body with the csv module, by name.
    reader = csv.DictReader(io.StringIO(text.getvalue().encode().decode("utf-8-sig")))
    expected = [[float(rec[name]) for name in FEATURES] for rec in reader if any(rec.values())]
    np.testing.assert_allclose(out["predictions"], oracle(booster, expected), rtol=0, atol=1e-6)


def test_the_issues_examples(served) -> None:
    """The literal bodies from issue 20 (each a 500 or a wrong 200 before)."""
    app, _ = served
    reordered = ["f_c", "f_a", "f_d", "f_b"]
    for body in (
        {"dataframe_split": {"columns": reordered, "data": [[1, 2, 3, 4, 5]]}},
        {"dataframe_split": {"columns": reordered, "data": [[1, 2]]}},
        {"dataframe_split": {"columns": [["f_a"], "f_b", "f_c", "f_d"], "data": [[1, 2, 3, 4]]}},
    ):
        status, out = call(app, "/invocations", json.dumps(body).encode(), "application/json")
        assert _is_refused_correctly(status, out), (body, status, out)
    huge = "f_a,f_b,f_c,f_d\n1," + "7" * (130 * 1024) + ",3,4\n"
    status, out = call(app, "/invocations", huge.encode(), "text/csv")
    assert _is_refused_correctly(status, out) and "field limit" in out["message"]
