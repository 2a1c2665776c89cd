"""settings.section_env: the variables that hand a section to a child process (the model
server's workers) read back, through load_settings, as the very same section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlgate.errors import ConfigError
from mlgate.settings import (
    MonitorSettings,
    ServeSettings,
    load_settings,
    process_env,
    section_env,
)


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("serve", ServeSettings()),
        (
            "serve",
            ServeSettings(
                bundle=Path("/model dir/b"),
                host="::1",
                port=9,
                workers=3,
                max_body_bytes=4096,
                max_rows=1,
                allow_missing=True,
                graceful_seconds=0.25,
                compiler="true",  # a string that YAML would read as a boolean
                max_header_bytes=1024,
                read_timeout_seconds=2.5,
            ),
        ),
        ("monitor", MonitorSettings()),
        (
            "monitor",
            MonitorSettings(
                log_sink="s3://bucket/prefix",
                log_endpoint_url="http://127.0.0.1:9",
                log_batch_rows=1,
                log_flush_seconds=0.5,
                drift_method="psi",
                drift_threshold=0.1,
            ),
        ),
    ],
)
def test_section_env_reads_back_as_the_same_section(section, values, tmp_path):
    env = section_env(section, values)
    # every key of the dataclass is named, none hand-listed
    assert len(env) == len(dataclasses.fields(values))
    again = load_settings(env=env, params_file=None, cwd=tmp_path)
    assert getattr(again, section) == values


def test_section_env_refuses_a_none_that_would_read_back_as_a_default():
    bad = dataclasses.replace(ServeSettings(), compiler=None)
    with pytest.raises(ConfigError, match=r"serve\.compiler is None"):
        section_env("serve", bad)


def test_serve_workers_get_the_settings_given_as_flags(tmp_path):
    """`mlgate serve --workers 2` with a relative bundle and a limit given only as a flag: the
    worker processes (which read only their environment) serve that bundle, with that limit,
    and score the booster's probabilities. The second request path: a batch over the limit."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import numpy as np
    import requests

    xgb = pytest.importorskip("xgboost")
    from mlgate.serving.bundle import write_bundle

    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3))
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2},
        xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)),
        3,
    )
    features = ["a", "b", "c"]
    write_bundle(
        tmp_path / "bundle",
        bytes(booster.save_raw("ubj")),
        name="workers",
        version="7",
        run_id="r",
        features=features,
        threshold=0.5,
        data_md5="",
        commit="",
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in process_env().items() if not k.startswith("MLGATE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlgate", "serve", "--bundle", "bundle", "--port", str(port),
         "--workers", "2", "--set", "serve.max_rows=2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a bound on the wait, not an assertion on time
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        answers = []
        for _ in range(6):  # requests spread over both workers
            r = requests.post(
                f"{url}/invocations",
                json={"dataframe_split": {"columns": features, "data": x[:2].tolist()}},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            answers.append(r.json()["predictions"])
            over = requests.post(
                f"{url}/invocations",
                json={"dataframe_split": {"columns": features, "data": x[:3].tolist()}},
                timeout=10,
            )
            assert over.status_code == 413 and "serve.max_rows is 2" in over.text, over.text
        assert requests.get(f"{url}/version", timeout=10).json()["version"] == "7"
        expected = booster.predict(xgb.DMatrix(x[:2]))
        for got in answers:
            scores = [p["probability"] if isinstance(p, dict) else p for p in got]
            np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-7)
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0, out
