"""Figures of issue 18, item 5: what a pipeline step costs as a whole process.

Each workflow job is a fresh process, so a step pays its imports every time. Measured here, side
by side in one run, each the median of several whole-process runs (wall time, `python -m` from
this environment), on the demo data (data/breast_cancer.csv, 569 rows, the shipped params.yaml):

  promote        `mlgate promote` of a version whose decision passed (the first run moves the
                 alias, the others re-run it: the decision read, the pointer lock, the check)
                 vs a bare MLflow script moving one alias (`MlflowClient().set_registered_model_
                 alias`): that script's time is mostly `import mlflow`, the floor of any step
                 that talks to the registry through MLflow's client
  evaluate       `mlgate evaluate` against a champion with reports.quality=false (the decision:
                 what promotion waits for) vs the same with the reports on (evidently, curves)
  train-demo     `mlgate train` vs the bare `xgboost.train` call on the same rows and params
  train-user     on 1,000,000 x 50 rows: `mlgate train` vs user-script.py (pandas reads the file,
                 xgboost.train with early stopping, mlflow.xgboost.log_model with
                 registered_model_name), both whole processes (quick: 50,000 rows, not judged);
                 the script trains on mlgate's split of the same rows (written before the timed
                 runs), so both stop early at the same round

  *-floor        each step beside the floor no step of its kind can go under, measured in the
                 same run, interleaved with it, as whole processes: for promote, MLflow's client
                 asking the server one thing (`import mlflow; MlflowClient(URI).
                 search_experiments()`); for evaluate and train, the same after `import
                 xgboost, pandas`. What the step takes above its floor is mlgate's own overhead
                 (the median of the interleaved differences), and the goals are set on it.

Every step's first run is a warm-up, not timed, run under `python -X importtime`: the heavy
libraries it imported are reported with the figure (and checked by tests/integration/
test_bench.py).

The registry is what the workflows talk to: one real `mlflow server` (sqlite behind it, proxied
artifacts, one worker, its GenAI job runner off, as tests/conftest.py starts it), started once
per bench run for the steps and train groups (its start is not timed); mlgate, the floors and
the alternatives all use it. `--steps-store sqlite` points them at a sqlite file instead: each
process then opens the store itself (SQLAlchemy and MLflow's schema check, about 4 CPU s more
per process on the 2-core machine), which is not what a workflow pays.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

# What a repository using mlgate holds, copied to a scratch folder (as the demo does).
from mlgate.pipeline.demo import PROJECT_FILES

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "mlflow",
    "sqlalchemy",
    "numpy",
    "pandas",
    "xgboost",
    "sklearn",
    "scipy",
    "dvc",
    "pandera",
    "evidently",
    "matplotlib",
)

BARE_TRAIN = """
import sys, time
import pandas as pd, xgboost as xgb, yaml
from mlgate.pipeline.split import split_frame
settings = yaml.safe_load(open("params.yaml"))
target = settings["data"]["target"]
frame = pd.read_csv(settings["data"]["path"])
s, t = settings["split"], settings["train"]
split = split_frame(frame, target=target, seed=s["seed"],
    validation_fraction=s["validation_fraction"], holdout_fraction=s["holdout_fraction"])
x = lambda part: part.drop(columns=target).astype("float64")
train = xgb.DMatrix(x(split.train), label=split.train[target])
valid = xgb.DMatrix(x(split.validation), label=split.validation[target])
start = time.perf_counter()
xgb.train(t["params"], train, t["num_boost_round"], evals=[(valid, "validation")],
    early_stopping_rounds=t["early_stopping_rounds"], verbose_eval=False)
print(time.perf_counter() - start)
"""

# The floors (see the module's docstring): whole processes, the tracking URI as argv[1].
REGISTRY_FLOOR = "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
TRAINING_FLOOR = (
    "import sys, mlflow, xgboost, pandas; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
)

MOVE_ALIAS = """
import sys
import mlflow
mlflow.MlflowClient(sys.argv[1]).set_registered_model_alias(sys.argv[2], "bench-bare", sys.argv[3])
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], ok=(0,)) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode not in ok:
        raise RuntimeError(
            f"{' '.join(args[:6])} exited {done.returncode}:\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-3000:]}"
        )
    return done


IMPORTS: dict[str, list[str]] = {}  # the heavy libraries each step's warm-up run imported
CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each timed process, by step


