"""`make bench`: mlgate against what a user would use instead, side by side in one run.

Every figure is a ratio of two things measured here, now, on the same data and model, because
absolute times on a shared machine drift from run to run. Each is the median of several
repetitions, reported with min and max. Load comes from wrk (bounded in time, loopback only).

Figures (see README "Benchmarks"; issue 8 lists the goals):
  serve-1w / serve-all   single-row POST /invocations at 8 connections, mlgate vs
                         `mlflow models serve` of the same version (one worker pinned to a core,
                         load generator on another; then every core)
  serve-1conn            the same at 1 connection: p50 and p99
  serve-cpu              the server's CPU µs per request in serve-1w (every process of it)
  oip-v2                 single-row POST /v2/models/NAME/infer vs MLflow's /invocations
  batch-10k              one request of 10,000 rows: rows/s vs MLflow, and time vs orjson alone
                         decoding the same body (decoding is the floor)
  startup                `mlgate --help` wall time (imports are paid by every workflow step)
  register               log + register with lineage tags vs log_model(registered_model_name=)
  gate                   metrics, slices and DeLong on 1,000,000 holdout rows
  steps                  promote, evaluate, train on the demo data: whole processes, each also
                         beside its floor (MLflow's client; + xgboost, pandas), against one
                         `mlflow server` started for the run (issue 18; bench/steps.py)
  train-user             `mlgate train` vs a typical user script (bench/user-script.py), whole
                         processes, 1,000,000 x 50, both on mlgate's split of the rows (group
                         "train")
  setup                  the setup action's install step, warm uv cache, vs plain pip (warm)
  serve-log              serve-1w with the prediction log on vs off (every answer logged)
  image-size / cold-start  the serving image vs an image from the same base serving the same
                         version with `mlflow models serve`: size, and container start to first
                         answer (needs a Docker engine and --base-image; not in quick mode)
  parity                 the served probabilities equal the registry model's (to 1e-6)
  dask-train / dask-train-shards / dask-train-extmem / dask-rss / dask-scale / dask-gate
                         train.engine dask on a LocalCluster vs the local engine (xgboost.dask
                         on a shared file; a version's shards that fit, trained in memory as
                         dask.training auto chooses; the same forced into external memory); the
                         runner's peak RSS of `mlgate train` at 16x vs 1x
                         rows; its time vs rows; the gate on 10,000,000 holdout rows
                         (bench/dask_engine.py; not in --smoke)

Usage: python bench/run.py [--quick | --smoke] [--only GROUP,...] [--base-image REF] [--out DIR]
[--steps-store server|sqlite];
writes DIR/results.json and DIR/results.md. --smoke runs each group once on tiny sizes (the test
suite's check that the harness works; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/steps.py
import steps

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FEATURES = 85  # a Caravan-style insurance table: 85 small integer-coded columns
TREES, DEPTH = 200, 6
MODEL = "bench-caravan"


@dataclass
class Figure:
    name: str
    what: str
    mlgate: float
    alternative: float | None
    unit: str
    goal: str
    met: bool | None
    runs: list[float] = field(default_factory=list)
    alternative_runs: list[float] = field(default_factory=list)
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.alternative in (None, 0):
            return None
        return self.mlgate / self.alternative


def median(values: list[float]) -> float:
    return statistics.median(values)


def div(a: float, b: float) -> float:
    """a / b; infinite when b is 0 (a server that answered nothing in a short smoke load)."""
    return a / b if b else float("inf")


def spread(values: list[float]) -> str:
    return f"{min(values):,.4g}–{max(values):,.4g}" if len(values) > 1 else ""


# -- the model -----------------------------------------------------------------------------
def caravan(rows: int, seed: int = 0):
    """Seeded data shaped like the Caravan insurance table: 85 integer-coded columns."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, size=(rows, FEATURES)).astype(np.float64)
    logit = 0.35 * x[:, 0] - 0.25 * x[:, 4] + 0.15 * x[:, 42] - 0.1 * x[:, 60] - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(FEATURES)]), y


def register(store: Path, smoke: bool = False):
    """Train the named shape and register it in a local MLflow store; return the version."""
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature

    frame, y = caravan(2_000 if smoke else 20_000)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": DEPTH, "eta": 0.1, "nthread": 2},
        xgb.DMatrix(frame, label=y),
        num_boost_round=20 if smoke else TREES,
    )
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(frame, booster.predict(xgb.DMatrix(frame.head(5)))),
            model_format="ubj",
            pip_requirements=["xgboost"],
            registered_model_name=MODEL,
        )
    return frame, info.registered_model_version


