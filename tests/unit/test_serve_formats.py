"""The request format registry (issue 22): a format is one module and one entry in FORMATS. A
format registered here, and nowhere else, is routed, content-type checked, given the shared
matrix checks and answered, scored as the booster scores; taken out, it is a 415 again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from mlgate.serving import formats
from mlgate.serving.app import App, Limits
from mlgate.serving.bundle import load_bundle
from mlgate.serving.formats.base import Format, Parsed, Request, predictions
from mlgate.serving.matrix import BadRequest, Matrices
from tests import boosters
from tests.unit.test_serve import call

NDJSON = "application/x-ndjson"


def parse_ndjson(request: Request, checks: Matrices) -> Parsed:
    """One JSON array of numbers a line (a format no module of mlgate speaks)."""
    try:
        rows = [json.loads(line) for line in request.body.decode().splitlines() if line]
    except ValueError as exc:
        raise BadRequest(f"a line is not JSON: {exc}") from None
    return Parsed(checks.matrix(rows, "NDJSON"), False)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    bundle_dir: Path = boosters.bundle(boosters.TOY, tmp_path_factory.mktemp("b") / "b")
    return App(load_bundle(bundle_dir), Limits(max_rows=10))


def test_a_format_is_one_registry_entry(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.random.default_rng(4).normal(size=(3, len(boosters.TOY.features)))
    body = "\n".join(json.dumps(r) for r in rows.tolist()) + "\n"
    status, out = call(app, "POST", "/invocations", body, NDJSON)
    assert status == 415 and "Content-Type: application/json" in out["message"]
    assert f"Content-Type: {NDJSON}" not in out["message"]

    monkeypatch.setitem(
        formats.FORMATS, ("invocations", NDJSON), Format("ndjson", parse_ndjson, predictions)
    )
    status, out = call(app, "POST", "/invocations", body, NDJSON)
    assert status == 200, out
    want = boosters.booster(boosters.TOY).predict(
        xgb.DMatrix(rows, feature_names=list(boosters.TOY.features))
    )
    np.testing.assert_allclose(out["predictions"], want, rtol=0, atol=1e-6)
    # the shared checks apply: a short row, too many rows
    status, out = call(app, "POST", "/invocations", "[1, 2]\n", NDJSON)
    assert status == 400 and "the model takes 3" in out["message"]
    status, out = call(app, "POST", "/invocations", "[1, 2, 3]\n" * 11, NDJSON)
    assert status == 413 and "serve.max_rows" in out["message"]
    # the other formats still answer as before
    status, out = call(app, "POST", "/invocations", {"inputs": rows.tolist()})
    np.testing.assert_allclose(out["predictions"], want, rtol=0, atol=1e-6)

    monkeypatch.undo()
    status, out = call(app, "POST", "/invocations", body, NDJSON)
    assert status == 415


def test_a_415_lists_each_routes_registered_content_types(app: App) -> None:
    status, out = call(app, "POST", "/invocations", "x", "text/plain")
    assert status == 415
    assert out["message"].endswith("send Content-Type: application/json or Content-Type: text/csv")
    status, out = call(app, "POST", "/v2/models/toy/infer", "x", "text/plain")
    assert status == 415
    assert out["error"].endswith(
        "send Content-Type: application/json or Content-Type: application/octet-stream"
    )
