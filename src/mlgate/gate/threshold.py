"""The decision threshold: a fixed probability, or a rule applied to the validation part.

`metrics.threshold` is either a number in (0, 1) or a rule:

- `max_f1`: the threshold that maximises F1 on the validation part;
- `precision>=P`: the lowest threshold whose validation precision reaches P (the most recall
  at that precision);
- `recall>=R`: of the thresholds whose validation recall reaches R, the one with the most
  precision.

Training applies it once, on the validation part (never the holdout, which judges it), and
records the number with the model: tag `mlgate.threshold` on the version (with
`mlgate.threshold.rule`) and param `metrics.threshold` on the run. Evaluation computes each
model's threshold metrics at its own recorded threshold, and the serving bundle labels rows
(`?labels=true`) with it. Parsing imports nothing heavy (settings parse rules in every stage);
choosing imports numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlgate.errors import ConfigError, ModelError, did_you_mean

TAG = "mlgate.threshold"
RULE_TAG = "mlgate.threshold.rule"
PARAM = "metrics.threshold"
RULE_PARAM = "metrics.threshold_rule"
DEFAULT = 0.5  # what a model recorded without a threshold is served with
RULES = ("max_f1", "precision>=", "recall>=")
if TYPE_CHECKING:
    import numpy as np
_TARGET = re.compile(r"(?P<metric>precision|recall)\s*>=\s*(?P<target>[0-9]*\.?[0-9]+)")
_FIX = (
    "set metrics.threshold to a probability such as 0.5, or to a rule: max_f1, "
    "precision>=0.9 or recall>=0.8"
)


@dataclass(frozen=True)
class Rule:
    kind: str  # fixed | max_f1 | precision | recall
    value: float | None = None  # the fixed threshold, or the target precision / recall

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.value:g}"
        if self.kind == "max_f1":
            return "max_f1"
        return f"{self.kind}>={self.value:g}"


@dataclass(frozen=True)
class Chosen:
    threshold: float
    rule: str
    validation: dict[str, float]  # precision, recall, f1 at the threshold, on validation

    def describe(self) -> str:
        if self.rule == f"{self.threshold:g}":
            return "fixed"
        return f"{self.rule} on validation"


def parse(value: Any) -> Rule:
    """`metrics.threshold` as a rule; anything else is a ConfigError that says what is allowed."""
    if isinstance(value, bool):
        raise ConfigError(f"metrics.threshold must be a number or a rule, got {value!r}", fix=_FIX)
    if isinstance(value, (int, float)):
        if not 0 < value < 1:
            raise ConfigError(f"metrics.threshold must be between 0 and 1, got {value}", fix=_FIX)
        return Rule("fixed", float(value))
    text = str(value).strip().lower().replace(" ", "")
    if text == "max_f1":
        return Rule("max_f1")
    if match := _TARGET.fullmatch(text):
        target = float(match["target"])
        if not 0 < target <= 1:
            raise ConfigError(
                f"metrics.threshold {value!r}: the target {match['metric']} must be in (0, 1]",
                fix=_FIX,
            )
        return Rule(match["metric"], target)
    raise ConfigError(
        f"metrics.threshold {value!r} is neither a probability nor a rule"
        f"{did_you_mean(text, ['max_f1', 'precision>=0.9', 'recall>=0.8'])}",
        fix=_FIX,
    )


def counts(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, highest first, and the true / false positives when predicting
    positive at or above each."""
    import numpy as np

    y = np.asarray(y_true).astype(bool)
    scores = np.asarray(proba, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, y = scores[order], y[order]
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # end of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return scores[last], tp.astype(float), fp.astype(float)


def choose(rule: Rule, y_true: np.ndarray, proba: np.ndarray) -> Chosen:
    """Apply `rule` to validation labels and scores. A target no threshold reaches is a
    ModelError (training stops; no version is registered)."""
    import numpy as np

    y = np.asarray(y_true).astype(bool)
    if rule.kind == "fixed":
        assert rule.value is not None
        return Chosen(rule.value, str(rule), at(y, proba, rule.value))
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ModelError(
            f"metrics.threshold {rule} needs both classes in the validation part",
            fix="raise split.validation_fraction, or set metrics.threshold to a number",
        )
    scores, tp, fp = counts(y, proba)
    precision = tp / (tp + fp)
    recall = tp / positives
    f1 = 2 * tp / (tp + fp + positives)
    if rule.kind == "max_f1":
        k = int(np.argmax(f1))  # the first (highest) threshold among ties
    else:
        achieved = precision if rule.kind == "precision" else recall
        assert rule.value is not None
        ok = np.nonzero(achieved >= rule.value - 1e-12)[0]
        if len(ok) == 0:
            raise ModelError(
                f"no threshold reaches {rule} on the validation part (best "
                f"{rule.kind} {achieved.max():.4f})",
                fix=f"lower the target of metrics.threshold, or use max_f1; the model "
                f"cannot reach that {rule.kind} on this data",
            )
        # precision: the lowest such threshold (recall only grows as it falls); recall: the
        # one with the most precision (precision is not monotone), the highest among ties
        k = int(ok[-1] if rule.kind == "precision" else ok[np.argmax(precision[ok])])
    # Half-way to the next lower score: the same rows are positive, and a score computed a
    # rounding error away (the compiled trees, float32) lands on the same side.
    threshold = (scores[k] + scores[k + 1]) / 2 if k + 1 < len(scores) else scores[k]
    threshold = float(min(max(threshold, 1e-9), 1 - 1e-9))
    return Chosen(threshold, str(rule), at(y, proba, threshold))


def at(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 at `threshold` (0 where undefined)."""
    import numpy as np

    y = np.asarray(y_true).astype(bool)
    predicted = np.asarray(proba, dtype=np.float64) >= threshold
    tp = int(np.count_nonzero(predicted & y))
    fp, fn = int(np.count_nonzero(predicted)) - tp, int(y.sum()) - tp
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }


def recorded(
    tags: Mapping[str, str], params: Mapping[str, str] | None = None
) -> tuple[float | None, str | None]:
    """The threshold a model version was trained with, and its rule: the version's tag, else
    the run's param (models trained before the tag). (None, None) when neither holds one."""
    for source, key, rule_key in ((tags, TAG, RULE_TAG), (params or {}, PARAM, RULE_PARAM)):
        raw = source.get(key)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isfinite(value) and 0 < value < 1:
            return value, source.get(rule_key) or f"{value:g}"
    return None, None


def flags(role: str, values: Mapping[str, float], threshold: float) -> list[str]:
    """What makes threshold metrics meaningless: 0, or undefined (no row predicted positive)."""
    zero = [k for k in ("f1", "precision", "recall") if values.get(k) is None or values[k] == 0]
    if not zero:
        return []
    undefined = values.get("precision", 0) == 0 and values.get("recall", 0) == 0
    why = (
        "no holdout row scores at or above it, so precision is undefined"
        if undefined
        else "no true positive at it"
    )
    return [
        f"{role} {', '.join(zero)} {'is' if len(zero) == 1 else 'are'} 0 at threshold "
        f"{threshold:.4g} ({why}): its threshold metrics say nothing about the model; set "
        "metrics.threshold to a rule such as max_f1 and re-train"
    ]


def threshold_of(tags: Mapping[str, str], settings: Any) -> float:
    """The threshold a version serves with: recorded, else metrics.threshold when that is a
    number, else the bundle's default."""
    value, _ = recorded(tags)
    if value is not None:
        return value
    configured = settings.metrics.threshold
    return configured if isinstance(configured, float) else DEFAULT
