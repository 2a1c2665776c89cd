"""The model server's protocol handling, driven through its ASGI interface (no socket): every
accepted request shape gives the served trees' own probabilities (which equal the booster's, see
test_trees), and every bad input in the catalogue gets a 4xx JSON error that names the problem,
after which the server still answers."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlgate.errors import ConfigError, ModelError
from mlgate.serving.app import App, Limits
from mlgate.serving.bundle import load_bundle
from tests import boosters

FEATURES = list(boosters.TOY.features)


def make_bundle(dest: Path, compile: bool = True) -> Path:
    """The small generated model's bundle, copied to `dest` (tests.boosters)."""
    return boosters.bundle(boosters.TOY, dest, compile=compile)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> App:
    bundle = load_bundle(make_bundle(tmp_path_factory.mktemp("bundle") / "b"))
    return App(bundle, Limits(max_body_bytes=4096, max_rows=50))


ROWS = [[0.5, -1.0, 2.0], [-2.0, 0.1, 0.0]]


def expected(app: App, rows=ROWS) -> list[float]:
    return app.bundle.predict(np.asarray(rows, dtype=np.float64)).tolist()


def call(
    app: App,
    method: str,
    path: str,
    body: bytes | str | dict | list | None = None,
    content_type: str = "application/json",
    query: str = "",
) -> tuple[int, dict | str]:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    raw = body.encode() if isinstance(body, str) else (body or b"")
    headers = [(b"content-type", content_type.encode())] if content_type else []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "query_string": query.encode(),
    }
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    text = sent[1]["body"].decode()
    try:
        return status, json.loads(text) if text else {}
    except ValueError:
        return status, text


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": FEATURES, "data": ROWS}},
        {
            "dataframe_split": {
                "columns": ["gamma", "alpha", "beta"],
                "data": [[r[2], r[0], r[1]] for r in ROWS],
            }
        },
        {"dataframe_split": {"data": ROWS}},
        {"dataframe_records": [dict(zip(FEATURES, r, strict=True)) for r in ROWS]},
        {"instances": ROWS},
        {"instances": [dict(zip(FEATURES, r, strict=True)) for r in ROWS]},
        {"inputs": ROWS},
        {"inputs": {f: [r[i] for r in ROWS] for i, f in enumerate(FEATURES)}},
        {"inputs": [[1, 0, 2], [0, 0, 0]]},  # integers are numbers
    ],
    ids=[
        "split",
        "split-reordered",
        "split-no-columns",
        "records",
        "instances",
        "instances-dicts",
        "inputs",
        "inputs-columns",
        "integers",
    ],
)
def test_mlflow_protocol_answers_the_boosters_probabilities(app: App, body: dict) -> None:
    status, out = call(app, "POST", "/invocations", body)
    assert status == 200, out
    rows = ROWS if "integers" not in json.dumps(body) else ROWS
    data = body.get("inputs")
    if data == [[1, 0, 2], [0, 0, 0]]:
        rows = data
    np.testing.assert_allclose(out["predictions"], expected(app, rows), atol=1e-7)


def test_csv_and_labels(app: App) -> None:
    csv = "gamma,alpha,beta\n" + "\n".join(f"{r[2]},{r[0]},{r[1]}" for r in ROWS) + "\n"
    status, out = call(app, "POST", "/invocations", csv, "text/csv", query="labels=true")
    assert status == 200, out
    np.testing.assert_allclose(out["predictions"], expected(app), atol=1e-7)
    assert out["labels"] == [int(p >= 0.5) for p in expected(app)]
    status, out = call(app, "POST", "/invocations", {"inputs": ROWS, "params": {"labels": True}})
    assert "labels" in out


