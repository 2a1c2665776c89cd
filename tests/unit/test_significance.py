"""DeLong's test against an independent, by-definition computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlgate.significance import delong


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
