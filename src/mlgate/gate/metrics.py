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
    y_true: np.ndarray, proba: np.ndarray, threshold: float, ranking: Ranking | None = None
) -> dict[str, float]:
    """AUC, PR-AUC, log loss, Brier score, and F1 / precision / recall at `threshold`.
    Metrics that need both classes are left out when a set has one class only. `ranking` is
    `Ranking(y_true, proba)` when the caller has it already (the gate sorts each model's scores
    once for its metrics, its slices and DeLong's test)."""
    if ranking is None:
        ranking = Ranking(y_true, proba)
    return _sorted_metrics(ranking.y_sorted, ranking.p_sorted, threshold, ranking.runs)


def _sorted_metrics(
    y: np.ndarray, proba: np.ndarray, threshold: float, runs: TieRuns | None = None
) -> dict[str, float]:
    """classification_metrics of rows already in ascending order of score."""
    out: dict[str, float] = {}
    positives = int(np.count_nonzero(y))
    if 0 < positives < len(y):
        runs = runs or TieRuns(y, proba)
        out["auc"] = runs.auc()
        out["pr_auc"] = runs.average_precision()
        out["log_loss"] = runs.log_loss()
    out["brier"] = float(np.mean((proba - y) ** 2))
    # Counts, not sklearn's scorers: these validate their input with several passes of
    # np.unique each, which was a third of the gate's time on 1,000,000 rows (make bench).
    # The rows are sorted: those predicted positive are a tail.
    first = int(np.searchsorted(proba, threshold, side="left"))
    tp = int(np.count_nonzero(y[first:]))
    fp, fn = (len(y) - first) - tp, positives - tp
    out["precision"] = tp / (tp + fp) if tp + fp else 0.0
    out["recall"] = tp / (tp + fn) if tp + fn else 0.0
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {k: float(v) for k, v in sorted(out.items()) if not math.isnan(v)}


class Ranking:
    """One model's scores on a set of rows, sorted once (`sort_order`), with the labels in the
    same order and the runs of tied scores: what the metrics, the slices and DeLong's test
    share, so the gate sorts each model's scores once."""

    def __init__(
        self, y_true: np.ndarray, proba: np.ndarray, order: np.ndarray | None = None
    ) -> None:
        self.y = np.asarray(y_true).astype(bool).reshape(-1)
        self.proba = np.asarray(proba, dtype=np.float64).reshape(-1)
        self.order = sort_order(self.proba) if order is None else order
        self.y_sorted = self.y[self.order]
        self.p_sorted = self.proba[self.order]
        self.runs = TieRuns(self.y_sorted, self.p_sorted)


def sort_order(proba: np.ndarray) -> np.ndarray:
    """Row indices in ascending order of score; tied rows in any order (every statistic here
    treats a run of ties as one). Exact either way it is computed:

    * scores that are float32 values (XGBoost's predictions, also when handed over as float64:
      the round trip through float32 is checked) are sorted as 64-bit keys, the score's bits
      made order-preserving above the row index, with `np.sort`: a vectorised sort, about 3.5x
      faster than `np.argsort` on 10,000,000 rows (make bench, group dask);
    * any other scores with `np.argsort`.
    """
    p = np.asarray(proba).reshape(-1)
    n = len(p)
    if p.dtype != np.float32:
        wide = np.asarray(p, dtype=np.float64)
        p = wide.astype(np.float32)
        if n >= 2**32 or not np.array_equal(p.astype(np.float64), wide):
            return np.argsort(wide)
    elif n >= 2**32:
        return np.argsort(p)
    bits = (p + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0: one tie run
    # negatives: all bits flipped (a larger magnitude sorts first); the rest: the sign bit set
    key = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    return (key & np.uint64(0xFFFFFFFF)).astype(np.intp)


class TieRuns:
    """Runs of tied scores in ascending order, with the positives and negatives before and in
    each: AUC, average precision and DeLong's structural components all follow from these
    counts without another sort (integers, so AUC is exact up to its one division)."""

    def __init__(self, y: np.ndarray, ordered: np.ndarray) -> None:
        first = np.empty(len(ordered), dtype=bool)
        first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(ordered))
        below = np.zeros(len(ordered) + 1, dtype=np.int64)  # positives before each position
        np.cumsum(y, out=below[1:])
        self.pos_before = below[starts]
        self.pos_in = below[ends] - self.pos_before
        self.neg_before = starts - self.pos_before
        self.length = ends - starts
        self.neg_in = self.length - self.pos_in
        self.value = ordered[starts]
        self.m = int(below[-1])
        self.n = len(ordered) - self.m

    def auc(self) -> float:
        """Mann-Whitney: each positive counts the negatives below it, ties half."""
        twice = int(np.sum(self.pos_in * (2 * self.neg_before + self.neg_in)))
        return twice / (2 * self.m * self.n)

    def average_precision(self) -> float:
        """Sum over distinct thresholds, highest first, of precision times the gain in recall
        (sklearn's average_precision_score: no interpolation). Predicting positive at or
        above a run's score: true positives m - pos_before, false ones n - neg_before."""
        has = self.pos_in > 0
        tp = self.m - self.pos_before[has]
        fp = self.n - self.neg_before[has]
        return float(np.sum(self.pos_in[has] / self.m * (tp / (tp + fp))))

    def log_loss(self) -> float:
        """Mean negative log-likelihood, one logarithm per run of tied scores, probabilities
        clipped to [eps, 1 - eps] as sklearn does."""
        eps = np.finfo(np.float64).eps
        p = np.clip(np.asarray(self.value, dtype=np.float64), eps, 1 - eps)
        total = np.sum(self.pos_in * np.log(p)) + np.sum(self.neg_in * np.log1p(-p))
        return float(-total / (self.m + self.n))

    def components(self, y: np.ndarray) -> np.ndarray:
        """DeLong's structural components, per row in sorted order: a positive's share of
        negatives scored below it, a negative's share of positives scored above it (ties
        counted half)."""
        v10 = (self.neg_before + self.neg_in / 2) / self.n
        v01 = 1.0 - (self.pos_before + self.pos_in / 2) / self.m
        return np.where(y, np.repeat(v10, self.length), np.repeat(v01, self.length))


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy.stats.rankdata's default)."""
    values = np.asarray(values).reshape(-1)
    order = sort_order(values) if values.dtype.kind == "f" else np.argsort(values)
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of ties starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    return Ranking(y, proba).runs.auc()


def average_precision(y: np.ndarray, proba: np.ndarray) -> float:
    """Sum over distinct thresholds, highest first, of precision times the gain in recall
    (sklearn's average_precision_score: no interpolation)."""
    return Ranking(y, proba).runs.average_precision()


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
    ranking: Ranking | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics for each slice, a named pandas query over the same rows, plus its row count.
    A slice's rows keep the whole set's sort (`ranking`, made once): no sort per slice.
    `masks`: the slices' row masks (`slice_masks` of the same frame and slices), when the
    caller judges several models on the same rows: each query is then evaluated once."""
    out: dict[str, dict[str, float]] = {}
    if masks is None:
        masks = slice_masks(frame, slices)
    if not masks:
        return out
    if ranking is None:
        ranking = Ranking(y_true, proba)
    for name, mask in masks.items():
        keep = mask[ranking.order]
        y, p = ranking.y_sorted[keep], ranking.p_sorted[keep]
        out[name] = {
            "rows": float(mask.sum()),
            **(_sorted_metrics(y, p, threshold) if len(y) else {}),
        }
    return out