def test_oip_v2(app: App) -> None:
    flat = [v for r in ROWS for v in r]
    body = {
        "id": "q1",
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": flat}],
        "outputs": [{"name": "probability"}, {"name": "label"}],
    }
    status, out = call(app, "POST", "/v2/models/toy/infer", body)
    assert status == 200, out
    assert out["model_name"] == "toy" and out["model_version"] == "3" and out["id"] == "q1"
    np.testing.assert_allclose(out["outputs"][0]["data"], expected(app), atol=1e-7)
    assert out["outputs"][1]["name"] == "label" and out["outputs"][1]["datatype"] == "INT64"
    per_feature = {
        "inputs": [
            {"name": f, "shape": [2], "datatype": "FP32", "data": [r[i] for r in ROWS]}
            for i, f in enumerate(FEATURES)
        ]
    }
    status, out = call(app, "POST", "/v2/models/toy/versions/3/infer", per_feature)
    assert status == 200, out
    np.testing.assert_allclose(out["outputs"][0]["data"], expected(app), atol=1e-7)
    assert call(app, "GET", "/v2/models/toy")[1]["inputs"][0] == {
        "name": "alpha",
        "datatype": "FP64",
        "shape": [-1],
    }
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/toy/ready",
        "/ping",
        "/health",
        "/v2",
    ):
        assert call(app, "GET", path)[0] == 200, path
    version = call(app, "GET", "/version")[1]
    assert version["model"] == "toy" and version["version"] == "3"
    assert [i["name"] for i in version["inputs"]] == FEATURES


def test_metrics_count_requests_and_errors(app: App) -> None:
    call(app, "POST", "/invocations", {"inputs": ROWS})
    call(app, "POST", "/invocations", "{")
    status, text = call(app, "GET", "/metrics")
    assert status == 200
    assert 'mlgate_requests_total{route="invocations",status="200"}' in text
    assert 'mlgate_request_errors_total{route="invocations",status="400"}' in text
    assert "mlgate_request_seconds_bucket" in text and "mlgate_prediction_rows_total" in text
    assert 'mlgate_model_info{name="toy",version="3"} 1.0' in text


