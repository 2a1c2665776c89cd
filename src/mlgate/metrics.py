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
    predicted = (proba >= threshold).astype(int)
    out: dict[str, float] = {}
    if len(np.unique(y_true)) == 2:
        out["auc"] = skm.roc_auc_score(y_true, proba)
        out["pr_auc"] = skm.average_precision_score(y_true, proba)
        out["log_loss"] = skm.log_loss(y_true, proba, labels=[0, 1])
    out["brier"] = skm.brier_score_loss(y_true, proba, pos_label=1)
    out["f1"] = skm.f1_score(y_true, predicted, zero_division=0)
    out["precision"] = skm.precision_score(y_true, predicted, zero_division=0)
    out["recall"] = skm.recall_score(y_true, predicted, zero_division=0)
    return {k: float(v) for k, v in out.items() if not math.isnan(v)}


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