# -- servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(
    args: list[str],
    port: int,
    env: dict[str, str],
    cpus: str | None,
    ready: str = "/ping",
    seconds: float = 180,
) -> Iterator[str]:
    prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-server-") as tmp:
        url = f"http://127.0.0.1:{port}"
        with steps.running([*prefix, *args], url, ready, env, Path(tmp) / "server.log", seconds):
            yield url


def mlgate_server(bundle: Path, port: int, workers: int, cpus: str | None, env):
    return server(
        [
            str(BIN / "mlgate"),
            "serve",
            "--bundle",
            str(bundle),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        port,
        env,
        cpus,
    )


def mlflow_server(store: Path, version: str, port: int, workers: int, cpus: str | None, env):
    env = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
    return server(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/{version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workers),
        ],
        port,
        env,
        cpus,
    )


# -- load ---------------------------------------------------------------------------------
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


def listener_group(port: int) -> int | None:
    """The process group of the process listening on 127.0.0.1:`port` (Linux /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with suppress(OSError):
            if os.readlink(fd) in inodes:
                return os.getpgid(int(fd.parts[2]))
    return None


def group_cpu(group: int) -> float:
    """CPU seconds (user + system) of every process in process group `group` so far."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wrk(url: str, body: bytes, connections: int, seconds: int, cpus: str | None) -> dict:
    """wrk's figures for POSTing `body` to `url`, plus `cpu_us`: the server's CPU microseconds
    (user + system, every process of its group) per answered request, which the other
    processes on a shared machine move far less than the rates and latencies."""
    group = listener_group(int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    before = group_cpu(group) if group is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.json").write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(LUA.format(body=Path(tmp) / "body.json"))
        prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
        done = subprocess.run(
            [
                *prefix,
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error answers under load:\n{out}")
    latency = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M)}
    answered = int(re.search(r"(\d+) requests in", out).group(1))
    cpu_us = (
        1e6 * (group_cpu(group) - before) / answered
        if group is not None and before is not None and answered
        else None
    )
    return {
        "rps": rps,
        "p50": latency.get("50"),
        "p99": latency.get("99"),
        "requests": answered,
        "cpu_us": cpu_us,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


# -- figures ------------------------------------------------------------------------------
def repeat(times: int, measure: Callable[[], dict]) -> list[dict]:
    return [measure() for _ in range(times)]


def serving_figures(frame, bundle, store, version, quick: bool, env, smoke=False) -> list[Figure]:
    import orjson

    cores = os.cpu_count() or 1
    seconds, reps = (1, 1) if smoke else (2, 2) if quick else (10, 3)
    row = frame.head(1)
    single = orjson.dumps(
        {"dataframe_split": {"columns": list(row.columns), "data": row.to_numpy().tolist()}}
    )
    v2 = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, FEATURES],
                    "datatype": "FP64",
                    "data": row.to_numpy().ravel().tolist(),
                }
            ]
        }
    )
    big = frame.head(10_000)
    batch = orjson.dumps(
        {"dataframe_split": {"columns": list(big.columns), "data": big.to_numpy().tolist()}}
    )
    figures: list[Figure] = []
    results: dict[str, dict[str, list[dict]]] = {}
    plans = [("1w", 1, "0", "1")]
    if cores > 1 and not smoke:
        plans.append(("all", cores, None, None))
    for label, workers, server_cpus, load_cpus in plans:
        for tool in ("mlgate", "mlflow"):
            port = free_port()
            start = (
                mlgate_server(bundle, port, workers, server_cpus, env)
                if tool == "mlgate"
                else mlflow_server(store, version, port, workers, server_cpus, env)
            )
            with start as url:
                runs = results.setdefault(label, {}).setdefault(tool, [])
                for _ in range(reps):
                    runs.append(wrk(url + "/invocations", single, 8, seconds, load_cpus))
                if label == "1w":
                    conn1 = repeat(
                        reps,
                        lambda u=url, c=load_cpus: wrk(u + "/invocations", single, 1, seconds, c),
                    )
                    results.setdefault("1conn", {})[tool] = conn1
                    if tool == "mlgate":
                        results["v2"] = {
                            "mlgate": repeat(
                                reps,
                                lambda u=url, c=load_cpus: wrk(
                                    f"{u}/v2/models/{MODEL}/infer", v2, 8, seconds, c
                                ),
                            )
                        }
                        parity(url, frame.head(2000), version)
                    results.setdefault("batch", {})[tool] = repeat(
                        reps, lambda u=url: {"seconds": _post(u + "/invocations", batch)}
                    )
            if label == "1w" and tool == "mlgate":
                results["log"] = logged_serving(bundle, single, reps, seconds, env, plans[0])
    for label, goal_ratio in (("1w", 150), ("all", 250)):
        if label not in results:
            continue
        ours = [r["rps"] for r in results[label]["mlgate"]]
        theirs = [r["rps"] for r in results[label]["mlflow"]]
        p99 = median([r["p99"] for r in results[label]["mlgate"]])
        ratio = div(median(ours), median(theirs))
        figures.append(
            Figure(
                f"serve-{label}",
                f"single-row req/s at 8 connections, "
                f"{'1 worker pinned' if label == '1w' else f'{cores} workers'} (p99 {p99:.2f} ms)",
                median(ours),
                median(theirs),
                "req/s",
                f"≥ {goal_ratio}× and p99 ≤ 3 ms",
                ratio >= goal_ratio and p99 <= 3,
                ours,
                theirs,
            )
        )
    cpu = {
        tool: [r["cpu_us"] for r in results["1w"][tool] if r["cpu_us"] is not None]
        for tool in ("mlgate", "mlflow")
    }
    v2_cpu = [r["cpu_us"] for r in results["v2"]["mlgate"] if r["cpu_us"] is not None]
    if cpu["mlgate"] and cpu["mlflow"]:
        figures.append(
            Figure(
                "serve-cpu",
                "server CPU µs (user + system, all its processes) per single-row request, "
                "1 worker, 8 connections" + (f"; OIP v2 {median(v2_cpu):.0f} µs" if v2_cpu else ""),
                median(cpu["mlgate"]),
                median(cpu["mlflow"]),
                "µs",
                "report",
                None,
                cpu["mlgate"],
                cpu["mlflow"],
            )
        )
    ours1 = results["1conn"]["mlgate"]
    theirs1 = results["1conn"]["mlflow"]
    figures.append(
        Figure(
            "serve-1conn",
            "single-row p50 at 1 connection (ms), mlgate vs MLflow",
            median([r["p50"] for r in ours1]),
            median([r["p50"] for r in theirs1]),
            "ms",
            "report",
            None,
            [r["p50"] for r in ours1],
            [r["p50"] for r in theirs1],
            notes=f"p99 {median([r['p99'] for r in ours1]):.2f} vs "
            f"{median([r['p99'] for r in theirs1]):.2f} ms",
        )
    )
    v2_rps = [r["rps"] for r in results["v2"]["mlgate"]]
    mlflow_1w = [r["rps"] for r in results["1w"]["mlflow"]]
    v2_p99 = median([r["p99"] for r in results["v2"]["mlgate"]])
    figures.append(
        Figure(
            "oip-v2",
            f"OIP v2 infer req/s, 1 worker, 8 connections (p99 {v2_p99:.2f} ms) vs "
            "MLflow /invocations",
            median(v2_rps),
            median(mlflow_1w),
            "req/s",
            "≥ 150× and p99 ≤ 3 ms",
            div(median(v2_rps), median(mlflow_1w)) >= 150 and v2_p99 <= 3,
            v2_rps,
            mlflow_1w,
        )
    )
    with_log = [r["rps"] for r in results["log"]["runs"]]
    without = [r["rps"] for r in results["1w"]["mlgate"]]
    # the server's CPU per request, log on and off: what the load of a shared machine moves
    # least (the rates are measured minutes apart)
    log_cpu = [r["cpu_us"] for r in results["log"]["runs"] if r["cpu_us"] is not None]
    log_note = (
        f"server CPU {median(log_cpu):.0f} vs {median(cpu['mlgate']):.0f} µs per request "
        f"({median(cpu['mlgate']) / median(log_cpu):.3g}×)"
        if log_cpu and cpu["mlgate"]
        else ""
    )
    figures.append(
        Figure(
            "serve-log",
            "single-row req/s, 1 worker, 8 connections, prediction log on vs off "
            f"({results['log']['rows']} rows logged, every answer)",
            median(with_log),
            median(without),
            "req/s",
            "≥ 0.9×",
            div(median(with_log), median(without)) >= 0.9,
            with_log,
            without,
            notes=log_note,
        )
    )
    ours_b = [len(big) / r["seconds"] for r in results["batch"]["mlgate"]]
    theirs_b = [len(big) / r["seconds"] for r in results["batch"]["mlflow"]]
    figures.append(
        Figure(
            "batch-10k",
            f"rows/s for one request of {len(big):,} rows",
            median(ours_b),
            median(theirs_b),
            "rows/s",
            "≥ 10×",
            div(median(ours_b), median(theirs_b)) >= 10,
            ours_b,
            theirs_b,
        )
    )
    decode = [_timed(lambda: orjson.loads(batch)) for _ in range(5)]
    end_to_end = [r["seconds"] for r in results["batch"]["mlgate"]]
    figures.append(
        Figure(
            "batch-vs-decode",
            f"{len(big):,}-row request end to end vs orjson decoding the body alone (s)",
            median(end_to_end),
            median(decode),
            "s",
            "≤ 1.5×",
            div(median(end_to_end), median(decode)) <= 1.5,
            end_to_end,
            decode,
        )
    )
    return figures