def timed(
    args: list[str], cwd: Path, env: dict[str, str], ok=(0,), step: str = "", out=None
) -> float:
    """Wall time of one whole process; its CPU time goes to CPU[step] (on a shared machine
    the CPU time is the steadier of the two). `out`: a list its standard output is added to."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = _run(args, cwd, env, ok)
    if out is not None:
        out.append(done.stdout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(step, []).append(cpu)
    return wall


def cpu(step: str, median) -> str:
    return f"CPU {median(CPU[step]):.2f} s" if CPU.get(step) else ""


def heavy_imports(
    args: list[str], cwd: Path, env: dict[str, str], ok=(0,), step: str = ""
) -> tuple[float, list[str]]:
    """Run a step once under `python -X importtime -m mlgate`: its wall time, and the heavy
    libraries it loaded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = _run([sys.executable, "-X", "importtime", "-m", "mlgate", *args], cwd, env, ok)
    wall = time.perf_counter() - start
    if step:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        CPU.setdefault(step, []).append(cpu)
    names = set(re.findall(r"^import time:.*\|\s+(\S+)\s*$", done.stderr, re.M))
    return wall, [m for m in HEAVY if m in names]


def bytecode_env(env: dict[str, str], root: Path) -> dict[str, str]:
    """Every timed process reads compiled bytecode, as an installed environment has it (pip
    compiles it at install; a uv install writes it on first import unless
    PYTHONDONTWRITEBYTECODE is set). Without it each process compiles every module it imports
    from source: with this project's environment (uv-installed, PYTHONDONTWRITEBYTECODE=1) that
    tripled `import mlflow` (3 CPU s became 9). The bytecode goes to a scratch folder of the
    bench run (PYTHONPYCACHEPREFIX), written by the warm-up runs, never into the environment."""
    kept = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return kept | {"PYTHONPYCACHEPREFIX": str(root / "pycache")}


@contextmanager
def tracking_server(root: Path, env: dict[str, str], seconds: float = 600) -> Iterator[str]:
    """One `mlflow server` as the workflows reach it (see the module's docstring): its URI.
    Stopped, with its process group, when the block ends."""
    with socket_port() as port:
        pass
    args = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--workers", "1"]
    args += ["--backend-store-uri", f"sqlite:///{root}/mlflow.db"]
    args += ["--artifacts-destination", str(root / "artifacts")]
    server_env = env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://127.0.0.1:{port}"
    with running(args, url, "/health", server_env, root / "server.log", seconds) as uri:
        yield uri


@contextmanager
def running(
    args: list[str], url: str, ready: str, env: dict[str, str], log: Path, seconds: float
) -> Iterator[str]:
    """A server process (its own process group, output in `log`) until `url + ready`
    answers 200 within `seconds`: `url`. SIGTERM to the group when the block ends (SIGKILL
    after 30 s)."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        deadline = time.monotonic() + seconds
        while True:
            with suppress(requests.RequestException):
                if requests.get(url + ready, timeout=2).ok:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def demo_project(root: Path, env: dict[str, str]) -> Path:
    """A scratch repository with the demo data pulled, as a workflow's checkout has it."""
    project = root / "demo"
    for name in PROJECT_FILES:
        src, dest = ROOT / name, project / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", *ident, "commit", "-qm", "data"],
        [str(Path(sys.executable).parent / "dvc"), "pull", "-q"],
    ):
        _run(command, project, env)
    return project


