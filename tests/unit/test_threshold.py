"""The decision threshold: rules checked against a brute-force search with sklearn's scorers
(the oracle), and the 6%-positives case of issue 18 end to end through mlgate's own training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from mlgate.errors import ConfigError, ModelError
from mlgate.gate import threshold as thresholds
from mlgate.gate.metrics import classification_metrics
from mlgate.pipeline.split import split_frame
from mlgate.pipeline.train import fit, predict
from mlgate.settings import load_settings


def scored(seed: int, n: int = 300, rate: float = 0.3, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    proba = 1 / (1 + np.exp(-(1.5 * y + rng.normal(-1, 1, n))))
    return y, np.round(proba, 2) if ties else proba


def brute_force(y, proba):
    """Every threshold that changes a prediction, each scored by counting (sklearn's scorers,
    the same oracle, take seconds for a few hundred thresholds)."""
    rows = []
    positive = y == 1
    for t in np.unique(proba):
        predicted = proba >= t
        tp = np.sum(predicted & positive)
        p = tp / predicted.sum()
        r = tp / positive.sum()
        rows.append((t, p, r, 2 * p * r / (p + r) if tp else 0.0))
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_max_f1_finds_the_best_f1(seed, ties) -> None:
    y, proba = scored(seed, ties=ties)
    chosen = thresholds.choose(thresholds.parse("max_f1"), y, proba)
    best = max(f1 for *_, f1 in brute_force(y, proba))
    assert f1_score(y, proba >= chosen.threshold) == pytest.approx(best, abs=1e-12)
    assert chosen.validation["f1"] == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("metric", "target"), [("precision", 0.7), ("recall", 0.8)])
def test_a_target_is_reached_with_the_most_of_the_other(seed, metric, target) -> None:
    y, proba = scored(seed, ties=seed == 2)
    chosen = thresholds.choose(thresholds.parse(f"{metric}>={target}"), y, proba)
    predicted = proba >= chosen.threshold
    precision, recall = precision_score(y, predicted), recall_score(y, predicted)
    table = brute_force(y, proba)
    if metric == "precision":
        assert precision >= target
        assert recall == pytest.approx(max(r for _, p, r, _ in table if p >= target))
    else:
        assert recall >= target
        assert precision == pytest.approx(max(p for _, p, r, _ in table if r >= target))


def test_the_threshold_sits_between_scores() -> None:
    """Half-way to the next lower score: a score a rounding error away lands alike."""
    y = np.array([0, 1, 1, 0, 1, 0])
    proba = np.array([0.1, 0.9, 0.7, 0.4, 0.6, 0.2])
    chosen = thresholds.choose(thresholds.parse("max_f1"), y, proba)
    assert chosen.threshold == pytest.approx(0.5) and chosen.validation["f1"] == 1.0


def test_an_unreachable_target_stops_training() -> None:
    y, proba = scored(0)
    with pytest.raises(ModelError, match="no threshold reaches precision>=1 on the validation"):
        thresholds.choose(thresholds.parse("precision>=1"), y, proba * 0 + 0.5)
    with pytest.raises(ModelError, match="needs both classes"):
        thresholds.choose(thresholds.parse("max_f1"), np.zeros(5), np.arange(5) / 5)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "between 0 and 1"),
        (1.0, "between 0 and 1"),
        ("max-f1", 'did you mean "max_f1"'),
        ("precision>=0", "must be in (0, 1]"),
        ("accuracy>=0.9", "neither a probability nor a rule"),
        (True, "a number or a rule"),
    ],
)
def test_bad_rules_say_what_is_allowed(value, message) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        thresholds.parse(value)
    assert message in str(info.value) and "max_f1" in info.value.fix


@pytest.mark.parametrize(
    ("tags", "params", "expected"),
    [
        ({"mlgate.threshold": "0.31", "mlgate.threshold.rule": "max_f1"}, {}, (0.31, "max_f1")),
        ({}, {"metrics.threshold": "0.5"}, (0.5, "0.5")),  # trained before the tag
        ({"mlgate.threshold": "nan"}, {"metrics.threshold": "0.4"}, (0.4, "0.4")),
        ({}, {"metrics.threshold": "max_f1"}, (None, None)),
        ({}, {}, (None, None)),
    ],
)
def test_the_recorded_threshold(tags, params, expected) -> None:
    assert thresholds.recorded(tags, params) == expected


def imbalanced(rows: int = 4000, seed: int = 3) -> pd.DataFrame:
    """6% positives, a weak signal on three of eight features: no row reaches 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.06).astype(int)
    x = rng.normal(size=(rows, 8))
    x[:, :3] += 0.8 * y[:, None]
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    return frame.assign(label=y)


def test_six_percent_positives(tmp_path) -> None:
    """Issue 18: at the fixed 0.5 every threshold metric was 0, silently. The rule chosen on
    the validation part gives F1 > 0 on the holdout, and the fixed 0.5 is flagged."""
    frame = imbalanced()
    assert 0.05 < frame.label.mean() < 0.07
    settings = load_settings(env={}, cwd=tmp_path, overrides=["metrics.threshold=max_f1"])
    split = split_frame(
        frame, target="label", seed=42, validation_fraction=0.2, holdout_fraction=0.2
    )
    booster, _ = fit(split, settings)
    validation = split.validation.label.to_numpy()
    rule = thresholds.parse(settings.metrics.threshold)
    chosen = thresholds.choose(rule, validation, predict(booster, split.validation, settings))
    y = split.holdout.label.to_numpy()
    proba = predict(booster, split.holdout, settings)

    fixed = classification_metrics(y, proba, 0.5)
    assert proba.max() < 0.5 and fixed["f1"] == 0  # the case of the issue
    flagged = thresholds.flags("candidate", fixed, 0.5)
    assert len(flagged) == 1 and "f1, precision, recall are 0 at threshold 0.5" in flagged[0]
    assert "precision is undefined" in flagged[0] and "max_f1" in flagged[0]

    ruled = classification_metrics(y, proba, chosen.threshold)
    assert 0 < chosen.threshold < 0.5 and chosen.rule == "max_f1"
    assert ruled["f1"] > 0 and ruled["precision"] > 0 and ruled["recall"] > 0
    assert thresholds.flags("candidate", ruled, chosen.threshold) == []
