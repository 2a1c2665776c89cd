"""pipeline.drift's pure parts: the verdict read from evidently's snapshot (a dict written
by hand in evidently's layout here), the report's Markdown, and the feature check."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlgate.errors import DataError
from mlgate.pipeline import drift

COUNT = "evidently:metric_v2:DriftedColumnsCount"
VALUE = "evidently:metric_v2:ValueDrift"


def value_drift(column: str, score: float, method: str = "K-S p_value") -> dict[str, Any]:
    config = {"type": VALUE, "column": column, "method": method, "threshold": 0.05}
    return {"config": config, "value": score}


def check(column: str | None, status: str) -> dict[str, Any]:
    params = {"type": COUNT} if column is None else {"type": VALUE, "column": column}
    return {"metric_config": {"params": params}, "status": status}


REPORT = {
    "metrics": [
        {"config": {"type": COUNT}, "value": {"count": 1.0, "share": 0.5}},
        value_drift("b", 0.01),
        value_drift("a", 0.4),
        value_drift("extra", 0.2),  # not a model feature: left out
    ],
    "tests": [check("a", "SUCCESS"), check("b", "FAIL"), check(None, "FAIL")],
}


def test_the_share_test_decides_and_each_feature_says_if_it_drifted() -> None:
    summary = drift.drift_summary(REPORT, ["a", "b", "missing"])
    assert summary["drift"] is True
    assert (summary["count"], summary["share"]) == (1, 0.5)
    assert list(summary["columns"]) == ["a", "b"]  # the model's order, known features only
    assert summary["columns"]["a"] == {
        "score": 0.4,
        "method": "K-S p_value",
        "kind": "numerical",
        "threshold": 0.05,
        "drifted": False,
    }
    assert summary["columns"]["b"]["drifted"] is True


def test_a_drifted_feature_without_a_failed_share_test_is_no_drift() -> None:
    report = REPORT | {"tests": [check("b", "FAIL"), check(None, "SUCCESS")]}
    assert drift.drift_summary(report, ["a", "b"])["drift"] is False


def test_no_share_test_is_no_verdict_of_drift() -> None:
    summary = drift.drift_summary({"metrics": []}, ["a"])
    assert summary == {"drift": False, "count": 0, "share": 0.0, "columns": {}}


def result(kind: str, summary: dict[str, Any], stale: bool = True) -> drift.Result:
    return drift.Result(kind, "churn", "3", stale, "headline", summary, run_id="r9")


def test_drift_markdown_lists_drifted_features_first() -> None:
    summary = drift.drift_summary(REPORT, ["a", "b"]) | {
        "current": {"rows": 200, "source": "log"},
        "reference": {"rows": 1000, "data_md5": "d41d"},
    }
    text = drift.to_markdown(result("drift", summary))
    lines = text.splitlines()
    assert lines[0] == "### ⚠️ Drift: churn version 3"
    rows = [line for line in lines if line.startswith("| `")]
    assert rows == [
        "| `b` | 0.01 | K-S p_value (numerical) | 0.05 | ❌ drifted |",
        "| `a` | 0.4 | K-S p_value (numerical) | 0.05 | ok |",
    ]
    assert "Current: 200 rows from log; reference: 1000 training rows (data `d41d`)." in text
    assert text.endswith("MLflow run: `r9`.\n")


def test_backtest_markdown_shows_the_change_or_a_dash() -> None:
    summary = {
        "metrics": {"auc": 0.7, "recall": 0.5},
        "training_metrics": {"auc": 0.8},
        "change": {"auc": -0.1},
    }
    text = drift.to_markdown(result("backtest", summary, stale=False))
    assert text.startswith("### ✅ Backtest: churn version 3\n")
    assert "| auc | 0.8000 | 0.7000 | -0.1000 |" in text
    assert "| recall | – | 0.5000 | – |" in text


def test_a_frame_lacking_features_is_a_data_error_naming_them() -> None:
    frame = pd.DataFrame({"a": [1]})
    features = ["a"] + [f"f{i}" for i in range(12)]
    with pytest.raises(DataError) as caught:
        drift._features(frame, features, "prediction log")
    assert caught.value.exit_code == 3
    assert caught.value.message == (
        "the prediction log lacks 12 of the model's features: "
        "f0, f1, f2, f3, f4, f5, f6, f7, f8, f9 and 2 more"
    )


def test_features_are_selected_in_order_and_made_numeric() -> None:
    frame = pd.DataFrame({"b": ["1.5", "x"], "a": [1, 2], "z": [0, 0]})
    out = drift._features(frame, ["a", "b"], "data")
    assert list(out.columns) == ["a", "b"]
    assert out["b"].iloc[0] == 1.5
    assert pd.isna(out["b"].iloc[1])  # not a number: missing, as the model sees it


def test_a_sample_is_drawn_only_from_a_larger_frame() -> None:
    frame = pd.DataFrame({"a": range(10)})
    assert drift._sample(frame, 10, 0) is frame
    sample = drift._sample(frame, 4, 0)
    assert len(sample) == 4 and sample.index.is_unique
    assert sample.equals(drift._sample(frame, 4, 0))  # seeded
