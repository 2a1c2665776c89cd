"""Drift on categorical features (issue 19): evidently is told which columns are categorical,
so it runs a categorical test on them (chi-square at these sizes), and the summary and the
Markdown name the test per column. Generated tables: one where a category's share shifts
(drift), one where only the order of the rows changes (no drift). The oracle for the score:
scipy's chi-square test of the current counts against the reference shares, computed here.

Cost: two evidently reports on 600 rows x 2 columns (a few seconds in all, no services)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlgate.pipeline import drift
from mlgate.settings import MonitorSettings

PLANS = ["basic", "gold", "pro"]


def reference(rows: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "charges": rng.normal(60, 15, rows),
            "plan": rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2]).astype(object),
        }
    )


def chi_square_p(ref: pd.Series, cur: pd.Series) -> float:
    shares = ref.value_counts(normalize=True).reindex(PLANS, fill_value=0)
    counts = cur.value_counts().reindex(PLANS, fill_value=0)
    return float(stats.chisquare(counts, shares * len(cur)).pvalue)


def compare(ref: pd.DataFrame, cur: pd.DataFrame) -> dict:
    # drift_share 0.5: one of the two columns drifting is drift
    _, summary = drift.compare(ref, cur, ["plan"], MonitorSettings(drift_share=0.5))
    return summary


def test_a_shifted_category_share_is_drift_by_a_categorical_test() -> None:
    ref = reference()
    rng = np.random.default_rng(6)
    cur = ref.sample(frac=1.0, random_state=1).reset_index(drop=True)
    cur["plan"] = rng.choice(PLANS, len(cur), p=[0.2, 0.3, 0.5]).astype(object)
    summary = compare(ref, cur)
    plan = summary["columns"]["plan"]
    assert plan["kind"] == "categorical" and plan["method"].startswith("chi-square")
    assert plan["score"] == pytest.approx(chi_square_p(ref["plan"], cur["plan"]), rel=1e-6)
    assert plan["drifted"] is True and summary["drift"] is True
    charges = summary["columns"]["charges"]
    assert charges["kind"] == "numerical" and not charges["method"].startswith("chi-square")
    assert charges["drifted"] is False  # the same values, reordered


def test_the_same_categories_in_another_order_are_no_drift() -> None:
    ref = reference()
    cur = ref.sample(frac=1.0, random_state=2).reset_index(drop=True)
    summary = compare(ref, cur)
    plan = summary["columns"]["plan"]
    assert plan["method"].startswith("chi-square")
    assert plan["score"] == pytest.approx(chi_square_p(ref["plan"], cur["plan"]), rel=1e-6)
    assert plan["drifted"] is False and summary["drift"] is False and summary["count"] == 0


def test_the_markdown_names_each_columns_test() -> None:
    ref = reference()
    summary = compare(ref, ref.sample(frac=1.0, random_state=3))
    summary.update(current={"rows": 600, "source": "x"}, reference={"rows": 600, "data_md5": "m"})
    text = drift.to_markdown(drift.Result("drift", "m", "1", False, "no drift", summary))
    plan_row = next(line for line in text.splitlines() if line.startswith("| `plan`"))
    assert "chi-square p_value (categorical)" in plan_row
    charges_row = next(line for line in text.splitlines() if line.startswith("| `charges`"))
    assert "(numerical)" in charges_row


def test_prediction_log_codes_are_read_back_as_categories() -> None:
    """The server logs code i for the i-th recorded category and NaN for unseen or missing."""
    logged = pd.DataFrame({"charges": [1.0, 2.0, 3.0, 4.0], "plan": [0.0, 2.0, np.nan, 1.0]})
    back = drift.decode(logged, {"plan": PLANS})
    assert [None if pd.isna(v) else v for v in back["plan"]] == ["basic", "pro", None, "gold"]
    assert back["charges"].tolist() == [1.0, 2.0, 3.0, 4.0]
    # and the features as compared: categories as text, missing kept missing
    both = drift._features(back, ["charges", "plan"], "log", ["plan"])
    assert [None if pd.isna(v) else v for v in both["plan"]] == ["basic", "pro", None, "gold"]


def test_the_trained_categorical_features_are_compared_as_categories() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]})
    tags = {"mlgate.features.categorical": "a"}
    assert drift.categorical_features(frame, ["a", "b", "c"], tags) == ["a", "b"]
