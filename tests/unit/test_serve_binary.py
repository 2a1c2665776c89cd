"""OIP v2's binary tensor extension (request and response), the model configuration and
repository endpoints, and rows (not values) against serve.max_rows, through the ASGI interface.
Generated binary requests (any dtype, shape, sizes, header length, trailing bytes) get either a
4xx with a message or a 200 equal to the XGBoost Booster's own predict on those rows."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlgate.serving.app import App
from mlgate.serving.formats.oip import BINARY_DTYPES
from tests.unit import test_serve_properties
from tests.unit.test_serve_properties import FEATURES, SETTINGS, oracle

# The generated model and its app, shared with the property tests (a module-scoped fixture).
served = test_serve_properties.served


def call(
    app: App,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "query_string": b"",
    }
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def binary_request(
    tensors: list[tuple[str, str, np.ndarray]], request: dict | None = None
) -> tuple[bytes, dict[str, str]]:
    """A body as tritonclient builds it: the JSON header, then each input's raw bytes."""
    inputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype,
            "parameters": {"binary_data_size": array.nbytes},
        }
        for name, datatype, array in tensors
    ]
    head = json.dumps({"inputs": inputs, **(request or {})}).encode()
    body = b"".join([head, *(a.tobytes() for _, _, a in tensors)])
    return body, {"Inference-Header-Content-Length": str(len(head))}


def decode(headers: dict[bytes, bytes], body: bytes) -> dict[str, np.ndarray]:
    """The outputs, read as tritonclient reads them (JSON data or binary after the header)."""
    length = headers.get(b"inference-header-content-length")
    head = json.loads(body if length is None else body[: int(length)])
    offset = 0 if length is None else int(length)
    out = {}
    for o in head["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.asarray(o["data"])
        else:
            dtype = BINARY_DTYPES[o["datatype"]]
            out[o["name"]] = np.frombuffer(body[offset : offset + size], dtype=dtype)
            offset += size
    assert offset in (0, len(body)), "binary outputs account for the whole body"
    return out


ROWS = np.random.default_rng(3).normal(size=(9, len(FEATURES)))


def test_binary_in_binary_out_no_content_type(served) -> None:
    app, booster = served
    body, headers = binary_request(
        [("input-0", "FP64", ROWS)], {"parameters": {"binary_data_output": True}}
    )
    status, got_headers, answer = call(app, "POST", "/v2/models/prop/infer", body, headers)
    assert status == 200, answer
    assert got_headers[b"content-type"] == b"application/octet-stream"
    out = decode(got_headers, answer)
    np.testing.assert_allclose(out["probability"], oracle(booster, ROWS.tolist()), atol=1e-6)


def test_per_output_binary_choice_and_per_feature_binary_inputs(served) -> None:
    app, booster = served
    columns = [(name, "FP32", ROWS[:, i].astype(np.float32)) for i, name in enumerate(FEATURES)]
    columns.reverse()  # any order: matched by name
    body, headers = binary_request(
        columns,
        {
            "outputs": [
                {"name": "probability", "parameters": {"binary_data": False}},
                {"name": "label", "parameters": {"binary_data": True}},
            ]
        },
    )
    headers["Content-Type"] = "application/octet-stream"  # KServe's client sends this
    status, got_headers, answer = call(app, "POST", "/v2/models/prop/infer", body, headers)
    assert status == 200, answer
    out = decode(got_headers, answer)
    expected = oracle(booster, ROWS.astype(np.float32).astype(np.float64).tolist())
    np.testing.assert_allclose(out["probability"], expected, atol=1e-6)
    np.testing.assert_array_equal(out["label"], (expected >= 0.5).astype(np.int64))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b, h: (b, {**h, "Inference-Header-Content-Length": "0"}), "is not a length"),
        (lambda b, h: (b, {**h, "Inference-Header-Content-Length": "x"}), "is not a length"),
        (
            lambda b, h: (b, {**h, "Inference-Header-Content-Length": str(len(b) + 1)}),
            "is not a length",
        ),
        (lambda b, h: (b[:-8], h), "runs past the body"),
        (lambda b, h: (b + b"\0" * 8, h), "bytes after the binary inputs"),
        (
            lambda b, h: (b, {"Content-Type": "application/octet-stream"}),
            "Inference-Header-Content-Length",
        ),
        (lambda b, h: (b, {}), "malformed JSON"),
    ],
    ids=["zero", "not-a-number", "past-the-end", "short", "trailing", "no-length", "no-header"],
)
def test_bad_binary_requests_are_400s_naming_the_problem(served, mutate, message) -> None:
    app, _ = served
    body, headers = mutate(*binary_request([("input-0", "FP64", ROWS)]))
    status, _, answer = call(app, "POST", "/v2/models/prop/infer", body, headers)
    assert status == 400 and message in json.loads(answer)["error"], answer
    assert call(app, "GET", "/v2/health/ready")[0] == 200


def test_rows_not_values_count_against_max_rows(served) -> None:
    app, booster = served  # max_rows 64; 40 rows of 4 features are 160 values
    rows = np.random.default_rng(5).normal(size=(40, len(FEATURES)))
    for body, headers in (
        binary_request([("input-0", "FP64", rows)]),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [40, 4],
                            "datatype": "FP64",
                            "data": rows.ravel().tolist(),
                        }
                    ]
                }
            ).encode(),
            {"Content-Type": "application/json"},
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": f, "shape": [40], "datatype": "FP64", "data": rows[:, i].tolist()}
                        for i, f in enumerate(FEATURES)
                    ]
                }
            ).encode(),
            {"Content-Type": "application/json"},
        ),
    ):
        status, got_headers, answer = call(app, "POST", "/v2/models/prop/infer", body, headers)
        assert status == 200, answer
        np.testing.assert_allclose(
            decode(got_headers, answer)["probability"], oracle(booster, rows.tolist()), atol=1e-6
        )
    over = np.zeros((65, len(FEATURES)))
    body, headers = binary_request([("i", "FP64", over)])
    status, _, answer = call(app, "POST", "/v2/models/prop/infer", body, headers)
    assert status == 413 and "65 rows" in json.loads(answer)["error"]
    columns = [(f, "FP64", over[:, i].copy()) for i, f in enumerate(FEATURES)]
    status, _, answer = call(app, "POST", "/v2/models/prop/infer", *binary_request(columns))
    assert status == 413 and "65 rows" in json.loads(answer)["error"]