def logged_serving(bundle: Path, body: bytes, reps: int, seconds: int, env, plan) -> dict:
    """The pinned one-worker server again, with the prediction log writing to a directory:
    its throughput, and a check that every answered request was logged (the server writes what
    waits when it stops)."""
    import gzip

    _, _, server_cpus, load_cpus = plan
    with tempfile.TemporaryDirectory() as sink:
        logged_env = env | {"MLGATE_MONITOR_LOG_SINK": sink}
        with mlgate_server(bundle, free_port(), 1, server_cpus, logged_env) as url:
            runs = repeat(reps, lambda: wrk(url + "/invocations", body, 8, seconds, load_cpus))
        rows = sum(
            len(json.loads(line)["data"])
            for path in Path(sink).rglob("*.jsonl.gz")
            for line in gzip.decompress(path.read_bytes()).splitlines()
        )
    answered = sum(r["requests"] for r in runs)
    if rows < answered:
        raise RuntimeError(f"the prediction log holds {rows} rows for {answered} answers")
    return {"runs": runs, "rows": rows}


def image_figures(frame, store: Path, version: str, args) -> list[Figure]:
    """Figure 7: mlgate's serving image against one from the same base that serves the same
    version with `mlflow models serve` (base + mlflow + the model's requirements, installed the
    same way: a venv from a hashed lock without bytecode caches, copied into a clean stage;
    the model's requirements are xgboost-cpu, as in ours). Sizes as Docker reports
    them; cold start from `container.start()` to the first answered request (the container is
    created first, so the storage driver's copy of the image is not counted)."""
    if args.quick:
        return []
    try:
        import docker

        engine = docker.from_env()
        engine.images.get(args.base_image)
    except Exception as exc:  # no engine, or no base image: say so, and go on without them
        print(f"image figures skipped: {type(exc).__name__}: {exc}", flush=True)
        return []
    import mlflow

    from mlgate.pipeline import deploy
    from mlgate.settings import load_settings

    tags = {"mlgate": f"mlgate-bench/serve:v{version}", "mlflow": f"mlgate-bench/mlflow:v{version}"}
    with tempfile.TemporaryDirectory(prefix="mlgate-images-") as tmp:
        ours, theirs = Path(tmp) / "mlgate", Path(tmp) / "mlflow"
        ours.mkdir()
        theirs.mkdir()
        serve_lock = ROOT / "requirements-serve.lock"
        settings = load_settings(
            env={},
            params_file=None,
            overrides=[
                f"model.name={MODEL}",
                f"tracking.uri=sqlite:///{store}/mlflow.db",
                f"deploy.wheels_dir={_wheels(serve_lock, 'serve')}",
            ],
        )
        deploy.build_context(settings, mlflow.MlflowClient(), version, ROOT, ours)
        lock = theirs / "requirements.txt"
        lock.write_text(_mlflow_lock())
        shutil.copytree(
            _wheels(lock, "mlflow"), theirs / "wheels", ignore=shutil.ignore_patterns(".*")
        )
        (theirs / "Dockerfile").write_text(MLFLOW_DOCKERFILE)
        mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/{version}", dst_path=str(theirs / "model")
        )
        for name, context in (("mlgate", ours), ("mlflow", theirs)):
            print(f"building the {name} image ...", flush=True)
            engine.images.build(
                path=str(context),
                tag=tags[name],
                buildargs={"BASE_IMAGE": args.base_image, "PIP_OFFLINE": "1"},
                rm=True,
                forcerm=True,
                pull=False,
            )
    size = {name: engine.images.get(tag).attrs["Size"] / 1e6 for name, tag in tags.items()}
    base = engine.images.get(args.base_image).attrs["Size"] / 1e6
    row = frame.head(1)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.to_numpy().tolist()}}
    starts: dict[str, list[float]] = {"mlgate": [], "mlflow": []}
    for _ in range(3):
        for name in ("mlgate", "mlflow"):
            starts[name].append(_cold_start(engine, tags[name], name, body))
    ratio = size["mlgate"] / size["mlflow"]
    return [
        Figure(
            "image-size",
            f"serving image size vs the same base + mlflow + the model's requirements serving "
            f"the same version (MB; on top of a {base:.0f} MB base, mlgate adds "
            f"{size['mlgate'] - base:.0f} MB and MLflow {size['mlflow'] - base:.0f})",
            size["mlgate"],
            size["mlflow"],
            "MB",
            "≤ 0.3×",
            ratio <= 0.3,
            [size["mlgate"]],
            [size["mlflow"]],
        ),
        Figure(
            "cold-start",
            "container start to first answered single-row request (s), mlgate vs MLflow image",
            median(starts["mlgate"]),
            median(starts["mlflow"]),
            "s",
            "≤ 2 s",
            median(starts["mlgate"]) <= 2,
            starts["mlgate"],
            starts["mlflow"],
        ),
    ]


