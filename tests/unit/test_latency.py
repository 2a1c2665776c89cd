"""The latency measurement's bookkeeping: which trees, which statistic, its noise. (The
verdict under load is tested end to end in tests/integration/test_gate.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from mlgate.gate import latency


@pytest.fixture(scope="module")
def boosters() -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] + rng.normal(size=300) > 0).astype(int)
    train = xgb.DMatrix(x, label=y)
    return {
        "candidate": xgb.train({"objective": "binary:logistic", "max_depth": 3}, train, 20),
        "champion": xgb.train({"objective": "binary:logistic", "max_depth": 2}, train, 10),
        "rows": x,
    }


def test_without_a_compiler_the_booster_is_measured_and_the_record_says_so(
    boosters, tmp_path
) -> None:
    models = {k: boosters[k] for k in ("candidate", "champion")}
    trees, engine, note = latency.serving_trees(models, "no-such-cc", tmp_path)
    assert engine == "xgboost" and "no C compiler 'no-such-cc'" in note
    assert {t.engine for t in trees.values()} == {"xgboost"}


def test_the_record_holds_each_models_median_its_interval_and_the_ratio(boosters) -> None:
    models = {k: boosters[k] for k in ("candidate", "champion")}
    record = latency.measure_models(models, boosters["rows"], compiler="no-such-cc", rounds=7)
    assert record["engine"] == "xgboost" and record["rounds"] == 7
    assert record["unit"] == "ms of CPU time per row" and "thread_time" in record["method"]
    for role in ("candidate", "champion", "ratio"):
        spread = record[role]
        assert spread["min"] <= spread["ci_low"] <= spread["median"] <= spread["ci_high"]
        assert spread["ci_high"] <= spread["max"] and spread["mad"] >= 0
    assert set(record["calls_per_batch"]) == {"candidate", "champion"}


def test_the_spread_is_the_median_with_a_seeded_bootstrap_interval() -> None:
    values = np.array([1.0, 2.0, 2.0, 3.0, 10.0, 2.5, 2.2])
    a = latency._spread(values, np.random.default_rng(1))
    b = latency._spread(values, np.random.default_rng(1))
    assert a == b, "the same measurements give the same record"
    assert a["median"] == np.median(values) == 2.2
    assert a["mad"] == np.median(np.abs(values - 2.2))
    assert a["ci_low"] <= 2.2 <= a["ci_high"] and a["ci_high"] < 10.0, "robust to one outlier"
