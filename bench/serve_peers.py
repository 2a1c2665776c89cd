"""`make bench ONLY=peers`: mlgate's model server against MLServer (mlserver + mlserver-xgboost,
the same booster file, one worker) and `mlflow models serve`, side by side, interleaved: each
repetition asks every server in turn, so a slow moment of the shared machine hits all of them.

Figures (issue 20):
  peers-1row            single-row OIP v2 requests at 8 connections (wrk), mlgate vs MLServer
  peers-batch-mlserver  one request of 10,000 rows, rows/s: mlgate (OIP JSON, flat FP64, the
                        body MLServer gets) vs MLServer                       goal ≥ 2x
  peers-batch-binary    the same rows as OIP binary tensors (tritonclient's default) vs
                        MLServer's JSON                                       goal ≥ 2x
  peers-batch-mlflow    mlgate's dataframe_split vs `mlflow models serve`'s   goal ≥ 10x
  peers-batch-decode    mlgate's 10,000-row dataframe_split end to end vs orjson decoding
                        the same body alone                                   goal ≤ 1.5x

MLServer lives in a venv of its own (its pins clash with mlflow's): MLSERVER_BIN names its
`mlserver` executable, else one is made under bench/out/mlserver-venv with uv
(mlserver==1.7.1, mlserver-xgboost==1.7.1, xgboost-cpu).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

MLSERVER_VERSION = "1.7.1"
ROWS = 10_000


def mlserver_bin(out: Path, quick: bool) -> Path | None:
    """MLServer's executable; None in quick mode when it is not installed yet (the quick run
    is the test suite's: it does not download MLServer)."""
    given = os.environ.get("MLSERVER_BIN")
    if given:
        return Path(given)
    venv = out / "mlserver-venv"
    exe = venv / "bin" / "mlserver"
    if not exe.exists() and quick:
        return None
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        subprocess.run(
            [uv, "pip", "install", "--python", str(venv / "bin" / "python")]
            + [f"mlserver=={MLSERVER_VERSION}", f"mlserver-xgboost=={MLSERVER_VERSION}"]
            + ["xgboost-cpu"],
            check=True,
        )
    return exe


def mlserver_folder(root: Path, booster_file: Path, model: str, ports: list[int]) -> Path:
    """MLServer's settings: one process (parallel_workers 0), the booster file as is."""
    (root / model).mkdir(parents=True)
    http, grpc, metrics = ports
    (root / "settings.json").write_text(
        json.dumps(
            {
                "http_port": http,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "parallel_workers": 0,
                "host": "127.0.0.1",
            }
        )
    )
    shutil.copy(booster_file, root / model / "model.ubj")
    (root / model / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model,
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": "./model.ubj", "version": "1"},
            }
        )
    )
    return root


def oip_json(rows: np.ndarray) -> bytes:
    import orjson

    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP64"}
    return orjson.dumps({"inputs": [tensor | {"data": rows.ravel().tolist()}]})