def _wheels(lock: Path, name: str) -> Path:
    from mlgate.pipeline.deploy import download_wheels

    return download_wheels(lock, ROOT / ".cache", name)


def _mlflow_lock() -> str:
    """mlflow and the model's requirements at the versions installed here, resolved for Linux
    with hashes (what `mlflow models build-docker` would install, without its conda layer)."""
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        wanted = Path(tmp) / "in.txt"
        wanted.write_text(f"mlflow=={version('mlflow')}\nxgboost-cpu=={version('xgboost-cpu')}\n")
        subprocess.run(
            [
                str(BIN / "uv"),
                "pip",
                "compile",
                str(wanted),
                "--python-version",
                "3.11",
                "--python-platform",
                "x86_64-manylinux_2_28",
                "--generate-hashes",
                "--quiet",
                "-o",
                str(Path(tmp) / "lock.txt"),
            ],
            check=True,
            capture_output=True,
            timeout=300,
            env=os.environ | {"UV_SYSTEM_CERTS": "1"},
        )
        return (Path(tmp) / "lock.txt").read_text()


def _cold_start(engine, tag: str, name: str, body: dict) -> float:
    port = free_port()
    if name == "mlgate":
        container = engine.containers.create(
            tag,
            network_mode="host",
            read_only=True,
            environment={"MLGATE_SERVE_PORT": str(port)},
        )
    else:
        container = engine.containers.create(tag, command=["-p", str(port)], network_mode="host")
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        start = time.perf_counter()
        container.start()
        deadline = start + 300
        while time.perf_counter() < deadline:
            try:
                if requests.post(url, json=body, timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{tag} did not answer:\n{container.logs().decode()[-3000:]}")
    finally:
        container.remove(force=True)


def parity(url: str, frame, version: str) -> None:
    """The served probabilities equal the booster's (the registry model's) to 1e-6."""
    import mlflow

    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(frame)
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
    got = requests.post(url + "/invocations", json=body, timeout=60).json()["predictions"]
    worst = float(np.max(np.abs(np.asarray(got) - np.asarray(expected))))
    if worst > 1e-6:
        raise AssertionError(f"served probabilities differ from the registry model by {worst}")


def _post(url: str, body: bytes) -> float:
    start = time.perf_counter()
    answer = requests.post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=300
    )
    elapsed = time.perf_counter() - start
    answer.raise_for_status()
    return elapsed


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def registration_figure(store: Path, quick: bool, smoke: bool = False) -> Figure:
    """mlgate's registration (explicit pinned requirements, then one create_model_version with
    every lineage tag, deleted again on failure) vs log_model(registered_model_name=...) with
    MLflow's default requirement inference."""
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature

    from mlgate.pipeline import lineage
    from mlgate.registry import tracking

    frame, y = caravan(2_000, seed=1)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(frame, label=y),
        num_boost_round=20,
    )
    signature = infer_signature(frame, booster.predict(xgb.DMatrix(frame.head(5))))
    client = mlflow.MlflowClient()
    tags = {f"mlgate.bench.tag_{i:02d}": "x" * 40 for i in range(30)}  # as many as train sets
    reps = 1 if smoke else 2 if quick else 5

    def ours() -> float:
        start = time.perf_counter()
        with mlflow.start_run() as run:
            info = mlflow.xgboost.log_model(
                booster,
                name="model",
                signature=signature,
                input_example=frame.head(3),
                pip_requirements=lineage.serving_requirements(),
                model_format="ubj",
            )
            tracking.register(
                client,
                name="bench-register-mlgate",
                description="bench",
                model_uri=info.model_uri,
                model_id=info.model_id,
                run_id=run.info.run_id,
                tags=tags,
            )
        return time.perf_counter() - start

    def theirs() -> float:
        start = time.perf_counter()
        with mlflow.start_run():
            mlflow.xgboost.log_model(
                booster,
                name="model",
                signature=signature,
                input_example=frame.head(3),
                model_format="ubj",
                registered_model_name="bench-register-mlflow",
            )
        return time.perf_counter() - start

    if not smoke:
        ours(), theirs()  # warm both paths (imports, first registry calls)
    mine = [ours() for _ in range(reps)]
    alt = [theirs() for _ in range(reps)]
    return Figure(
        "register",
        "log + register a version with its lineage tags vs "
        "log_model(registered_model_name=...) with requirement inference (s)",
        median(mine),
        median(alt),
        "s",
        "≤ 2 s",
        median(mine) <= 2,
        mine,
        alt,
    )