def step_figures(figure, median, quick: bool, smoke: bool, env: dict[str, str], uri: str) -> list:
    """promote, evaluate and train-demo on the demo data, each beside its floor, against the
    tracking URI `uri` (the bench run's `mlflow server`). `figure` is bench/run.py's Figure.
    Smoke: each step runs once (its import-listing run is its measurement) with its floor once,
    the candidate is evaluated without a champion, and the reports' alternative is not measured."""
    reps = 1 if smoke else (3 if quick else 5)
    mlgate = [sys.executable, "-m", "mlgate"]
    floors: dict[str, list[float]] = {}
    overheads: dict[str, list[float]] = {}

    def runs(args: list[str], step: str, floor: str, ok=(0,)) -> list[float]:
        """The import-listing warm-up (the only run in smoke), then `reps` timed runs, each
        followed by a run of the step's floor (interleaved: a change of load hits both)."""
        took, imports[step] = heavy_imports(args, project, step_env, ok, step if smoke else "")
        mine = [took] if smoke else []
        floor_cmd = [sys.executable, "-c", floor, uri]
        if not smoke:  # the floor's own warm-up (bytecode), not timed
            _run(floor_cmd, project, env)
        for _ in range(reps):
            if not smoke:
                mine.append(timed([*mlgate, *args], project, step_env, ok, step))
            floors.setdefault(step, []).append(timed(floor_cmd, project, env, step=f"{step}-floor"))
            overheads.setdefault(step, []).append(mine[-1] - floors[step][-1])
        return mine

    imports: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-steps-") as tmp:
        project = demo_project(Path(tmp), env)
        step_env = env | {"MLGATE_TRACKING_URI": uri, "MLGATE_REPORTS_DIR": f"{tmp}/reports"}
        read_name = "import yaml; print(yaml.safe_load(open('params.yaml'))['model']['name'])"
        name = _run([sys.executable, "-c", read_name], project, env).stdout.strip()
        # `train` as a workflow runs it: the data is pulled (here: already in the workspace,
        # as data.dvc names it; mlgate checks that by digest)
        train_runs = runs(["train"], "train", TRAINING_FLOOR)
        bare_runs = [
            float(_run([sys.executable, "-c", BARE_TRAIN], project, env).stdout.split()[-1])
            for _ in range(reps)
        ]
        # version 1 becomes the champion (not in smoke); the last trained version the candidate
        candidate = "1" if smoke else str(1 + reps)  # the warm-up and `reps` runs trained
        if not smoke:
            _run([*mlgate, "evaluate", "--candidate-version", "1"], project, step_env)
            _run([*mlgate, "promote", "--candidate-version", "1"], project, step_env)
        evaluate = ["evaluate", "--candidate-version", candidate, "--fail-on-gate", "false"]
        eval_runs = runs([*evaluate, "--set", "reports.quality=false"], "evaluate", TRAINING_FLOOR)
        published = {p.name for p in (Path(tmp) / "reports" / name / f"v{candidate}").iterdir()}
        if "decision.json" not in published or any("evidently" in p for p in published):
            raise RuntimeError(f"reports.quality=false published {sorted(published)}")
        report_runs = (
            []
            if smoke
            else [
                timed([*mlgate, *evaluate], project, step_env, step="reports") for _ in range(reps)
            ]
        )
        # the first run moves the alias (exit 6 if the gate rejected the candidate: the same work)
        promote_runs = runs(
            ["promote", "--candidate-version", candidate], "promote", REGISTRY_FLOOR, (0, 6)
        )
        move = [sys.executable, "-c", MOVE_ALIAS, uri, name, candidate]
        bare_alias = [timed(move, project, env, (0,), "alias") for _ in range(reps)]
    IMPORTS.update(imports)
    bare = median(bare_runs)
    figures = [
        figure(
            "promote",
            "`mlgate promote` whole process vs a bare MLflow script moving one alias (s); "
            f"imports: {', '.join(imports['promote']) or 'none'}",
            median(promote_runs),
            median(bare_alias),
            "s",
            "≤ 2 s",
            median(promote_runs) <= 2,
            promote_runs,
            bare_alias,
            notes=f"{cpu('promote', median)} vs {cpu('alias', median)}",
        ),
        figure(
            "evaluate",
            "`mlgate evaluate` against a champion, whole process, decision only "
            "(reports.quality=false) vs with the curves and evidently reports (s); imports: "
            f"{', '.join(imports['evaluate']) or 'none'}",
            median(eval_runs),
            median(report_runs) if report_runs else None,
            "s",
            "≤ 8 s",
            median(eval_runs) <= 8,
            eval_runs,
            report_runs,
            notes=f"{cpu('evaluate', median)} vs {cpu('reports', median)}",
        ),
        figure(
            "train-demo",
            "`mlgate train` whole process on the demo data vs the bare `xgboost.train` call "
            f"on the same rows and params (s); imports: {', '.join(imports['train'])}",
            median(train_runs),
            bare,
            "s",
            "≤ bare + 5 s",
            median(train_runs) <= bare + 5,
            train_runs,
            bare_runs,
            notes=f"mlgate − bare = {median(train_runs) - bare:.2f} s; {cpu('train', median)}",
        ),
    ]
    for step, what, goal, step_runs in (
        ("promote", REGISTRY_FLOOR, 1.0, promote_runs),
        ("evaluate", TRAINING_FLOOR, 3.0, eval_runs),
        ("train", TRAINING_FLOOR, 5.0, train_runs),
    ):
        overhead = median(overheads[step])
        cpu_overhead = (
            median(CPU[step]) - median(CPU[f"{step}-floor"])
            if CPU.get(step) and CPU.get(f"{step}-floor")
            else float("nan")
        )
        figures.append(
            figure(
                f"{step}-floor",
                f"`mlgate {step}` vs its floor, interleaved whole processes: `python -c "
                f'"{what.replace("sys.argv[1]", "URI")}"` (s); mlgate\'s overhead is the '
                "median of the differences",
                median(step_runs),
                median(floors[step]),
                "s",
                f"overhead ≤ {goal:g} s",
                overhead <= goal,
                step_runs,
                floors[step],
                notes=f"overhead {overhead:.2f} s wall, {cpu_overhead:.2f} s CPU "
                f"({cpu(step, median)} vs {cpu(step + '-floor', median)})",
            )
        )
    return figures


