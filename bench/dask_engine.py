"""Figures of issue 21 (train.engine: dask), first slice. Named dask_engine.py, not dask.py:
bench/ is first on sys.path when run.py runs, and a bench/dask.py would hide the dask package.

  dask-train     `cluster.fit` (xgboost.dask on a LocalCluster sized to this machine, the data
                 read by the workers from a CSV file) vs `train.fit` (xgboost.train on the runner,
                 the same rows, split and params), both fed the same file; goal ≤ 1.3x
  dask-rss       the runner's peak RSS while `cluster.fit` trains on 4x the rows vs on 1x
                 (each a fresh process; ru_maxrss): the workers, not the runner, hold the data.
                 Whole `mlgate train` still reads the data on the runner in this slice
                 (docs/dask.md), so this is the engine's figure, not the stage's
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROWS = {"full": 400_000, "quick": 40_000, "smoke": 2_000}
COLUMNS = 20
ROUNDS = 50

RSS_CHILD = """
import json, resource, sys
from pathlib import Path
from mlgate.pipeline import cluster
from mlgate.settings import load_settings
root = Path(sys.argv[1])
settings = load_settings(env={}, overrides=[
    f"data.path={sys.argv[2]}", "data.target=label", "train.engine=dask",
    f"train.num_boost_round={sys.argv[3]}", "train.early_stopping_rounds=1000",
], cwd=root)
sample = __import__("pandas").read_csv(root / sys.argv[2], nrows=5)
with cluster.connect(settings) as client:
    cluster.fit(client, settings, {}, sample)
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def data(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, COLUMNS))
    logit = x[:, :5].sum(axis=1) - 0.5 * x[:, 5] * x[:, 6]
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(COLUMNS)])
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def dask_figures(figure: Any, median: Any, quick: bool, smoke: bool) -> list[Any]:
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

        peaks = {}
        for factor in (1, 4):
            name = f"data{factor}.csv"
            data(rows * factor, seed=factor).to_csv(root / name, index=False)
            out = subprocess.run(
                [sys.executable, "-c", RSS_CHILD, str(root), name, str(ROUNDS)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            peaks[factor] = json.loads(out.strip().splitlines()[-1])["maxrss_kb"] / 1024
        figures.append(
            figure(
                "dask-rss",
                f"runner peak RSS while the cluster trains on {4 * rows:,} rows vs {rows:,} "
                "(MB; cluster.fit only: the stage still reads the data on the runner)",
                peaks[4],
                peaks[1],
                "MB",
                "≤ 1.2×",
                None if smoke else peaks[4] / peaks[1] <= 1.2,
                [peaks[4]],
                [peaks[1]],
            )
        )
    return figures
