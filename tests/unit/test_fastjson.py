"""OIP JSON's numbers straight to numpy (serving/fastjson.py): for any body, the fast path either
steps aside (None: orjson parses it, as before) or gives exactly what orjson gives, bit for bit,
and never takes a body orjson refuses. The oracle is orjson itself on the whole body."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlgate.serving import fastjson
from mlgate.serving.trees import _build

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Any:
    """A stand-in bundle whose trees carry the compiled routine (the C compiled as a bundle
    compiles it), and no categories."""
    src = tmp_path_factory.mktemp("fastjson") / "json.c"
    src.write_text(fastjson.C_SOURCE)
    _build("cc", [src], src.with_suffix(".so"))
    parse = fastjson.bind(ctypes.CDLL(str(src.with_suffix(".so"))))
    assert parse is not None
    return SimpleNamespace(trees=SimpleNamespace(json_numbers=parse), categories={})


@pytest.fixture
def small_bodies(monkeypatch) -> None:
    monkeypatch.setattr(fastjson, "MIN_BODY", 0)


def _same_as_orjson(body: bytes, got: dict[str, Any] | None) -> bool:
    """True when the fast path stepped aside, or agrees with orjson exactly."""
    if got is None:
        return False
    want = orjson.loads(body)  # raises if the fast path took a body orjson refuses
    data = got["inputs"][0].pop("data")
    expected = np.asarray(want["inputs"][0].pop("data"), dtype=np.float64).ravel()
    assert got == want
    assert data.dtype == np.float64 and data.shape == expected.shape
    assert np.array_equal(data, expected)
    assert np.array_equal(np.signbit(data), np.signbit(expected))  # -0.0 stays -0.0
    return True


numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**15) + 1, 10**15 - 1)
    | st.floats(-1e4, 1e4).map(lambda x: round(x, 3))
    | st.sampled_from(
        [0, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1e22, 1e23, 9007199254740993.0]
    )
)
# Text the scanner must refuse or read right: JSON's edge cases and near misses.
tokens = st.sampled_from(
    [
        "-0",
        "-0.0",
        "0e0",
        "0.1e1",
        "1E+2",
        "1e-05",
        "1e400",
        "-1e400",
        "1e-400",
        "00",
        "01",
        "-01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "1e+",
        "--1",
        "1.2.3",
        "1e2e3",
        "0x10",
        "NaN",
        "Infinity",
        "nan",
        "1 2",
        "1,",
        ",1",
        "[1]",
        "null",
        "true",
        '"1"',
        "123456789012345678",
        "1" * 70,
        "0." + "1" * 70,
        "2.2250738585072011e-308",
        "4.9406564584124654e-324",
        "1.00000000000000011102230246251565404236316680908203125",
        "\u00a01",
        "1\x00",
    ]
)
spaces = st.sampled_from(["", " ", "\n", "\t", "\r\n  ", "\u00a0", "\x0b"])


@st.composite
def bodies(draw) -> bytes:
    rows = draw(st.integers(1, 4))
    width = draw(st.integers(1, 4))
    nested = draw(st.booleans())
    cells = [
        draw(tokens) if draw(st.integers(0, 9)) == 0 else json.dumps(draw(numbers))
        for _ in range(rows * width)
    ]
    gap = lambda: draw(spaces) if draw(st.integers(0, 3)) == 0 else ""  # noqa: E731
    if nested:
        lines = [
            "[" + gap() + ("," + gap()).join(cells[r * width : (r + 1) * width]) + gap() + "]"
            for r in range(rows)
        ]
        if draw(st.integers(0, 9)) == 0:  # a ragged row
            lines[0] = "[" + ",".join([*cells[:width], "1"]) + "]"
        data = "[" + gap() + ("," + gap()).join(lines) + gap() + "]"
    else:
        data = "[" + gap() + ("," + gap()).join(cells) + gap() + "]"
    tensor = {"name": "x", "shape": [rows, width], "datatype": "FP64", "data": "@DATA@"}
    payload = {"inputs": [tensor]}
    if draw(st.booleans()):
        payload["id"] = draw(st.sampled_from(["r1", "data", '"data":[1]', "\u0000mlgate-fastjson"]))
    if draw(st.booleans()):
        payload["parameters"] = {"data": [1, 2]} if draw(st.booleans()) else {"a": 1}
    text = json.dumps(payload, indent=draw(st.sampled_from([None, 2])))
    text = text.replace('"@DATA@"', data)
    if draw(st.integers(0, 9)) == 0:  # a broken rest of the body
        text = text.replace('"shape"', '"shape" ' if draw(st.booleans()) else "shape", 1)
    if draw(st.integers(0, 9)) == 0:
        text = text.replace('"datatype"', '"data", "datatype"', 1)
    return text.encode()


@SETTINGS
@given(body=bodies())
def test_the_fast_path_gives_orjsons_numbers_or_steps_aside(bundle, small_bodies, body) -> None:
    got = fastjson.oip(body, bundle)
    if got is None:
        return
    assert _same_as_orjson(body, got), body


@SETTINGS
@given(values=st.lists(numbers, min_size=1, max_size=50), nested=st.booleans())
def test_valid_bodies_of_numbers_take_the_fast_path(bundle, small_bodies, values, nested) -> None:
    data: Any = [[v] for v in values] if nested else values
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [len(values), 1], "data": data}]})
    assert _same_as_orjson(body, fastjson.oip(body, bundle))


def test_what_it_leaves_to_orjson(bundle, small_bodies) -> None:
    def body(data: str, extra: str = "") -> bytes:
        return f'{{"inputs": [{{"name": "x", "data": {data}}}]{extra}}}'.encode()

    assert _same_as_orjson(body("[1, 2.5, -0]"), fastjson.oip(body("[1, 2.5, -0]"), bundle))
    for skipped in [
        body("[1, null]"),  # missing values: orjson's path turns null into NaN
        body("[true, 1]"),
        body("[]"),
        body("[[1, 2], [3]]"),  # ragged
        body("[[[1]]]"),
        body("[1e400]"),  # orjson refuses it
        body("[123456789012345678]"),  # a long integer: orjson's int
        body("[1, 2]", ', "outputs": [{"name": "p", "data": 1}]'),  # two data keys
        body("[1, 2]", ', "note": "\\u0000mlgate-fastjson"'),
        body("[1, 2]", ", oops"),
        b'{"inputs": [{"name": "x", "data": [1]}, {"name": "y", "shape": [1]}]}',  # two inputs
        b'{"inputs": {"x": {"data": [1]}}}',
        b'{"id": "x", "data": [1, 2]}',
        b'{"inputs": [{"name": "x", "data": [1, 25',  # ends in a number: the scan stops at the end
        b'{"inputs": [{"name": "x", "data": [1, 2\x00, 3]}]}',  # a 0 byte inside
        # the marker, escaped, under an escaped key: the array read is not the input's data
        b'{"pre": {"data": [1, 2]}, "inputs": [{"name": "x", '
        b'"d\\u0061ta": "\\u0000mlgat\\u0065-fastjson"}]}',
    ]:
        assert fastjson.oip(skipped, bundle) is None, skipped


def test_small_bodies_and_engines_without_the_routine_take_orjson(bundle) -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 3], "data": [1, 2, 3]}]})
    assert len(body) < fastjson.MIN_BODY and fastjson.oip(body, bundle) is None
    big = orjson.dumps({"inputs": [{"name": "x", "shape": [20000], "data": [1.5] * 20000}]})
    assert fastjson.oip(big, bundle) is not None
    assert fastjson.oip(big, SimpleNamespace(trees=object(), categories={})) is None
    with_categories = SimpleNamespace(trees=bundle.trees, categories={"c": ["a"]})
    assert fastjson.oip(big, with_categories) is None


def test_a_library_without_the_routine_binds_to_none(tmp_path: Path) -> None:
    src = tmp_path / "other.c"
    src.write_text("int other(void) { return 1; }\n")
    _build("cc", [src], tmp_path / "other.so")
    assert fastjson.bind(ctypes.CDLL(str(tmp_path / "other.so"))) is None


@SETTINGS
@given(
    rows=st.integers(1, 5).flatmap(
        lambda w: st.lists(st.lists(numbers, min_size=w, max_size=w), min_size=1, max_size=5)
    ),
    ragged=st.booleans(),
)
def test_dataframe_split_rows_come_back_as_rows(bundle, small_bodies, rows, ragged) -> None:
    if ragged:
        rows = [*rows, [*rows[0], 1.0]]
    body = orjson.dumps({"dataframe_split": {"columns": ["a"], "data": rows}})
    got = fastjson.dataframe_split(body, bundle)
    if ragged:  # numpy would not make an array of it: orjson's path refuses it as before
        assert got is None
        return
    assert got is not None and got["dataframe_split"]["columns"] == ["a"]
    want = np.asarray(rows, dtype=np.float64)
    assert np.array_equal(got["dataframe_split"]["data"], want)
    assert fastjson.oip(body, bundle) is None  # each path takes its own shape only
