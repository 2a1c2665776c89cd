"""Is the candidate's AUC really different from the champion's on the same rows?

DeLong's paired test (DeLong, DeLong & Clarke-Pearson 1988), in Sun & Xu's fast form (2014):
the AUCs' covariance comes from the structural components of each model's scores. Each model's
scores are sorted once (`metrics.sort_order`, which the gate shares with the metrics); the
components follow from the counts of positives and negatives below each run of tied scores,
so the test is exact and O(n log n) with one sort per model. Both models must be scored on the
same rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from mlgate.gate.metrics import Ranking


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
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    confidence: float = 0.95,
    rankings: tuple[Ranking, Ranking] | None = None,
) -> PairedAuc:
    """DeLong's test of AUC(candidate) - AUC(champion), with a `confidence` interval.
    `rankings` are the two models' `Ranking`s on these rows when the caller has them already."""
    y = np.asarray(y_true).astype(int).reshape(-1) == 1
    m = int(np.count_nonzero(y))
    n = len(y) - m
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least 2 rows of each class, got {m} and {n}")
    aucs, v10, v01 = [], [], []
    for k, scores in enumerate((candidate, champion)):
        ranked = rankings[k] if rankings is not None else Ranking(y, scores)
        aucs.append(ranked.runs.auc())
        by_row = np.empty(len(y), dtype=np.float64)
        by_row[ranked.order] = ranked.runs.components(ranked.y_sorted)
        v10.append(by_row[y])  # each positive's share of negatives scored below it
        v01.append(by_row[~y])  # each negative's share of positives scored above it
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