BAD = [
    # (method, path, body, content type, status, words in the message)
    ("POST", "/invocations", "{", "application/json", 400, "malformed JSON"),
    ("POST", "/invocations", "", "application/json", 400, "empty body"),
    ("POST", "/invocations", "[1, 2]", "application/json", 400, "must be an object"),
    ("POST", "/invocations", {"rows": ROWS}, "application/json", 400, "exactly one of"),
    (
        "POST",
        "/invocations",
        {"inputs": ROWS, "instances": ROWS},
        "application/json",
        400,
        "found instances, inputs",
    ),
    ("POST", "/invocations", {"inputs": [[1, 2]]}, "application/json", 400, "rows have 2 values"),
    (
        "POST",
        "/invocations",
        {"inputs": [[1, 2, 3], [1, 2]]},
        "application/json",
        400,
        "different lengths",
    ),
    ("POST", "/invocations", {"inputs": [[1, "x", 3]]}, "application/json", 400, "must be numbers"),
    (
        "POST",
        "/invocations",
        {"inputs": [[1, None, 3]]},
        "application/json",
        400,
        "column 'beta' is null",
    ),
    ("POST", "/invocations", {"inputs": [[{"a": 1}, 1, 3]]}, "application/json", 400, "found dict"),
    ("POST", "/invocations", {"inputs": [[[1, 2, 3]]]}, "application/json", 400, "shape"),
    ("POST", "/invocations", {"inputs": []}, "application/json", 400, "non-empty"),
    (
        "POST",
        "/invocations",
        {"inputs": [[1, 2, 3]] * 51},
        "application/json",
        413,
        "serve.max_rows",
    ),
    ("POST", "/invocations", "x" * 5000, "application/json", 413, "serve.max_body_bytes"),
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": ["alpha", "beta"], "data": [[1, 2]]}},
        "application/json",
        400,
        "missing 'gamma'",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": [*FEATURES, "delta"], "data": [[1, 2, 3, 4]]}},
        "application/json",
        400,
        "unknown 'delta'",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": FEATURES}},
        "application/json",
        400,
        "dataframe_split must be",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_records": [{"alpha": 1, "beta": 2}]},
        "application/json",
        400,
        "dataframe_records[0]: columns do not match",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_records": "alpha"},
        "application/json",
        400,
        "list of objects",
    ),
    (
        "POST",
        "/invocations",
        {"inputs": {"alpha": [1], "beta": [2], "gamma": [3, 4]}},
        "application/json",
        400,
        "same length",
    ),
    ("POST", "/invocations", "alpha,beta\n1,2\n", "text/csv", 400, "missing 'gamma'"),
    ("POST", "/invocations", "alpha,beta,gamma\n1,2\n", "text/csv", 400, "line 2 has 2 fields"),
    ("POST", "/invocations", "alpha,beta,gamma\n1,x,3\n", "text/csv", 400, "CSV line 2"),
    ("POST", "/invocations", "alpha,beta,gamma\n1,inf,3\n", "text/csv", 400, "infinite"),
    ("POST", "/invocations", "alpha,beta,gamma\n1,,3\n", "text/csv", 400, "is null"),
    ("POST", "/invocations", "", "text/csv", 400, "CSV body is empty"),
    ("POST", "/invocations", b"\xff\xfe", "text/csv", 400, "not UTF-8"),
    ("POST", "/invocations", {"inputs": ROWS}, "text/plain", 415, "Content-Type: application/json"),
    ("POST", "/invocations", {"inputs": ROWS}, "", 415, "content type 'none'"),
    ("GET", "/invocations", None, "", 405, "use POST"),
    ("POST", "/ping", None, "", 405, "use GET"),
    ("GET", "/nowhere", None, "", 404, "no route"),
    (
        "POST",
        "/v2/models/other/infer",
        {"inputs": []},
        "application/json",
        404,
        "'other' (or that version) is not served here",
    ),
    (
        "POST",
        "/v2/models/toy/versions/9/infer",
        {"inputs": []},
        "application/json",
        404,
        "version 3",
    ),
    ("GET", "/v2/models/other", None, "", 404, "is not served here"),
    ("POST", "/v2/models/toy/infer", {"data": []}, "application/json", 400, '{"inputs"'),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": "x"}]},
        "application/json",
        400,
        "needs name, shape, datatype and data",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}]},
        "application/json",
        400,
        "not numeric",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2]}]},
        "application/json",
        400,
        "2 values for shape",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
        "application/json",
        400,
        "[rows, 3]",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": "x", "shape": "1x3", "datatype": "FP64", "data": [1, 2, 3]}]},
        "application/json",
        400,
        "shape must be a list",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {
            "inputs": [
                {"name": f, "shape": [1], "datatype": "FP64", "data": [1]}
                for f in ["alpha", "beta", "delta"]
            ]
        },
        "application/json",
        400,
        "unknown 'delta'",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
            "outputs": [{"name": "logits"}],
        },
        "application/json",
        400,
        "unknown outputs",
    ),
    ("POST", "/v2/models/toy/infer", {"inputs": ROWS}, "text/csv", 415, "application/json"),
    # issue 20: misaligned input is refused, never scored from shifted values
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": ["gamma", "alpha", "beta"], "data": [[2, 0.5, -1, 7]]}},
        "application/json",
        400,
        "rows have 4 values but columns names 3",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": ["gamma", "alpha", "beta"], "data": [[2, 0.5]]}},
        "application/json",
        400,
        "rows have 2 values but columns names 3",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": FEATURES, "data": [[2, 0.5, 1, 7]]}},
        "application/json",
        400,
        "rows have 4 values but columns names 3",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {
            "inputs": [
                {"name": f, "shape": [1], "datatype": "FP64", "data": [i]}
                for i, f in enumerate(["alpha", "beta", "gamma", "alpha"])
            ]
        },
        "application/json",
        400,
        "repeated 'alpha'",
    ),
    # issue 20: containers where names belong are a 400, not an unhashable-type 500
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": [["alpha"], "beta", "gamma"], "data": [[1, 2, 3]]}},
        "application/json",
        400,
        "column names must be strings (found list",
    ),
    (
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": [{"a": 1}, "beta", "gamma"], "data": [[1, 2, 3]]}},
        "application/json",
        400,
        "column names must be strings (found dict",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": ["FP64"], "data": [1, 2, 3]}]},
        "application/json",
        400,
        "name and datatype must be strings",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {
            "inputs": [
                {"name": [f], "shape": [1], "datatype": "FP64", "data": [1]} for f in FEATURES
            ]
        },
        "application/json",
        400,
        "name and datatype must be strings",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
            "outputs": [{"name": ["probability"]}],
        },
        "application/json",
        400,
        "outputs must be a list of",
    ),
    (
        "POST",
        "/v2/models/toy/infer",
        {
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
            "outputs": 5,
        },
        "application/json",
        400,
        "outputs must be a list of",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "kind", "status", "words"),
    BAD,
    ids=[f"{i}-{b[4]}-{b[5][:24]}" for i, b in enumerate(BAD)],
)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(
    app: App, method, path, body, kind, status, words
) -> None:
    got, out = call(app, method, path, body, kind)
    assert got == status, out
    message = out.get("message") or out.get("error")
    assert words in message, message
    if not path.startswith("/v2"):
        assert out["error_code"] in {"BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST"}
    assert call(app, "POST", "/invocations", {"inputs": ROWS})[0] == 200


