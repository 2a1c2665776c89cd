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
                 registered_model_name), both whole processes (quick: 50,000 rows, not judged)

Every step's first run is a warm-up, not timed, run under `python -X importtime`: the heavy
libraries it imported are reported with the figure (and checked by tests/integration/
test_bench.py). The tracking store is a local sqlite file (each process opens it with
SQLAlchemy: about as much as connecting to `mlflow server`, see docs/performance.md).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def timed(args: list[str], cwd: Path, env: dict[str, str], ok=(0,), step: str = "") -> float:
    """Wall time of one whole process; its CPU time goes to CPU[step] (on a shared machine
    the CPU time is the steadier of the two)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    _run(args, cwd, env, ok)
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


def step_figures(figure, median, quick: bool, smoke: bool, env: dict[str, str]) -> list:
    """promote, evaluate and train-demo on the demo data. `figure` is bench/run.py's Figure.
    Smoke: each step runs once (its import-listing run is its measurement), the candidate is
    evaluated without a champion, and the reports' alternative is not measured."""
    reps = 1 if smoke else (3 if quick else 5)
    mlgate = [sys.executable, "-m", "mlgate"]

    def runs(args: list[str], step: str, ok=(0,)) -> list[float]:
        """The import-listing warm-up (the only run in smoke), then `reps` timed runs."""
        took, imports[step] = heavy_imports(args, project, step_env, ok, step if smoke else "")
        return (
            [took]
            if smoke
            else [timed([*mlgate, *args], project, step_env, ok, step) for _ in range(reps)]
        )

    imports: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-steps-") as tmp:
        project = demo_project(Path(tmp), env)
        store = f"sqlite:///{project}/mlflow.db"
        step_env = env | {"MLGATE_TRACKING_URI": store, "MLGATE_REPORTS_DIR": f"{tmp}/reports"}
        read_name = "import yaml; print(yaml.safe_load(open('params.yaml'))['model']['name'])"
        name = _run([sys.executable, "-c", read_name], project, env).stdout.strip()
        train_runs = runs(["train", "--no-pull"], "train")
        bare_runs = [
            float(_run([sys.executable, "-c", BARE_TRAIN], project, env).stdout.split()[-1])
            for _ in range(reps)
        ]
        # version 1 becomes the champion (not in smoke); the last trained version the candidate
        candidate = "1" if smoke else str(1 + reps)
        if not smoke:
            _run([*mlgate, "evaluate", "--candidate-version", "1"], project, step_env)
            _run([*mlgate, "promote", "--candidate-version", "1"], project, step_env)
        evaluate = ["evaluate", "--candidate-version", candidate, "--fail-on-gate", "false"]
        eval_runs = runs([*evaluate, "--set", "reports.quality=false"], "evaluate")
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
        promote_runs = runs(["promote", "--candidate-version", candidate], "promote", (0, 6))
        move = [sys.executable, "-c", MOVE_ALIAS, store, name, candidate]
        bare_alias = [timed(move, project, env, (0,), "alias") for _ in range(reps)]
    IMPORTS.update(imports)
    bare = median(bare_runs)
    return [
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


USER_SCRIPT = ROOT / "bench" / "user-script.py"


def user_train_figure(figure, median, train_project, quick: bool, smoke: bool, env) -> object:
    """`mlgate train` vs the typical user script (bench/user-script.py), whole processes, on
    1,000,000 x 50 rows (quick: 50,000; smoke: 2,000; neither judged)."""
    rows = 2_000 if smoke else (50_000 if quick else 1_000_000)
    reps = 1 if (quick or smoke) else 3
    rounds = 10 if smoke else (50 if quick else 200)
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-train-") as tmp:
        project = train_project(Path(tmp), rows, 50, rounds=rounds, env=env)
        store = f"sqlite:///{project}/mlflow.db"
        ours = [sys.executable, "-m", "mlgate", "train", "--no-pull"]
        theirs = [sys.executable, str(USER_SCRIPT), "params.yaml", store]
        step_env = env | {"MLGATE_TRACKING_URI": store}
        mine, alt = [], []
        for _ in range(reps):  # interleaved, so a change of load hits both alike
            mine.append(timed(ours, project, step_env, step="train-user"))
            alt.append(timed(theirs, project, env, step="user-script"))
    ratio = median(mine) / median(alt)
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
        notes=f"{cpu('train-user', median)} vs {cpu('user-script', median)}",
    )


def cpu_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"load average {load:.1f} on {os.cpu_count()} cores"