def gate_figure(quick: bool, smoke: bool = False) -> Figure:
    """The champion-vs-candidate computation (metrics overall and on 3 slices for both models,
    DeLong) on 1,000,000 holdout rows (100,000 in quick mode)."""
    import pandas as pd

    from mlgate.gate.metrics import classification_metrics, slice_metrics
    from mlgate.gate.significance import delong

    rows = 10_000 if smoke else 100_000 if quick else 1_000_000
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, rows)
    cand = np.clip(0.5 * y + rng.normal(0.25, 0.2, rows), 0, 1)
    champ = np.clip(0.45 * y + rng.normal(0.27, 0.2, rows), 0, 1)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.integers(0, 5, rows)})
    slices = {"high_a": "a > 0.5", "low_a": "a < -0.5", "b_zero": "b == 0"}

    def once() -> float:
        start = time.perf_counter()
        for proba in (cand, champ):
            classification_metrics(y, proba, 0.5)
            slice_metrics(frame, y, proba, slices, 0.5)
        delong(y, cand, champ, 0.95)
        return time.perf_counter() - start

    runs = [once() for _ in range(1 if smoke else 2 if quick else 3)]
    return Figure(
        "gate",
        f"the gate's metrics, 3 slices and DeLong on {rows:,} rows (s)",
        median(runs),
        None,
        "s",
        "≤ 5 s" + (" (at 1M rows)" if quick else ""),
        None if quick else median(runs) <= 5,
        runs,
    )