def test_config_repository_index_and_health_bodies(served) -> None:
    app, _ = served
    status, _, body = call(app, "GET", "/v2/models/prop/config")
    config = json.loads(body)
    assert status == 200 and config["name"] == "prop" and config["max_batch_size"] == 64
    assert [i["name"] for i in config["input"]] == ["input-0", *FEATURES]
    assert call(app, "GET", "/v2/models/prop/versions/1/config")[0] == 200
    status, _, body = call(app, "GET", "/v2/models/other/config")
    assert status == 404 and "'other'" in json.loads(body)["error"]
    status, _, body = call(app, "POST", "/v2/repository/index", b"{}")
    assert status == 200
    assert json.loads(body) == [{"name": "prop", "version": "1", "state": "READY"}]
    status, _, body = call(app, "POST", "/v2/repository/models/prop/load", b"{}")
    assert status == 405 and "not supported" in json.loads(body)["error"]
    assert json.loads(call(app, "GET", "/v2/health/live")[2]) == {"live": True}
    assert json.loads(call(app, "GET", "/v2/health/ready")[2]) == {"ready": True}
    ready = json.loads(call(app, "GET", "/v2/models/prop/ready")[2])
    assert ready == {"name": "prop", "ready": True}
    server = json.loads(call(app, "GET", "/v2")[2])
    assert "binary_tensor_data" in server["extensions"]


@st.composite
def binary_requests(draw) -> tuple[bytes, dict[str, str], np.ndarray | None]:
    """A binary request, and the rows it encodes in the model's order if it is well-formed."""
    n = draw(st.integers(0, 5))
    rows = np.asarray(
        draw(
            st.lists(
                st.lists(st.floats(-3, 3, width=32), min_size=4, max_size=4), min_size=n, max_size=n
            )
        ),
        dtype=np.float64,
    ).reshape(n, len(FEATURES))
    dtype = draw(st.sampled_from(["FP64", "FP32", "INT32", "INT8", "UINT16"]))
    if dtype.startswith(("INT", "UINT")):
        rows = np.clip(np.round(rows), 0, 3)
    typed = rows.astype(BINARY_DTYPES[dtype])
    per_feature = draw(st.booleans())
    if per_feature:
        order = draw(st.permutations(range(len(FEATURES))))
        tensors = [(FEATURES[i], dtype, np.ascontiguousarray(typed[:, i])) for i in order]
    else:
        tensors = [("input-0", dtype, typed)]
    body, headers = binary_request(tensors)
    corruption = draw(st.sampled_from(["none", "length", "cut", "extra", "size", "shape", "dtype"]))
    head_length = int(headers["Inference-Header-Content-Length"])
    if corruption == "length":
        headers["Inference-Header-Content-Length"] = str(
            draw(st.integers(-2, len(body) + 2).filter(lambda x: x != head_length))
        )
    elif corruption == "cut" and len(body) > head_length:
        body = body[: draw(st.integers(head_length, len(body) - 1))]
    elif corruption == "extra":
        body += draw(st.binary(min_size=1, max_size=9))
    elif corruption in ("size", "shape", "dtype"):
        original = json.loads(body[:head_length])
        head = json.loads(body[:head_length])
        tensor = head["inputs"][draw(st.integers(0, len(head["inputs"]) - 1))]
        if corruption == "size":
            tensor["parameters"]["binary_data_size"] = draw(
                st.one_of(st.integers(-1, 200), st.text(max_size=3), st.none(), st.booleans())
            )
        elif corruption == "shape":
            tensor["shape"] = draw(st.lists(st.integers(-1, 6), max_size=3))
        else:
            tensor["datatype"] = draw(st.sampled_from(["BYTES", "BOOL", "FP64", "INT64", 7]))
        new_head = json.dumps(head).encode()
        body = new_head + body[head_length:]
        headers["Inference-Header-Content-Length"] = str(len(new_head))
        if json.dumps(head) == json.dumps(original):  # as sent: `true` is not `1` in JSON
            corruption = "none"  # the draw left it unchanged
    valid = corruption == "none" and n > 0
    return body, headers, typed.astype(np.float64) if valid else None


def _refused(status: int, body: bytes) -> bool:
    return 400 <= status < 500 and bool(json.loads(body).get("error"))


@SETTINGS
@given(request=binary_requests())
def test_any_binary_request_is_a_4xx_or_the_boosters_answer(served, request) -> None:
    app, booster = served
    body, headers, rows = request
    status, got_headers, answer = call(app, "POST", "/v2/models/prop/infer", body, headers)
    assert status < 500, answer
    if rows is None:
        # A corruption may still describe valid rows (shape [n] as [n, 1], FP64 bytes read
        # as INT64): scored as declared. Otherwise a 4xx that says why; never a 5xx.
        assert status == 200 or _refused(status, answer), answer
        return
    assert status == 200, answer
    expected = oracle(booster, rows.tolist())
    np.testing.assert_allclose(decode(got_headers, answer)["probability"], expected, atol=1e-6)
