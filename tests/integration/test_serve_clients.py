"""`mlgate serve` as a process, called by the standard clients with their defaults, as their docs
show them: tritonclient.http (sync and aio, binary tensor extension both ways), KServe's v2
REST client, MLflow's ScoringServerClient and curl. The oracle is the XGBoost booster read from
the bundle (not the server's scoring path). One server for the module, on a tiny model: the
module costs a few seconds."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlgate.serving.bundle import MODEL_FILE
from tests.conftest import free_port, wait_for, without_tool_variables
from tests.unit.test_serve import FEATURES, make_bundle

MODEL = "toy"  # make_bundle's name and version
VERSION = "3"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("clients") / "bundle")


def oracle(bundle_dir: Path, rows: np.ndarray) -> np.ndarray:
    """The booster's own probabilities for `rows` (xgboost, not mlgate's compiled trees)."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray((bundle_dir / MODEL_FILE).read_bytes()))
    return booster.predict(xgb.DMatrix(rows, feature_names=FEATURES))


def serve(bundle_dir: Path, log: Path, *extra: str, env: dict | None = None):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlgate", "serve", "--bundle", str(bundle_dir)]
        + ["--port", str(port), *extra],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env or without_tool_variables(),
    )
    wait_for(f"http://127.0.0.1:{port}/ping", process, 60, log)
    return process, port


def stop(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-2000:]


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory):
    log = tmp_path_factory.mktemp("clients-log") / "serve.log"
    process, port = serve(bundle_dir, log)
    yield port
    stop(process, log)


ROWS = np.random.default_rng(7).normal(size=(64, len(FEATURES)))


def test_tritonclient_http_with_its_defaults(server: int, bundle_dir: Path) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, VERSION)
    metadata = client.get_model_metadata(MODEL)
    assert [i["name"] for i in metadata["inputs"]] == FEATURES
    config = client.get_model_config(MODEL)
    assert config["name"] == MODEL and config["max_batch_size"] == 100_000
    assert client.get_model_repository_index() == [
        {"name": MODEL, "version": VERSION, "state": "READY"}
    ]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    expected = oracle(bundle_dir, ROWS)

    # The documented call: binary input (the default), no outputs named (all binary back).
    tensor = httpclient.InferInput("input-0", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer(MODEL, [tensor])
    np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-6)

    # FP32 input, both outputs requested, one in JSON and one binary.
    tensor = httpclient.InferInput("input-0", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS.astype(np.float32))
    outputs = [
        httpclient.InferRequestedOutput("probability", binary_data=False),
        httpclient.InferRequestedOutput("label"),
    ]
    result = client.infer(MODEL, [tensor], outputs=outputs, model_version=VERSION)
    expected32 = oracle(bundle_dir, ROWS.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(result.as_numpy("probability"), expected32, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), (expected32 >= 0.5).astype(np.int64))

    # One input per feature, JSON data (binary_data=False), in a shuffled order.
    tensors = []
    for i in (2, 0, 1):
        t = httpclient.InferInput(FEATURES[i], [len(ROWS)], "FP64")
        t.set_data_from_numpy(np.ascontiguousarray(ROWS[:, i]), binary_data=False)
        tensors.append(t)
    result = client.infer(MODEL, tensors)
    np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-6)

    # A wrong model name is the client's own error type, with the server's message.
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="is not served here"):
        client.infer("other", [tensor])
    client.close()


def test_tritonclient_http_aio(server: int, bundle_dir: Path) -> None:
    import tritonclient.http.aio as aioclient

    async def run() -> np.ndarray:
        client = aioclient.InferenceServerClient(url=f"127.0.0.1:{server}")
        try:
            tensor = aioclient.InferInput("input-0", list(ROWS.shape), "FP64")
            tensor.set_data_from_numpy(ROWS)
            result = await client.infer(MODEL, [tensor])
            return result.as_numpy("probability")
        finally:
            await client.close()

    np.testing.assert_allclose(asyncio.run(run()), oracle(bundle_dir, ROWS), atol=1e-6)


def test_kserve_v2_rest_client(server: int, bundle_dir: Path) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    expected = oracle(bundle_dir, ROWS)

    async def run(binary: bool):
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            tensor = InferInput(name="input-0", shape=list(ROWS.shape), datatype="FP64")
            tensor.set_data_from_numpy(ROWS, binary_data=binary)
            request = InferRequest(model_name=MODEL, infer_inputs=[tensor])
            assert await client.is_server_ready(f"http://127.0.0.1:{server}")
            assert await client.is_model_ready(f"http://127.0.0.1:{server}", MODEL)
            response = await client.infer(f"http://127.0.0.1:{server}", request, MODEL)
            return response.outputs[0].as_numpy()
        finally:
            await client.close()

    for binary in (True, False):  # set_data_from_numpy's default, then JSON
        np.testing.assert_allclose(asyncio.run(run(binary)), expected, atol=1e-6)


def test_mlflow_scoring_client_and_curl(server: int, bundle_dir: Path) -> None:
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame = pd.DataFrame(ROWS, columns=FEATURES)
    expected = oracle(bundle_dir, ROWS)
    client = ScoringServerClient("127.0.0.1", server)
    got = client.invoke(frame).get_predictions()
    np.testing.assert_allclose(np.asarray(got).ravel(), expected, atol=1e-6)

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)})
    done = subprocess.run(
        [curl, "-sS", "-H", "Content-Type: application/json", "--data-binary", "@-"]
        + [f"http://127.0.0.1:{server}/invocations"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    np.testing.assert_allclose(json.loads(done.stdout)["predictions"], expected, atol=1e-6)
    done = subprocess.run(
        [curl, "-sS", "-H", "Content-Type: text/csv", "--data-binary", "@-"]
        + [f"http://127.0.0.1:{server}/invocations"],
        input=frame.to_csv(index=False),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    np.testing.assert_allclose(json.loads(done.stdout)["predictions"], expected, atol=1e-6)
    # curl's own default for -d is application/x-www-form-urlencoded: a 415 naming the fix
    done = subprocess.run(
        [curl, "-sS", "-w", "\n%{http_code}", "-d", body, f"http://127.0.0.1:{server}/invocations"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer, status = done.stdout.rsplit("\n", 1)
    assert status == "415" and "Content-Type: application/json" in json.loads(answer)["message"]


def test_oip_limits_count_rows_not_values(server: int, bundle_dir: Path) -> None:
    # 40,000 rows of 3 features: 120,000 values, over serve.max_rows (100,000) if values counted
    rows = np.random.default_rng(1).normal(size=(40_000, len(FEATURES)))
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server}", network_timeout=120)
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    got = client.infer(MODEL, [tensor]).as_numpy("probability")
    np.testing.assert_allclose(got, oracle(bundle_dir, rows), atol=1e-6)
    client.close()
