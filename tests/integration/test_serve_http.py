"""`mlgate bundle` and `mlgate serve` as processes: a version exported from the real MLflow
registry, served over HTTP by uvicorn, answers MLflow's own scoring client with the registry
model's probabilities, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import mlflow
import numpy as np
import requests

from mlgate.pipeline import export
from tests.conftest import free_port, wait_for
from tests.integration.test_gate import WEAK, Registry


def test_an_exported_version_served_over_http(
    tmp_path, mlflow_server, clean_env, breast_cancer
) -> None:
    from tests.conftest import make_project

    models = Registry(make_project(tmp_path / "project"), mlflow_server, clean_env)
    version = models.train(*WEAK)
    out = tmp_path / "bundle"
    assert (
        export.main([*models.args(), "--version", version, "--out", str(out)], env=clean_env) == 0
    )
    compiled = json.loads((out / "bundle.json").read_text())["compiled"]
    assert (out / compiled["file"]).is_file() and compiled["parity"]["max_abs_diff"] <= 1e-6
    assert compiled["parity"]["rows"] > 4000, "the logged input example is checked too"
    frame = breast_cancer.drop(columns=["diagnosis"]).head(40)
    expected = mlflow.pyfunc.load_model(f"models:/{models.model}/{version}").predict(frame)

    port = free_port()
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlgate", "serve", "--bundle", str(out), "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=clean_env,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, 60, log)
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient

        got = ScoringServerClient("127.0.0.1", port).invoke(frame).get_predictions()
        np.testing.assert_allclose(np.asarray(got).ravel(), expected, atol=1e-6)
        csv = frame.to_csv(index=False)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            data=csv,
            timeout=10,
            headers={"Content-Type": "text/csv"},
        )
        np.testing.assert_allclose(answer.json()["predictions"], expected, atol=1e-6)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'mlgate_requests_total{route="invocations",status="200"} 2.0' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()[-2000:]


def test_serve_refuses_a_directory_that_is_not_a_bundle(tmp_path, clean_env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", "serve", "--bundle", str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "is not a model bundle" in done.stderr and "mlgate bundle" in done.stderr
