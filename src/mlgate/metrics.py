"""Binary-classification metrics, overall and per declared slice.

Shared by training (holdout metrics) and evaluation (champion against candidate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlgate.errors import ConfigError


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
        out["auc"] = skm.roc_auc_score(y, proba)
        out["pr_auc"] = skm.average_precision_score(y, proba)
        out["log_loss"] = skm.log_loss(y, proba, labels=[False, True])
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