def startup_figure(quick: bool, env, smoke: bool = False) -> Figure:
    reps = 1 if smoke else 3 if quick else 7
    ours = [
        _timed(
            lambda: subprocess.run(
                [str(BIN / "mlgate"), "--help"], env=env, capture_output=True, check=True
            )
        )
        for _ in range(reps)
    ]
    python = [
        _timed(
            lambda: subprocess.run(
                [sys.executable, "-c", "pass"], env=env, capture_output=True, check=True
            )
        )
        for _ in range(reps)
    ]
    return Figure(
        "startup",
        "`mlgate --help` wall time vs a bare `python -c pass` (s)",
        median(ours),
        median(python),
        "s",
        "≤ 0.5 s",
        median(ours) <= 0.5,
        ours,
        python,
    )


def train_project(root: Path, rows: int, columns: int, *, rounds: int, env) -> Path:
    """A repository using mlgate, with ROWS x COLUMNS of seeded data tracked by DVC."""
    import yaml

    project = root / "project"
    (project / "data").mkdir(parents=True)
    x, y = caravan(rows, seed=3)
    frame = x.iloc[:, :columns].assign(label=y)
    frame.to_csv(project / "data" / "train.csv", index=False)
    schema = {
        "schema_type": "dataframe",
        "api": "pandas",
        "columns": {
            **{
                c: {"dtype": "float64", "coerce": True, "greater_than_or_equal_to": 0}
                for c in frame.columns[:-1]
            },
            "label": {"dtype": "int64", "isin": [0, 1]},
        },
    }
    (project / "schema.yaml").write_text(yaml.safe_dump(schema))
    settings = {
        "model": {"name": "bench-train"},
        "data": {"path": "data/train.csv", "target": "label"},
        "split": {"seed": 1, "validation_fraction": 0.2, "holdout_fraction": 0.2},
        "train": {
            "num_boost_round": rounds,
            "early_stopping_rounds": 10,
            "params": {
                "objective": "binary:logistic",
                "eval_metric": "logloss",
                "tree_method": "hist",
                "max_depth": 6,
                "eta": 0.1,
                "nthread": os.cpu_count(),
                "seed": 1,
            },
        },
        "gate": {"max_latency_ms": None},
        "tracking": {"uri": "sqlite:///mlflow.db"},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(settings))
    for command in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        [str(BIN / "dvc"), "remote", "add", "-d", "local", str(root / "remote")],
        [str(BIN / "dvc"), "add", "-q", "data"],
        [str(BIN / "dvc"), "push", "-q"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "data",
        ],
    ):
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    return project


