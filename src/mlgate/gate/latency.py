"""How long a model takes to score one row as the serving image scores it, measured so that a
busy runner cannot change the gate's verdict.

- **What**: the trees that will serve. The image runs them compiled to C (mlgate.serving.trees), so
  they are compiled here too when a C compiler and tl2cgen are at hand; otherwise the XGBoost
  booster is measured, and the record says which (`engine`, `engine_note`).
- **Which clock**: CPU time of the measuring thread (`time.thread_time`). Wall-clock time counts
  every moment another process holds the core; CPU time does not, so a saturated runner moves it
  by a few percent, not tenfold.
- **How often**: each model scores single rows (cycling through up to 200 holdout rows) in
  batches long enough (at least 2 ms of CPU time) to sit far above the clock's resolution; 31
  rounds, candidate and champion interleaved in one process, their order alternating, so drift
  in the machine's state hits both alike.
- **Which statistic**: the median over rounds of the per-row mean of a batch, with a seeded
  bootstrap 95% interval of that median and its MAD: the measurement's own noise, recorded.
  The gate judges the interval's upper end (fail closed), and the candidate/champion ratio per
  round (paired) for the relative check.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.errors import MlgateError

ROUNDS = 31
ROWS = 200
MIN_BATCH_SECONDS = 0.002  # of CPU time: ~10^6 times the clock's resolution here
MAX_CALLS = 1 << 16
BOOTSTRAP = 2000
CONFIDENCE = 0.95
METHOD = (
    "CPU time (time.thread_time) per single-row predict; median over {rounds} rounds of the "
    "mean of a batch, models interleaved; seeded bootstrap {level}% interval of the median"
)


def serving_trees(
    boosters: Mapping[str, Any], compiler: str, workdir: Path
) -> tuple[dict[str, Any], str, str]:
    """Each booster as the image would run it, all the same way so that they compare:
    (trees by role, engine, why that engine)."""
    from mlgate.serving.trees import LIBRARY, BoosterTrees, CompiledTrees, compile_trees

    note = ""
    if shutil.which(compiler) is None:
        note = f"no C compiler '{compiler}' on PATH (serve.compiler): the booster was measured"
    # installed? (found, not imported: compile_trees imports them only for the models
    # the node tables do not cover)
    elif not all(importlib.util.find_spec(name) for name in ("tl2cgen", "treelite")):
        note = "tl2cgen is not installed: the booster was measured"
    else:
        try:
            # the models compile side by side (the compiler runs outside the GIL): on a
            # two-core runner that halves the wait for the champion's and candidate's
            with ThreadPoolExecutor(max_workers=max(1, len(boosters))) as pool:
                built = {
                    role: pool.submit(
                        compile_trees,
                        bytes(booster.save_raw("ubj")),
                        workdir / role,
                        compiler=compiler,
                        json_numbers=False,  # the server's JSON reader: not on this path
                    )
                    for role, booster in boosters.items()
                }
                for job in built.values():
                    job.result()  # the first failure, as one at a time raised it
            compiled = {
                role: CompiledTrees(workdir / role / LIBRARY, booster.num_features(), threads=1)
                for role, booster in boosters.items()
            }
            return compiled, "compiled", "as the serving image runs them"
        except MlgateError as exc:
            first = exc.message.splitlines()[0]
            note = f"compiling the trees failed ({first}): the booster was measured"
    return (
        {role: BoosterTrees(booster, threads=1) for role, booster in boosters.items()},
        "xgboost",
        note,
    )


def _batch(trees: Any, rows: np.ndarray, calls: int, start: int) -> float:
    """Mean CPU seconds per single-row predict over `calls` calls."""
    n = len(rows)
    singles = [rows[(start + i) % n : (start + i) % n + 1] for i in range(calls)]
    predict = trees.predict
    begin = time.thread_time()
    for row in singles:
        predict(row)
    return (time.thread_time() - begin) / calls


def _calls(trees: Any, rows: np.ndarray) -> int:
    """Calls per batch so that a batch lasts MIN_BATCH_SECONDS of CPU time."""
    calls = 1
    while calls < MAX_CALLS and _batch(trees, rows, calls, 0) * calls < MIN_BATCH_SECONDS:
        calls *= 2
    return calls


def _spread(values: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    median = float(np.median(values))
    resampled = np.median(values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))], axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    return {
        "median": median,
        "ci_low": float(np.percentile(resampled, tail)),
        "ci_high": float(np.percentile(resampled, 100 - tail)),
        "mad": float(np.median(np.abs(values - median))),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def measure(
    trees: Mapping[str, Any], rows: np.ndarray, *, rounds: int = ROUNDS, seed: int = 0
) -> dict[str, Any]:
    """CPU milliseconds per single-row predict of each of `trees` (by role, e.g. candidate and
    champion), measured interleaved; with the candidate/champion ratio when both are given."""
    rows = np.ascontiguousarray(np.asarray(rows, dtype=np.float64)[:ROWS])
    if len(rows) == 0:
        raise ValueError("no rows to measure latency on")
    roles = list(trees)
    for model in trees.values():  # warm up: first-call allocations, page faults
        _batch(model, rows, min(len(rows), 20), 0)
    calls = {role: _calls(trees[role], rows) for role in roles}
    samples: dict[str, list[float]] = {role: [] for role in roles}
    for r in range(rounds):
        for role in roles if r % 2 == 0 else roles[::-1]:
            seconds = _batch(trees[role], rows, calls[role], start=r * 17)
            samples[role].append(seconds * 1000)
    rng = np.random.default_rng(seed)
    record: dict[str, Any] = {
        "unit": "ms of CPU time per row",
        "method": METHOD.format(rounds=rounds, level=f"{CONFIDENCE * 100:g}"),
        "rounds": rounds,
        "rows": len(rows),
        "calls_per_batch": calls,
        "clock_resolution_ms": time.get_clock_info("thread_time").resolution * 1000,
    }
    for role in roles:
        record[role] = _spread(np.asarray(samples[role]), rng)
    if {"candidate", "champion"} <= set(roles):
        ratio = np.asarray(samples["candidate"]) / np.asarray(samples["champion"])
        record["ratio"] = _spread(ratio, rng)
    return record


def measure_models(
    boosters: Mapping[str, Any],
    rows: np.ndarray,
    *,
    compiler: str,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Compile (when possible) and measure: the `latency_ms` block of the decision."""
    with tempfile.TemporaryDirectory(prefix="mlgate-latency-") as tmp:
        trees, engine, note = serving_trees(boosters, compiler, Path(tmp))
        record = measure(trees, rows, rounds=rounds, seed=seed)
    return {"engine": engine, "engine_note": note, **record}
