"""DeLong's test against an independent, by-definition computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlgate.gate.significance import PairedAuc, delong, statement


def by_definition(y, a, b):
    """Placement values straight from the definition (no ranks): psi(x, y) = 1, 1/2 or 0."""
    out = []
    for scores in (a, b):
        pos, neg = scores[y == 1], scores[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = out
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov([v10_a, v10_b]), np.cov([v01_a, v01_b])
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a - auc_b, var


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_definition_with_ties(seed) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    a = np.round(y * 0.8 + rng.normal(0, 0.6, 300), 1)  # rounding makes ties
    b = np.round(y * 0.5 + rng.normal(0, 0.6, 300), 1)
    result = delong(y, a, b)
    difference, variance = by_definition(y, a, b)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    assert result.std_error**2 == pytest.approx(variance, rel=1e-9)
    assert result.auc_candidate == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(difference) / variance**0.5))
    assert result.ci_low < result.difference < result.ci_high


def test_a_clear_gain_is_significant_and_noise_is_not() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 2000)
    strong = y + rng.normal(0, 0.7, 2000)
    weak = y + rng.normal(0, 1.5, 2000)
    assert delong(y, strong, weak).significant and delong(y, strong, weak).difference > 0
    twin = strong + rng.normal(0, 1e-3, 2000)
    assert not delong(y, strong, twin).significant


def test_identical_models_give_no_evidence() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.3, 0.7, 0.6, 0.2])
    result = delong(y, p, p)
    assert result.difference == 0 and result.p_value == 1.0 and not result.significant


def test_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="at least 2 rows of each class"):
        delong(np.array([1, 1, 1, 0]), np.arange(4.0), np.arange(4.0))


def interval(low: float, high: float) -> PairedAuc:
    return PairedAuc("DeLong", 0.9, 0.9, (low + high) / 2, 0.005, 0.0, 0.04, low, high, 0.95)


@pytest.mark.parametrize(
    ("low", "high", "margin", "words"),
    [
        (
            -0.0096,
            -0.0002,
            0.01,
            [
                "significantly worse than the champion (the whole 95% interval is below 0)",
                "non-inferiority is shown: the lower end -0.0096 is above -0.01",
            ],
        ),
        (
            -0.02,
            0.01,
            0.01,
            [
                "the difference is not significant (the 95% interval contains 0)",
                "non-inferiority is not shown: the lower end -0.0200 is not above -0.01",
            ],
        ),
        (0.003, 0.02, 0.01, ["significantly better than the champion"]),
        (-0.003, 0.02, None, ["non-inferiority is not tested"]),
    ],
)
def test_the_comparison_in_words(low, high, margin, words) -> None:
    said = statement(interval(low, high), margin=margin, rows=114)
    assert said["test"] == (
        "DeLong's paired test of candidate - champion AUC on the same 114 holdout rows"
    )
    assert said["margin"] == margin and said["interval"] == [low, high]
    assert f"95% CI [{low:+.4f}, {high:+.4f}]" in said["conclusion"]
    for phrase in words:
        assert phrase in said["conclusion"]


def test_shared_orders_and_float32_scores_match_the_definition() -> None:
    """The gate hands DeLong the sort it made for the metrics (`orders`); float32 scores (what
    XGBoost predicts) take the packed-key sort. Same answer as the definition."""
    from mlgate.gate.metrics import Ranking, sort_order

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    a = np.round(y * 0.7 + rng.normal(0, 0.5, 400), 1).astype(np.float32)
    b = np.round(y * 0.4 + rng.normal(0, 0.5, 400), 1).astype(np.float32)
    shared = delong(y, a, b, rankings=(Ranking(y, a, sort_order(a)), Ranking(y, b)))
    difference, variance = by_definition(y, a.astype(float), b.astype(float))
    assert shared.difference == pytest.approx(difference, abs=1e-12)
    assert shared.std_error**2 == pytest.approx(variance, rel=1e-9)
    assert shared == delong(y, a, b)
