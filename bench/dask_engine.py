"""Figures of issue 21 (train.engine: dask). Named dask_engine.py, not dask.py: bench/ is first
on sys.path when run.py runs, and a bench/dask.py would hide the dask package.

  dask-train     `cluster.fit` (xgboost.dask on a LocalCluster sized to this machine, the data
                 read by the workers from a CSV file) vs `train.fit` (xgboost.train on the runner,
                 the same rows, split and params), both fed the same file; goal ≤ 1.3x
  dask-train-shards  what `mlgate train` does with a DVC version's shards that fit (the same
                 rows as 8 CSV shards): `cluster.plan_training` (auto) chooses memory from the
                 survey and the workers' limits, and `cluster.fit_memory` trains from the lazy
                 `cluster.prepared` frame; vs the same local run; goal ≤ 1.3x
  dask-train-extmem  the same shards forced into XGBoost's external memory
                 (`cluster.fit_external`, dask.training: external) vs the same local run;
                 reported, no goal: it is the path for a version the cluster's memory cannot
                 hold, where the local engine cannot run at all (its cost on data that fits is
                 what auto avoids)
  dask-rss       the runner's peak RSS (ru_maxrss of the `mlgate train` child, from wait4 in a
                 small launcher) of a real `mlgate train` with train.engine dask at 16x the rows
                 vs 1x (4x in the notes): the runner reads the version's manifest only, the
                 workers read the shards from the DVC remote (no pull); the cluster is the
                 harness's own (2 workers), so their memory is not the runner's; goal ≤ 1.2x
  dask-scale     the same runs' wall time at 16x the rows vs 16 times the time at 1x: training
                 no worse than linear in rows; goal ≤ 1.0x
  dask-gate      the gate on 10,000,000 holdout rows (1,000,000 quick): candidate and champion
                 scored on the workers where the holdout's partitions lie (cluster.predict),
                 the float32 scores and labels gathered, each model's scores sorted once, the
                 metrics with threshold metrics, and DeLong's test; goal ≤ 30 s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pandas as pd

ROWS = {"full": 400_000, "quick": 40_000, "smoke": 2_000}
RSS_ROWS = {"full": 50_000, "quick": 10_000, "smoke": 1_000}  # 1x; 4x and 16x of it too
GATE_ROWS = {"full": 10_000_000, "quick": 1_000_000, "smoke": 20_000}
COLUMNS = 20
ROUNDS = 50


def data(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, COLUMNS))
    logit = x[:, :5].sum(axis=1) - 0.5 * x[:, 5] * x[:, 6]
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(COLUMNS)])
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def dask_figures(
    figure: Any, median: Any, quick: bool, smoke: bool, train_project: Any, env: dict[str, str]
) -> list[Any]:
    from mlgate.pipeline import cluster, train
    from mlgate.pipeline.split import split_frame
    from mlgate.settings import load_settings

    size = "smoke" if smoke else "quick" if quick else "full"
    rows, reps = ROWS[size], 1 if smoke else 3
    figures = []
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-dask-") as tmp:
        root = Path(tmp)
        frame = data(rows)
        frame.to_csv(root / "data.csv", index=False)
        settings = load_settings(
            env={},
            overrides=[
                "data.path=data.csv",
                "data.target=label",
                "train.engine=dask",
                f"train.num_boost_round={ROUNDS}",
                "train.early_stopping_rounds=1000",
            ],
            cwd=root,
        )

        def local() -> float:
            start = time.perf_counter()
            read = pd.read_csv(root / "data.csv")
            split = split_frame(
                read, target="label", seed=42, validation_fraction=0.2, holdout_fraction=0.2
            )
            train.fit(split, settings, {})
            return time.perf_counter() - start

        ours: list[float] = []
        with cluster.connect(settings) as client:

            def distributed() -> float:
                start = time.perf_counter()
                cluster.fit(client, settings, {}, frame.iloc[:5])
                return time.perf_counter() - start

            distributed()  # warm-up: the workers import mlgate and xgboost
            ours = [distributed() for _ in range(reps)]
            source, rule = _csv_shards(frame, root / "shards", settings)
            prepared = cluster.prepared(client, source, rule)
            surveyed = cluster.survey(client, prepared, "label", [])  # as `mlgate train` does
            sample = surveyed.samples[cluster.TRAIN]
            plans: list[Any] = []

            def in_memory() -> float:
                start = time.perf_counter()
                plan = cluster.plan_training(
                    "auto", surveyed.footprint(COLUMNS), cluster.worker_memory(client)
                )
                plans.append(plan)
                if plan.training != "memory":  # the figure is of data that fits
                    raise RuntimeError(f"the bench's version does not fit: {plan.said()}")
                cluster.fit_memory(client, settings, {}, sample, prepared)
                return time.perf_counter() - start

            in_memory()  # warm-up
            shards_runs = [in_memory() for _ in range(reps)]

            def external() -> float:
                start = time.perf_counter()
                cluster.fit_external(client, settings, {}, sample, source, rule)
                return time.perf_counter() - start

            external()  # warm-up
            outside = [external() for _ in range(reps)]
        theirs = [local() for _ in range(reps)]
        ratio = median(ours) / median(theirs)
        figures.append(
            figure(
                "dask-train",
                f"training {rows:,} x {COLUMNS} ({ROUNDS} rounds) with train.engine dask on a "
                "LocalCluster vs the local engine, the same file (s)",
                median(ours),
                median(theirs),
                "s",
                "≤ 1.3×",
                None if smoke else ratio <= 1.3,
                ours,
                theirs,
            )
        )

        ratio = median(shards_runs) / median(theirs)
        figures.append(
            figure(
                "dask-train-shards",
                f"training {rows:,} x {COLUMNS} ({ROUNDS} rounds) as `mlgate train` trains a "
                "DVC version's 8 CSV shards that fit (dask.training auto: in memory) on a "
                "LocalCluster vs the local engine on the same rows (s)",
                median(shards_runs),
                median(theirs),
                "s",
                "≤ 1.3×",
                None if smoke else ratio <= 1.3,
                shards_runs,
                theirs,
                notes=f"{load()}; {plans[-1].said()}",
            )
        )
        figures.append(
            figure(
                "dask-train-extmem",
                "the same shards forced into XGBoost's external memory (dask.training "
                "external) vs the local engine on the same rows (s)",
                median(outside),
                median(theirs),
                "s",
                "– (reported)",
                None,
                outside,
                theirs,
                notes=load(),
            )
        )
        figures += scale_figures(figure, root, size, train_project, env)
        figures.append(gate_figure(figure, size))
    return figures


def _csv_shards(frame: pd.DataFrame, folder: Path, settings: Any) -> tuple[Any, Any]:
    """`frame` as 8 CSV shards in `folder`, named as a DVC version's manifest names them (each
    file's md5), and the split's rule: what `cluster.fit_external` trains from."""
    import hashlib

    from mlgate.pipeline import holdout, shards

    folder.mkdir()
    listed = []
    for n, part in enumerate(np.array_split(frame, 8)):
        path = folder / f"part-{n}.csv"
        part.to_csv(path, index=False)
        md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        listed.append(shards.Shard(path.name, md5, str(path)))
    source = shards.Shards("0" * 32 + ".dir", "local", str(folder), "csv", tuple(listed))
    return source, holdout.Rule.of(settings, {c: str(t) for c, t in frame.dtypes.items()})


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


@contextmanager
def harness_cluster() -> Iterator[Any]:
    """Two single-thread workers owned by this process, not by the measured `mlgate train`:
    the runner's ru_maxrss then counts the runner alone (a LocalCluster the runner started
    would be its children, and wait4 reports the largest of them). In-process workers: they
    start at once (spawned worker processes took minutes to import under a shared machine's
    load), and the measured runner is another process either way, which reaches them over
    loopback TCP (an inproc:// address is this process's only); the gate's gathered scores
    cross the loopback (12 bytes a row: about 1 s per 10,000,000 rows at 1 Gb/s)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(  # tcp: the measured `mlgate train` is another process
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        Client(local) as client,
    ):
        yield client


# Started between the harness and the measured `mlgate train`: Linux carries the high-water RSS
# of the image a process exec'd from into its ru_maxrss, so a child forked by the harness itself
# (whose in-process workers hold the data) would report the harness's memory, not its own.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_train(project: Path, env: dict[str, str]) -> tuple[float, float]:
    """`mlgate train` as a child of a small launcher: (wall seconds, peak RSS in MB from
    wait4). The runner reads only the version's manifest; the workers read the shards."""
    out = project.parent / "train.rss"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(out), sys.executable, "-m", "mlgate", "train"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seconds = time.perf_counter() - start
    code, kilobytes = out.read_text().split() if out.is_file() else ("?", "0")
    if done.returncode != 0 or code != "0":
        raise RuntimeError(f"mlgate train failed ({code}): {done.stderr.decode()[-2000:]}")
    return seconds, int(kilobytes) / 1024


def scale_figures(
    figure: Any, root: Path, size: str, train_project: Any, env: dict[str, str]
) -> list[Any]:
    rows = RSS_ROWS[size]
    measured: dict[int, tuple[float, float]] = {}
    with harness_cluster() as client:
        address = client.scheduler.address
        for factor in (1, 1, 4, 16):  # the first 1x warms the workers (imports) and is dropped
            base = root / f"train-{factor}x-{len(measured)}"
            base.mkdir()
            project = train_project(base, rows * factor, COLUMNS, rounds=ROUNDS, env=env)
            step_env = env | {
                "MLGATE_TRACKING_URI": f"sqlite:///{project}/mlflow.db",
                "MLGATE_TRAIN_ENGINE": "dask",
                "MLGATE_DASK_SCHEDULER": address,
            }
            measured[factor] = run_train(project, step_env)
            shutil.rmtree(base, ignore_errors=True)
    (t1, rss1), (t4, rss4), (t16, rss16) = measured[1], measured[4], measured[16]
    note = (
        f"{load()}; at 1x/4x/16x: {rss1:.0f}/{rss4:.0f}/{rss16:.0f} MB, "
        f"{t1:.1f}/{t4:.1f}/{t16:.1f} s"
    )
    return [
        figure(
            "dask-rss",
            f"runner peak RSS of `mlgate train` (train.engine dask, 2 workers) on "
            f"{16 * rows:,} rows vs {rows:,} (MB)",
            rss16,
            rss1,
            "MB",
            "≤ 1.2×",
            None if size == "smoke" else rss16 / rss1 <= 1.2,
            [rss1, rss4, rss16],
            [rss1],
            notes=note,
        ),
        figure(
            "dask-scale",
            f"`mlgate train` (train.engine dask) wall time on {16 * rows:,} rows vs 16 x the "
            f"time on {rows:,} (s)",
            t16,
            16 * t1,
            "s",
            "≤ 1.0× (linear)",
            None if size == "smoke" else t16 <= 16 * t1,
            [t1, t4, t16],
            [16 * t1],
            notes=note,
        ),
    ]


def gate_figure(figure: Any, size: str) -> Any:
    """The gate's computation on a holdout held by the workers: generated there (seeded,
    partition by partition) and persisted, as a holdout rebuilt on the cluster would be."""
    import dask.array as da
    import dask.dataframe as dd
    import xgboost as xgb

    from mlgate.gate.metrics import Ranking, classification_metrics
    from mlgate.gate.significance import delong
    from mlgate.pipeline import cluster

    rows = GATE_ROWS[size]
    train = data(100_000 if size != "smoke" else 2_000, seed=7)
    x, y = train.drop(columns=["label"]), train["label"]
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1}
    candidate = xgb.train(params, xgb.DMatrix(x, y), ROUNDS)
    champion = xgb.train({**params, "max_depth": 3}, xgb.DMatrix(x, y), ROUNDS)
    with harness_cluster() as client:
        chunk = -(-rows // 16)
        rng = da.random.default_rng(11)
        features = rng.standard_normal((rows, COLUMNS), chunks=(chunk, COLUMNS), dtype="f4")
        logit = features[:, :5].sum(axis=1) - 0.5 * features[:, 5] * features[:, 6]
        label = (rng.random(rows, chunks=chunk) < 1 / (1 + da.exp(-logit))).astype("f4")
        table = da.concatenate([features, label[:, None]], axis=1)
        holdout = dd.from_dask_array(table, columns=[*x.columns, "label"]).persist()
        client.wait_for_workers(2)
        holdout.map_partitions(len).compute()  # in the workers' memory before the clock starts
        cluster.predict(client, [candidate], holdout.partitions[0], "warm-up", label="label")
        runs, notes = [], []
        for _ in range(1 if size == "smoke" else 2):
            start = time.perf_counter()
            scores = cluster.predict(client, [candidate, champion], holdout, "gate", label="label")
            scored = time.perf_counter()
            truth = scores[2] == 1
            ranked = [Ranking(truth, scores[0]), Ranking(truth, scores[1])]
            for k in range(2):
                classification_metrics(truth, scores[k], 0.5, ranked[k])
            delong(truth, scores[0], scores[1], 0.95, (ranked[0], ranked[1]))
            done = time.perf_counter()
            runs.append(done - start)
            notes.append(f"scoring {scored - start:.1f} s + statistics {done - scored:.1f} s")
    return figure(
        "dask-gate",
        f"the gate on {rows:,} holdout rows x {COLUMNS}: both models scored on 2 workers, "
        "metrics, threshold metrics and DeLong on the runner (s)",
        median(runs),
        None,
        "s",
        "≤ 30 s" + ("" if size == "full" else " (at 10M rows)"),
        median(runs) <= 30 if size == "full" else None,
        runs,
        notes=f"{load()}; " + "; ".join(notes),
    )