def test_a_csv_field_over_the_csv_modules_limit_is_a_400(tmp_path: Path) -> None:
    """Python's csv module stops at 128 KB a field: that is the client's error, not a 500."""
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    roomy = App(bundle, Limits(max_body_bytes=1024 * 1024))
    body = "alpha,beta,gamma\n1," + "9" * (200 * 1024) + ",3\n"
    status, out = call(roomy, "POST", "/invocations", body, "text/csv")
    assert status == 400, out
    assert "CSV line 2" in out["message"] and "field larger than field limit" in out["message"]
    assert call(roomy, "POST", "/invocations", "alpha,beta,gamma\n1,2,3\n", "text/csv")[0] == 200


def test_a_misaligned_split_is_refused_where_it_was_scored_before(app: App) -> None:
    """The issue's case: reordered columns plus one extra value per row used to score the
    first three values under the wrong names; now a 400, and the aligned body still scores."""
    reordered = ["gamma", "alpha", "beta"]
    aligned = [[r[2], r[0], r[1]] for r in ROWS]
    status, out = call(
        app,
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": reordered, "data": [[*r, 0.0] for r in aligned]}},
    )
    assert status == 400 and "columns names 3" in out["message"]
    status, out = call(
        app, "POST", "/invocations", {"dataframe_split": {"columns": reordered, "data": aligned}}
    )
    assert status == 200
    np.testing.assert_allclose(out["predictions"], expected(app), atol=1e-7)