def oip_binary(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The body tritonclient.http sends by default: JSON header, then the raw FP64 values."""
    raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    answer = requests.post(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, timeout=300
    )
    elapsed = time.perf_counter() - start
    answer.raise_for_status()
    return elapsed


def peer_figures(frame, bundle: Path, store: Path, version: str, quick: bool, env, out: Path):
    """The figures above, as bench.run.Figure rows."""
    import orjson
    import run as bench  # bench/run.py: its servers, wrk and Figure

    reps = 3 if quick else 7
    seconds = 2 if quick else 10
    rows = frame.head(ROWS).to_numpy()
    single_v2 = oip_json(rows[:1])
    batch_v2 = oip_json(rows)
    batch_bin, bin_headers = oip_binary(rows)
    split = orjson.dumps(
        {"dataframe_split": {"columns": list(frame.columns), "data": rows.tolist()}}
    )
    exe = mlserver_bin(out, quick)
    if exe is None:
        print("peers: skipped (quick mode, no MLServer: set MLSERVER_BIN)", flush=True)
        return []
    times: dict[str, list[float]] = {
        k: [] for k in ("json", "binary", "split", "mlserver", "mlflow", "decode")
    }
    single: dict[str, list[float]] = {"mlgate": [], "mlserver": []}
    with tempfile.TemporaryDirectory(prefix="mlgate-peers-") as tmp:
        ports = [bench.free_port() for _ in range(3)]
        folder = mlserver_folder(Path(tmp) / "mlserver", bundle / "model.ubj", bench.MODEL, ports)
        mlserver = bench.server(
            [str(exe), "start", str(folder)],
            ports[0],
            env | {"PATH": f"{exe.parent}{os.pathsep}{env.get('PATH', '')}"},
            "0",
            ready="/v2/health/ready",
            seconds=240,
        )
        ours = bench.mlgate_server(bundle, bench.free_port(), 1, "0", env)
        theirs = bench.mlflow_server(store, version, bench.free_port(), 1, "0", env)
        with mlserver as m_url, ours as g_url, theirs as f_url:
            g_infer = f"{g_url}/v2/models/{bench.MODEL}/infer"
            m_infer = f"{m_url}/v2/models/{bench.MODEL}/infer"
            _same_answers(g_infer, m_infer, batch_v2, batch_bin, bin_headers)
            for _ in range(reps):  # interleaved: every server once per repetition
                times["json"].append(_post(g_infer, batch_v2))
                times["binary"].append(_post(g_infer, batch_bin, bin_headers))
                times["mlserver"].append(_post(m_infer, batch_v2))
                times["split"].append(_post(f"{g_url}/invocations", split))
                times["mlflow"].append(_post(f"{f_url}/invocations", split))
                times["decode"].append(bench._timed(lambda: orjson.loads(split)))
            for _ in range(max(1, reps // 2)):
                single["mlgate"].append(bench.wrk(g_infer, single_v2, 8, seconds, "1")["rps"])
                single["mlserver"].append(bench.wrk(m_infer, single_v2, 8, seconds, "1")["rps"])

    def rate(key: str) -> list[float]:
        return [ROWS / t for t in times[key]]

    med = bench.median
    figures = [
        bench.Figure(
            "peers-1row",
            "single-row OIP v2 requests/s at 8 connections, one worker each",
            med(single["mlgate"]),
            med(single["mlserver"]),
            "req/s",
            "> 1×",
            med(single["mlgate"]) > med(single["mlserver"]),
            single["mlgate"],
            single["mlserver"],
        )
    ]
    for name, key, peer, goal, what in (
        ("peers-batch-mlserver", "json", "mlserver", 2, "OIP JSON flat FP64, vs MLServer"),
        ("peers-batch-binary", "binary", "mlserver", 2, "OIP binary tensors, vs MLServer JSON"),
        ("peers-batch-mlflow", "split", "mlflow", 10, "dataframe_split, vs mlflow models serve"),
    ):
        ours, theirs = rate(key), rate(peer)
        figures.append(
            bench.Figure(
                name,
                f"rows/s for one request of {ROWS:,} rows: {what}",
                med(ours),
                med(theirs),
                "rows/s",
                f"≥ {goal}×",
                med(ours) / med(theirs) >= goal,
                ours,
                theirs,
            )
        )
    figures.append(
        bench.Figure(
            "peers-batch-decode",
            f"{ROWS:,}-row dataframe_split end to end vs orjson decoding the body alone (s)",
            med(times["split"]),
            med(times["decode"]),
            "s",
            "≤ 1.5×",
            med(times["split"]) / med(times["decode"]) <= 1.5,
            times["split"],
            times["decode"],
        )
    )
    return figures


def _same_answers(g_infer: str, m_infer: str, batch_v2: bytes, batch_bin: bytes, headers) -> None:
    """mlgate (JSON and binary) and MLServer answer the same probabilities (1e-6): the same
    booster, so the comparison is of like with like."""
    theirs = requests.post(m_infer, data=batch_v2, timeout=300)
    theirs.raise_for_status()
    expected = np.asarray(theirs.json()["outputs"][0]["data"], dtype=np.float64).ravel()
    ours = requests.post(g_infer, data=batch_v2, timeout=300).json()["outputs"][0]["data"]
    answer = requests.post(g_infer, data=batch_bin, headers=headers, timeout=300)
    length = int(answer.headers["Inference-Header-Content-Length"])
    binary = np.frombuffer(answer.content[length:], dtype="<f8")
    for got in (np.asarray(ours), binary):
        worst = float(np.max(np.abs(got - expected)))
        if worst > 1e-6:
            raise AssertionError(f"mlgate and MLServer differ by {worst} on the same booster")