def setup_figure(quick: bool, env) -> Figure:
    """The setup action's install step (`.github/actions/setup/install.sh`: uv pinned by hash,
    a venv, `uv pip sync` of requirements.lock, mlgate) with a warm uv cache, as after
    actions/cache restored it, vs plain pip installing the same lock with a warm pip cache.
    Each side is warmed once first. Quick mode measures mlgate's side once and skips pip."""
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-setup-") as tmp:
        root = Path(tmp)
        caches = {"UV_CACHE_DIR": str(root / "uv-cache"), "PIP_CACHE_DIR": str(root / "pip-cache")}

        def ours() -> float:
            run = root / f"runner-{time.monotonic_ns()}"
            run.mkdir()
            step = (
                env
                | caches
                | {
                    "MLGATE_SOURCE": str(ROOT),
                    "GITHUB_ACTION_PATH": str(ROOT / ".github/actions/setup"),
                    "RUNNER_TEMP": str(run),
                    "GITHUB_PATH": str(run / "path"),
                    "GITHUB_OUTPUT": str(run / "output"),
                    "UV_SYSTEM_CERTS": "1",
                }
            )
            script = ROOT / ".github/actions/setup/install.sh"
            took = _timed(
                lambda: subprocess.run(
                    ["bash", str(script)], env=step, check=True, capture_output=True
                )
            )
            shutil.rmtree(run)
            return took

        def pip() -> float:
            venv = root / f"pip-venv-{time.monotonic_ns()}"
            # The pins as listed (--no-deps), as `uv pip sync` installs them: pip cannot resolve
            # the universal lock under --require-hashes (an extra, pandas[parquet], is unpinned).

            def install() -> None:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                for args in (
                    ["--no-deps", "--require-hashes", "-r", str(ROOT / "requirements.lock")],
                    ["--no-deps", str(ROOT)],
                ):
                    subprocess.run(
                        [
                            str(venv / "bin/python"),
                            "-m",
                            "pip",
                            "install",
                            "--quiet",
                            "--disable-pip-version-check",
                            *args,
                        ],
                        env=env | caches,
                        check=True,
                        capture_output=True,
                    )

            took = _timed(install)
            shutil.rmtree(venv)
            return took

        ours()  # warm the uv cache
        mine = [ours() for _ in range(reps)]
        theirs: list[float] = []
        if not quick:
            pip()  # warm the pip cache
            theirs = [pip() for _ in range(reps)]
    return Figure(
        "setup",
        "setup step (install.sh: uv, venv, requirements.lock, mlgate), warm cache, vs plain "
        "pip with a warm cache (s)",
        median(mine),
        median(theirs) if theirs else None,
        "s",
        "≤ 10 s",
        median(mine) <= 10,
        mine,
        theirs,
        notes="pip skipped in quick mode" if quick else "",
    )