def test_missing_values_pass_when_allowed(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    lenient = App(bundle, Limits(allow_missing=True))
    status, out = call(lenient, "POST", "/invocations", {"inputs": [[1, None, 3]]})
    assert status == 200 and 0 <= out["predictions"][0] <= 1


def test_a_damaged_bundle_is_refused(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "b")
    with (path / "model.ubj").open("ab") as handle:
        handle.write(b"junk")
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_bundle(path)
    with pytest.raises(ConfigError, match="is not a model bundle"):
        load_bundle(tmp_path / "nothing")


numbers = st.floats(allow_nan=False, allow_infinity=False, width=32)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.dictionaries(
        st.sampled_from(
            ["inputs", "instances", "dataframe_split", "dataframe_records", "params", "x"]
        ),
        json_values,
        max_size=3,
    )
)
def test_any_json_gets_an_answer_never_a_500(app: App, payload: dict) -> None:
    status, _ = call(
        app,
        "POST",
        "/invocations",
        json.dumps(payload, allow_nan=False) if _finite(payload) else "{}",
    )
    assert status in {200, 400, 413}


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(numbers, min_size=3, max_size=3), min_size=1, max_size=20))
def test_any_numeric_rows_score_like_the_booster(app: App, rows: list) -> None:
    status, out = call(app, "POST", "/invocations", {"inputs": rows})
    assert status == 200
    np.testing.assert_allclose(out["predictions"], expected(app, rows), atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(
    tensors=st.lists(
        st.fixed_dictionaries(
            {
                "name": st.sampled_from([*FEATURES, "x"]),
                "shape": st.lists(st.integers(0, 4), max_size=3),
                "datatype": st.sampled_from(["FP64", "INT32", "BYTES", "BOOL"]),
                "data": st.lists(numbers | st.text(max_size=2), max_size=12),
            }
        ),
        max_size=4,
    )
)
def test_any_v2_request_gets_an_answer_never_a_500(app: App, tensors: list) -> None:
    status, _ = call(app, "POST", "/v2/models/toy/infer", {"inputs": tensors})
    assert status in {200, 400, 413}


def _finite(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except ValueError:
        return False


@pytest.fixture()
def live(tmp_path: Path):
    """The app on a loopback socket, through uvicorn and mlgate's limited httptools protocol
    (head cap 2048 bytes, read timeout 1 s), in a thread; yields the port."""
    import functools
    import socket
    import threading

    import uvicorn

    from mlgate.serving.protocol import LimitedHttpToolsProtocol

    app = App(load_bundle(make_bundle(tmp_path / "b")))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    protocol = functools.partial(LimitedHttpToolsProtocol, max_header_bytes=2048, read_timeout=1.0)
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join()
    sock.close()


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or 60 s pass: a hang fails the test)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        try:
            conn.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed mid-send: the answer (if any) is still readable or lost
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


PING = b"GET /ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"


def test_an_oversized_header_gets_431_and_ping_still_answers(live: int) -> None:
    huge = b"GET /ping HTTP/1.1\r\nhost: x\r\nx-junk: " + b"a" * (4 * 1024 * 1024) + b"\r\n\r\n"
    answer = _exchange(live, huge)
    # 431 with the setting named, or (if the client was still sending) a closed connection
    assert answer == b"" or (
        answer.startswith(b"HTTP/1.1 431") and b"serve.max_header_bytes" in answer
    ), answer[:200]
    small_over = b"GET /ping HTTP/1.1\r\nhost: x\r\nx-junk: " + b"a" * 3000 + b"\r\n\r\n"
    answer = _exchange(live, small_over)
    assert answer.startswith(b"HTTP/1.1 431") and b"serve.max_header_bytes" in answer, answer
    assert _exchange(live, PING).startswith(b"HTTP/1.1 200")


def test_a_partial_request_is_timed_out_and_ping_still_answers(live: int) -> None:
    # A head that never ends, then a body that never ends: each gets 408 and a closed
    # connection (instead of holding it forever); _exchange returns only once it is closed.
    answer = _exchange(live, b"GET /ping HTTP/1.1\r\nhost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408") and b"serve.read_timeout_seconds" in answer
    partial_body = (
        b"POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"inputs": '
    )
    answer = _exchange(live, partial_body)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert _exchange(live, PING).startswith(b"HTTP/1.1 200")
    body = json.dumps({"inputs": ROWS}).encode()
    request = (
        b"POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    answer = _exchange(live, request)
    assert answer.startswith(b"HTTP/1.1 200")
    got = json.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"]
    assert len(got) == len(ROWS) and all(0 < p < 1 for p in got)


def test_the_startup_line_names_model_version_address_workers_engine(tmp_path: Path) -> None:
    from mlgate.serving.app import startup_line

    bundle = load_bundle(make_bundle(tmp_path / "b"))
    line = startup_line(bundle, "0.0.0.0", 8080, 2)
    assert line == (
        "mlgate serve: model toy version 3 on http://0.0.0.0:8080 with 2 workers, engine compiled"
    )


# -- the fast lane (mlgate.serving.protocol): small POSTs answered without ASGI -----------------
def _post(path: str, body: bytes, content_type: str = "application/json", extra: bytes = b""):
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nhost: x\r\ncontent-type: "
        + content_type.encode()
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def _chunked(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """The same request with a chunked body: never the fast lane (uvicorn's ASGI path)."""
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nhost: x\r\ncontent-type: "
        + content_type.encode()
        + b"\r\ntransfer-encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"")
        + b"0\r\n\r\n"
    )


def _answers(raw: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, headers without the date, body) of each response in `raw`."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        size = int(fields[b"content-length"])
        fields.pop(b"date", None)
        kept = b"\r\n".join(sorted(k + b": " + v for k, v in fields.items()))
        out.append((int(lines[0].split()[1]), kept, rest[:size]))
        raw = rest[size:]
    return out


FAST_CASES = [  # (path, content type, body): good and bad, every inference format
    (
        "/invocations",
        "application/json",
        json.dumps({"dataframe_split": {"columns": FEATURES, "data": ROWS}}),
    ),
    ("/invocations?labels=true", "application/json", json.dumps({"instances": ROWS})),
    (
        "/invocations",
        "application/json",
        json.dumps({"dataframe_split": {"columns": ["alpha", "beta"], "data": ROWS}}),
    ),
    ("/invocations", "application/json", '{"inputs": [[1, 2, null]]}'),
    ("/invocations", "application/json", "{not json"),
    ("/invocations", "application/json", ""),
    ("/invocations", "text/csv", "gamma,alpha,beta\n2,0.5,-1\n"),
    ("/invocations", "text/plain", "alpha,beta,gamma\n1,2,3\n"),
    (
        "/v2/models/toy/infer",
        "application/json",
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 3],
                        "datatype": "FP64",
                        "data": [v for r in ROWS for v in r],
                    }
                ]
            }
        ),
    ),
    (
        "/v2/models/toy/versions/3/infer",
        "application/json",
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2]}]}
        ),
    ),
]


