"""Binary-classification metrics, overall and per declared slice.

Shared by training (holdout metrics) and evaluation (champion against candidate). Computed with
numpy alone: importing sklearn.metrics costs 2-3 s of every `mlgate train` and `mlgate
evaluate` process (issue 18); tests/unit/test_split_metrics.py checks each value against
scikit-learn's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from mlgate.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float
) -> dict[str, float]:
    """AUC, PR-AUC, log loss, Brier score, and F1 / precision / recall at `threshold`.
    Metrics that need both classes are left out when a set has one class only."""
    y = np.asarray(y_true).astype(bool)
    proba = np.asarray(proba, dtype=np.float64)
    out: dict[str, float] = {}
    positives = int(y.sum())
    if 0 < positives < len(y):
        out["auc"] = roc_auc(y, proba)
        out["pr_auc"] = average_precision(y, proba)
        out["log_loss"] = log_loss(y, proba)
    out["brier"] = float(np.mean((proba - y) ** 2))
    # Counts, not sklearn's scorers: these validate their input with several passes of
    # np.unique each, which was a third of the gate's time on 1,000,000 rows (make bench).
    predicted = proba >= threshold
    tp = int(np.count_nonzero(predicted & y))
    fp, fn = int(np.count_nonzero(predicted)) - tp, positives - tp
    out["precision"] = tp / (tp + fp) if tp + fp else 0.0
    out["recall"] = tp / (tp + fn) if tp + fn else 0.0
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {k: float(v) for k, v in sorted(out.items()) if not math.isnan(v)}


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy.stats.rankdata's default)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of ties starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    y = np.asarray(y, dtype=bool)
    m = int(y.sum())
    n = len(y) - m
    return float((midranks(proba)[y].sum() - m * (m + 1) / 2) / (m * n))


def average_precision(y: np.ndarray, proba: np.ndarray) -> float:
    """Sum over distinct thresholds, highest first, of precision times the gain in recall
    (sklearn's average_precision_score: no interpolation)."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-np.asarray(proba, dtype=np.float64), kind="mergesort")
    scores = np.asarray(proba, dtype=np.float64)[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie run
    tps = np.cumsum(y[order])[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [eps, 1 - eps] as sklearn does."""
    y = np.asarray(y, dtype=bool)
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(proba, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def slice_masks(frame: pd.DataFrame, slices: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Evaluate each slice's pandas query to a row mask; a bad query is a ConfigError."""
    masks = {}
    for name, query in slices.items():
        try:
            masks[name] = np.asarray(frame.eval(query), dtype=bool)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ConfigError(
                f"metrics.slices.{name} ({query!r}) cannot be evaluated: {exc}",
                fix='write a pandas query over the data\'s columns, e.g. "mean_radius >= 15"',
            ) from exc
        if masks[name].shape != (len(frame),):
            raise ConfigError(
                f"metrics.slices.{name} ({query!r}) is not a row condition",
                fix='compare a column with a value, e.g. "mean_radius >= 15"',
            )
    return masks


def slice_metrics(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    proba: np.ndarray,
    slices: Mapping[str, str],
    threshold: float,
) -> dict[str, dict[str, float]]:
    """Metrics for each slice, a named pandas query over the same rows, plus its row count."""
    out = {}
    for name, mask in slice_masks(frame, slices).items():
        values = classification_metrics(y_true[mask], proba[mask], threshold) if mask.any() else {}
        out[name] = {"rows": float(mask.sum()), **values}
    return out