# -- report -------------------------------------------------------------------------------
def table(figures: list[Figure]) -> str:
    lines = [
        "| figure | what | mlgate | alternative | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        ratio = f"{f.ratio:,.3g}×" if f.ratio is not None else "–"
        met = {True: "yes", False: "**no**", None: "–"}[f.met]
        ours = f"{f.mlgate:,.4g} {f.unit}" + (f" ({spread(f.runs)})" if spread(f.runs) else "")
        alt = (
            "–"
            if f.alternative is None
            else f"{f.alternative:,.4g}"
            + (f" ({spread(f.alternative_runs)})" if spread(f.alternative_runs) else "")
        )
        lines.append(
            f"| {f.name} | {f.what}{'; ' + f.notes if f.notes else ''} | {ours} | "
            f"{alt} | {ratio} | {f.goal} | {met} |"
        )
    return "\n".join(lines)


GROUPS = ("startup", "steps", "gate", "train", "setup", "register", "serve", "peers", "image")
GROUPS += ("dask",)  # issue 21: bench/dask_engine.py
# Not in --smoke: they install the lock, build images or start peers in venvs of their own
# (minutes whatever the sizes).
NOT_IN_SMOKE = ("setup", "image", "peers", "dask")
MLFLOW_DOCKERFILE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS build
COPY requirements.txt /tmp/requirements.txt
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --no-index \\
    --find-links /tmp/wheels --require-hashes -r /tmp/requirements.txt \\
    && find /opt/venv -name "__pycache__" -prune -exec rm -rf {} +
FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
COPY model/ /model/
ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["mlflow", "models", "serve", "-m", "/model", "--env-manager", "local", "-h", "0.0.0.0"]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: shorter loads")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="each group once on tiny sizes, to check the harness (figures mean nothing; "
        f"skips {', '.join(NOT_IN_SMOKE)})",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--base-image",
        default="local/python:3.11-bookworm",
        help="base of both images in the image figures (the tests build this one; where "
        "pulls work: python:3.11-slim-bookworm)",
    )
    parser.add_argument(
        "--steps-store",
        choices=("server", "sqlite"),
        default="server",
        help="the registry of the steps and train groups: one `mlflow server` started for the "
        "run (what the workflows talk to; default), or a sqlite file each process opens itself",
    )
    parser.add_argument(
        "--only",
        metavar="GROUP,...",
        help=f"run these groups only ({', '.join(GROUPS)}); default: all",
    )
    args = parser.parse_args(argv)
    # a terminated run still stops the servers it started (their `finally:` blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    if args.smoke:
        args.quick = True
        only -= set(NOT_IN_SMOKE)
    if only - set(GROUPS):
        parser.error(f"unknown groups {sorted(only - set(GROUPS))}; choose from {GROUPS}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the serving figures (Debian: apt-get install wrk)")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
    # MLflow's server starts `uvicorn` by name: the environment's bin/ comes first on PATH
    env |= {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-") as tmp, ExitStack() as services:
        store = Path(tmp)
        env = steps.bytecode_env(env, store)  # every process reads compiled bytecode
        registry = f"sqlite:///{store}/steps.db"
        if only & {"steps", "train"} and args.steps_store == "server":
            (store / "registry").mkdir()
            print("starting mlflow server for the steps ...", flush=True)
            registry = services.enter_context(steps.tracking_server(store / "registry", env))
        frame, version, bundle = None, None, store / "bundle"
        if only & {
            "register",
            "serve",
            "peers",
            "image",
        }:  # the groups that use the benchmark model
            print("training and registering the benchmark model ...", flush=True)
            frame, version = register(store, args.smoke)
            import mlflow

            from mlgate.pipeline.export import export_bundle

            export_bundle(mlflow.MlflowClient(), MODEL, str(version), bundle)
        quick, smoke = args.quick, args.smoke
        groups = {
            "startup": lambda: [startup_figure(quick, env, smoke)],
            "steps": lambda: steps.step_figures(Figure, median, quick, smoke, env, registry),
            "gate": lambda: [gate_figure(quick, smoke)],
            "train": lambda: [
                steps.user_train_figure(Figure, median, train_project, quick, smoke, env, registry)
            ],
            "setup": lambda: [setup_figure(quick, env)],
            "register": lambda: [registration_figure(store, quick, smoke)],
            "serve": lambda: serving_figures(frame, bundle, store, str(version), quick, env, smoke),
            "image": lambda: image_figures(frame, store, str(version), args),
            # MLServer and `mlflow models serve` side by side (bench/serve_peers.py)
            "dask": lambda: __import__("dask_engine").dask_figures(
                Figure, median, quick, smoke, train_project, env
            ),
            "peers": lambda: __import__("serve_peers").peer_figures(
                frame, bundle, store, str(version), args.quick, env, args.out
            ),
        }
        figures = []
        for group in GROUPS:
            if group in only:
                print(f"{group} ...", flush=True)
                figures += groups[group]()
    markdown = table(figures)
    results = {
        "quick": args.quick,
        "smoke": args.smoke,
        "groups": [g for g in GROUPS if g in only],
        "load": steps.cpu_note(),
        "imports": steps.IMPORTS,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "model": {"features": FEATURES, "trees": TREES, "depth": DEPTH},
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