def _one_by_one(port: int, requests: list[bytes]) -> list[tuple[int, bytes, bytes]]:
    """Each request on one kept-alive connection, sent once the previous one is answered."""
    import socket

    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        for request in requests:
            conn.sendall(request)
            raw = b""
            while b"\r\n\r\n" not in raw or len(_body_of(raw)) < _length_of(raw):
                raw += conn.recv(65536)
            answers += _answers(raw)
    return answers


def _length_of(raw: bytes) -> int:
    head = raw.partition(b"\r\n\r\n")[0].lower()
    return int(head.split(b"content-length: ")[1].split(b"\r\n")[0])


def _body_of(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[2]


def test_the_fast_lane_answers_as_the_asgi_path_does(live: int, monkeypatch) -> None:
    """Each case on one kept-alive connection: once as the fast lane takes it (App.answer)
    and once chunked (uvicorn's ASGI path), interleaved; the answers are the same, byte for
    byte (bar the date), and the scored rows are the trees' probabilities."""
    taken: list[str] = []
    answer = App.answer

    def counted(self: App, route: str, path: str, *args):
        taken.append(path)
        return answer(self, route, path, *args)

    monkeypatch.setattr(App, "answer", counted)
    requests = []
    for path, kind, body in FAST_CASES:
        requests += [_post(path, body.encode(), kind), _chunked(path, body.encode(), kind)]
    answers = _one_by_one(live, requests)
    assert len(taken) == len(FAST_CASES)  # every first one took the fast lane, no other
    for i, (path, _, body) in enumerate(FAST_CASES):
        fast, slow = answers[2 * i], answers[2 * i + 1]
        assert fast == slow, (path, body, fast, slow)
        assert fast[0] in (200, 400, 415), (path, body, fast)
    trees = load_bundle(make_bundle(Path(tempfile.mkdtemp()) / "b"))
    assert json.loads(answers[0][2])["predictions"] == trees.predict(np.asarray(ROWS)).tolist()
    # pipelined behind a request on the ASGI path, the next waits its turn (uvicorn's path)
    pipelined = _answers(_exchange(live, requests[1] + requests[0] + requests[1] + PING))
    assert [a[2] for a in pipelined[:3]] == [answers[0][2]] * 3 and pipelined[3][0] == 200
    # two in one segment, each in the fast lane, answered in order
    before = len(taken)
    pipelined = _answers(_exchange(live, requests[0] + requests[2] + PING))
    assert [a[2] for a in pipelined[:2]] == [answers[0][2], answers[2][2]]
    assert len(taken) == before + 2


def test_the_fast_lane_reads_a_body_in_pieces_and_closes_when_asked(live: int) -> None:
    import socket
    import time

    body = json.dumps({"inputs": ROWS}).encode()
    with socket.create_connection(("127.0.0.1", live), timeout=60) as conn:
        request = _post("/invocations", body)
        for piece in (request[:30], request[30:-10], request[-10:]):  # head, body in parts
            conn.sendall(piece)
            time.sleep(0.05)
        conn.sendall(_post("/invocations", body, extra=b"connection: close\r\n"))
        raw = b""
        while chunk := conn.recv(65536):  # the server closes after the second answer
            raw += chunk
    first, second = _answers(raw)
    assert first[0] == second[0] == 200 and first[2] == second[2]
    assert b"connection: close" in second[1] and b"connection" not in first[1]


def test_a_served_worker_freezes_its_heap_once_started(tmp_path: Path) -> None:
    """`mlgate serve`'s app (create_app: freeze=True) moves what is alive at startup out of the
    collector's reach, so its full collections stop scanning the modules and the server."""
    import gc

    app = App(load_bundle(make_bundle(tmp_path / "b")), freeze=True)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message["type"])

    gc.unfreeze()
    try:
        asyncio.run(app({"type": "lifespan"}, receive, send))
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()  # the test process's heap back to the collector


