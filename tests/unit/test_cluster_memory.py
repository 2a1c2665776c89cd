"""What the workers run around each partition of a version larger than their memory
(docs/dask.md, "A version larger than the workers' memory"): the memory handed back after
each task, and boosters shipped to the scoring tasks as their bytes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlgate.pipeline import cluster, shards


def test_a_partition_task_returns_its_functions_result_and_hands_memory_back(monkeypatch):
    released: list[str] = []
    monkeypatch.setattr(shards, "release_memory", lambda: released.append("x"))
    part = pd.DataFrame({"a": [1, 2, 3]})
    assert shards.released(part, lambda p, k: int(p["a"].sum()) * k, {"k": 2}) == 12
    assert released == ["x"]

    def failing(p: pd.DataFrame) -> None:
        raise ValueError("bad partition")

    with pytest.raises(ValueError, match="bad partition"):
        shards.released(part, failing, {})
    assert released == ["x", "x"]  # handed back however the task ends


def test_release_memory_runs_here():
    shards.release_memory()  # pyarrow's pool and glibc's malloc_trim: no error, no result


def _booster(seed: int) -> tuple[xgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (x["a"] + rng.normal(0, 0.5, 200) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, y), 5)
    return booster, x


def test_a_shipped_booster_predicts_what_the_booster_predicts():
    booster, x = _booster(0)
    model = cluster.shipped(booster)
    loaded = cluster._loaded(model)
    assert np.array_equal(loaded.predict(xgb.DMatrix(x)), booster.predict(xgb.DMatrix(x)))
    assert loaded.feature_names == booster.feature_names
    assert cluster._loaded(model) is loaded  # loaded once per process
    assert cluster._loaded(booster) is booster  # a booster given as such


def test_the_loaded_boosters_are_bounded():
    cluster._LOADED.clear()
    models = [cluster.shipped(_booster(seed)[0]) for seed in range(cluster.LOADED_MAX + 2)]
    for model in models:
        cluster._loaded(model)
    assert len(cluster._LOADED) == cluster.LOADED_MAX
    assert models[-1].digest in cluster._LOADED and models[0].digest not in cluster._LOADED


def test_the_pinned_xgboost_starts_its_tracker_as_fit_external_calls_it():
    """`cluster.fit_external` starts the collective's tracker with xgboost.dask's own function,
    which XGBoost does not publish as API (docs/dask.md, Known limits): an upgrade that renames
    it or changes its parameters fails here, not in a training job."""
    import inspect

    from xgboost import dask as dxgb

    assert list(inspect.signature(dxgb._start_tracker).parameters) == [
        "n_workers",
        "addr_from_dask",
        "addr_from_user",
        "timeout",
    ]