USER_SCRIPT = ROOT / "bench" / "user-script.py"
WARM_TRAINING = (
    "import mlflow, mlflow.xgboost, xgboost, pandas, yaml, sklearn.metrics, pandera.pandas, "
    "dvc.repo, mlgate.pipeline.train"
)


def user_train_figure(
    figure, median, train_project, quick: bool, smoke: bool, env, uri: str
) -> object:
    """`mlgate train` vs the typical user script (bench/user-script.py), whole processes, on
    1,000,000 x 50 rows (quick: 50,000; smoke: 2,000; neither judged)."""
    rows = 2_000 if smoke else (50_000 if quick else 1_000_000)
    reps = 1 if (quick or smoke) else 3
    rounds = 10 if smoke else (50 if quick else 200)
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-train-") as tmp:
        project = train_project(Path(tmp), rows, 50, rounds=rounds, env=env)
        parts = same_rows(project, Path(tmp) / "parts.npz")  # not timed
        ours = [sys.executable, "-m", "mlgate", "train"]  # the data is in the workspace
        theirs = [sys.executable, str(USER_SCRIPT), "params.yaml", uri, str(parts)]
        step_env = env | {"MLGATE_TRACKING_URI": uri}
        mine, alt, said, wrote = [], [], [], []
        if not smoke:  # bytecode for what both import (a full run takes minutes), not timed
            _run([sys.executable, "-c", WARM_TRAINING], project, env)
        for _ in range(reps):  # interleaved, so a change of load hits both alike
            mine.append(timed(ours, project, step_env, step="train-user", out=said))
            alt.append(timed(theirs, project, env, step="user-script", out=wrote))
    ratio = median(mine) / median(alt)
    theirs_best = re.findall(r"best iteration (\d+)", "".join(wrote))
    rounds_note = (
        f"best iteration {', '.join(best_iterations(said, uri))} vs {', '.join(theirs_best)}"
    )
    judged = not (quick or smoke)
    return figure(
        "train-user",
        f"`mlgate train` vs a typical user script (bench/user-script.py), whole processes, "
        f"{rows:,} x 50 (s)",
        median(mine),
        median(alt),
        "s",
        "≤ 1.15×" + ("" if judged else " (at 1M rows)"),
        ratio <= 1.15 if judged else None,
        mine,
        alt,
        notes=f"{cpu('train-user', median)} vs {cpu('user-script', median)}; the same rows "
        f"(mlgate's split); {rounds_note}; {cpu_note()}",
    )


def same_rows(project: Path, path: Path) -> Path:
    """mlgate's split of the project's data (holdout, validation and train row positions) in
    `path`, for the user script: both then train on the same rows (bench/user-script.py)."""
    import numpy as np
    import pandas as pd
    import yaml

    from mlgate.pipeline.split import split_frame

    settings = yaml.safe_load((project / "params.yaml").read_text())
    frame = pd.read_csv(project / settings["data"]["path"])
    split = split_frame(
        frame,
        target=settings["data"]["target"],
        seed=settings["split"]["seed"],
        validation_fraction=settings["split"]["validation_fraction"],
        holdout_fraction=settings["split"]["holdout_fraction"],
    )
    np.savez(
        path,
        holdout=split.holdout.index.to_numpy(),
        validation=split.validation.index.to_numpy(),
        train=split.train.index.to_numpy(),
    )
    return path


def best_iterations(outputs: list[str], uri: str) -> list[str]:
    """The best iteration of each `mlgate train` run, from the runs its output names."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = re.findall(r"\(run ([0-9a-f]+),", "".join(outputs))
    return [f"{client.get_run(run).data.metrics['best_iteration']:.0f}" for run in runs]


def cpu_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"load average {load:.1f} on {os.cpu_count()} cores"