def test_a_worker_keeps_freed_memory_for_the_next_large_request() -> None:
    """glibc's malloc accepts the thresholds that keep what a large request freed
    (memory.keep_freed_memory). They hold for the whole process, so a child sets them, not the
    test process (0.1 s: the module imports only ctypes)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mlgate.serving.memory import keep_freed_memory\n"
        "sys.exit(0 if keep_freed_memory() else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False)
    assert done.returncode == 0, "mallopt refused mlgate serve's thresholds"


def test_a_bundle_that_is_not_the_images_own_never_starts(tmp_path: Path, capsys) -> None:
    """The image sets serve.model_sha256 from the build argument its label carries; a bundle
    copied over /model later (a derived image, the label and the variable inherited) holds
    another booster, consistent with its own bundle.json: `mlgate serve` refuses to start
    (exit 7), before any worker. The oracle: hashlib on the bundle's model file."""
    import hashlib

    from mlgate.serving import app as serving
    from mlgate.serving.bundle import check_expected

    path = make_bundle(tmp_path / "b", compile=False)
    own = hashlib.sha256((path / "model.ubj").read_bytes()).hexdigest()
    other = hashlib.sha256(b"the booster the image was built for").hexdigest()
    env = {"MLGATE_SERVE_BUNDLE": str(path), "MLGATE_SERVE_MODEL_SHA256": other}
    assert serving.main(["--port", "1"], env=env) == 7
    err = capsys.readouterr().err
    assert f"booster sha256 {own[:12]}, but this image was built for {other[:12]}" in err
    assert "refusing to serve it" in err and "fix:" in err
    check_expected(load_bundle(path), own)  # its own: no error
    check_expected(load_bundle(path), None)  # a bundle served outside an image
    bad = env | {"MLGATE_SERVE_MODEL_SHA256": "abc"}
    assert serving.main(["--port", "1"], env=bad) == 2
    assert "serve.model_sha256 'abc' is not a sha256" in capsys.readouterr().err


def test_the_image_checks_its_bundle_against_its_build_argument() -> None:
    from tests.conftest import REPO

    dockerfile = (REPO / "Dockerfile").read_text()
    env = dockerfile.index("ENV MLGATE_SERVE_MODEL_SHA256=${MODEL_SHA256}")
    assert dockerfile.index("ARG MODEL_SHA256") < env < dockerfile.index("COPY bundle/ /model/")
    assert 'dev.mlgate.model.sha256="${MODEL_SHA256}"' in dockerfile  # the label, same argument
