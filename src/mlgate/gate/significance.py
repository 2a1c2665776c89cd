"""Is the candidate's AUC really different from the champion's on the same rows?

DeLong's paired test (DeLong, DeLong & Clarke-Pearson 1988), in Sun & Xu's fast form (2014):
the AUCs' covariance comes from the structural components of each model's scores, computed
with midranks in O(n log n). Both models must be scored on the same rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from mlgate.gate.metrics import midranks  # scipy.stats's rankdata, without scipy's import (~1.5 s)


@dataclass(frozen=True)
class PairedAuc:
    method: str
    auc_candidate: float
    auc_champion: float
    difference: float  # candidate - champion
    std_error: float
    z: float
    p_value: float  # two-sided
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, float | str | bool]:
        return {**asdict(self), "significant": self.significant}


def delong(
    y_true: np.ndarray, candidate: np.ndarray, champion: np.ndarray, confidence: float = 0.95
) -> PairedAuc:
    """DeLong's test of AUC(candidate) - AUC(champion), with a `confidence` interval."""
    y = np.asarray(y_true).astype(int)
    scores = np.vstack([np.asarray(candidate, float), np.asarray(champion, float)])
    positive, negative = scores[:, y == 1], scores[:, y == 0]
    m, n = positive.shape[1], negative.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least 2 rows of each class, got {m} and {n}")
    aucs, v10, v01 = [], [], []
    for k in range(2):
        tx = midranks(positive[k])
        ty = midranks(negative[k])
        tz = midranks(np.concatenate([positive[k], negative[k]]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)  # each positive's share of negatives scored below it
        v01.append(1.0 - (tz[m:] - ty) / m)  # each negative's share of positives above it
    s = np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    difference = float(aucs[0] - aucs[1])
    std_error = math.sqrt(max(variance, 0.0))
    if std_error == 0.0:  # identical rankings: no evidence either way
        z, p_value = 0.0, 1.0
    else:
        z = difference / std_error
        p_value = math.erfc(abs(z) / math.sqrt(2))  # 2 * the normal's upper tail
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * std_error
    return PairedAuc(
        method="DeLong",
        auc_candidate=float(aucs[0]),
        auc_champion=float(aucs[1]),
        difference=difference,
        std_error=std_error,
        z=float(z),
        p_value=p_value,
        ci_low=difference - half,
        ci_high=difference + half,
        confidence=confidence,
    )


def statement(paired: PairedAuc, *, margin: float | None, rows: int) -> dict[str, object]:
    """The comparison in words, for the decision record, the PR comment and the job summary:
    which test, which margin, which interval, and what they say."""
    level = f"{paired.confidence * 100:g}%"
    interval = f"[{paired.ci_low:+.4f}, {paired.ci_high:+.4f}]"
    if paired.ci_high < 0:
        difference = (
            f"the candidate is significantly worse than the champion (the whole {level} "
            "interval is below 0)"
        )
    elif paired.ci_low > 0:
        difference = (
            f"the candidate is significantly better than the champion (the whole {level} "
            "interval is above 0)"
        )
    else:
        difference = f"the difference is not significant (the {level} interval contains 0)"
    if margin is None:
        inferiority = "non-inferiority is not tested (gate.max_auc_drop is null)"
    elif paired.ci_low > -margin:
        inferiority = (
            f"non-inferiority is shown: the lower end {paired.ci_low:+.4f} is above "
            f"-{margin:g}, so the candidate is at most {margin:g} AUC worse at {level} confidence"
        )
    else:
        inferiority = (
            f"non-inferiority is not shown: the lower end {paired.ci_low:+.4f} is not above "
            f"-{margin:g}, so the candidate may be more than {margin:g} AUC worse"
        )
    return {
        "test": f"{paired.method}'s paired test of candidate - champion AUC on the same "
        f"{rows} holdout rows",
        "margin": margin,
        "confidence": paired.confidence,
        "difference": paired.difference,
        "interval": [paired.ci_low, paired.ci_high],
        "p_value": paired.p_value,
        "conclusion": (
            f"AUC difference {paired.difference:+.4f}, {level} CI {interval}, "
            f"p = {paired.p_value:.3g}: {difference}; {inferiority}."
        ),
    }
