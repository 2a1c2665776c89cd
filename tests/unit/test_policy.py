"""The gate policy as a table: what passes and what fails, and why."""

from __future__ import annotations

import numpy as np
import pytest

from mlgate.gate.decision import Check, Decision, ModelRef
from mlgate.gate.significance import PairedAuc
from mlgate.pipeline.evaluate import policy_checks
from mlgate.settings import GateSettings


def metrics(auc: float | None, f1: float = 0.9, slices: dict | None = None) -> dict:
    overall = {"f1": f1, **({"auc": auc} if auc is not None else {})}
    return {"overall": overall, "slices": slices or {}}


def paired(cand: float, champ: float, low: float = -0.005, high: float = 0.01) -> PairedAuc:
    return PairedAuc("DeLong", cand, champ, cand - champ, 0.01, 0.0, 0.5, low, high, 0.95)


def latency(median: float, high: float | None = None, ratio: float | None = None) -> dict:
    spread = {"median": median, "ci_low": median, "ci_high": high or median, "mad": 0.0}
    out = {"engine": "compiled", "candidate": spread}
    if ratio is not None:
        out["ratio"] = {"median": ratio, "ci_low": ratio, "ci_high": ratio, "mad": 0.0}
    return out


FAST = latency(0.01)


def failed(checks: list[Check]) -> set[str]:
    return {c.name for c in checks if not c.passed}


NON_INFERIOR = "auc vs champion (non-inferiority)"
WORSE = "auc not significantly worse"


@pytest.mark.parametrize(
    ("gate", "cand", "champ", "pair", "expected_failures"),
    [
        (GateSettings(), metrics(0.9), None, None, set()),
        (GateSettings(), metrics(0.7), None, None, {"auc"}),
        (GateSettings(), metrics(None), None, None, {"auc"}),
        (GateSettings(first_model="reject"), metrics(0.9), None, None, {"champion exists"}),
        # interval [-0.008, +0.01]: within the 0.01 margin, not significantly worse
        (GateSettings(), metrics(0.90), metrics(0.905), paired(0.90, 0.905, -0.008), set()),
        # the point estimate is within the margin, the interval's lower end is not
        (
            GateSettings(),
            metrics(0.90),
            metrics(0.905),
            paired(0.90, 0.905, -0.012, 0.002),
            {NON_INFERIOR},
        ),
        (
            GateSettings(),
            metrics(0.88),
            metrics(0.90),
            paired(0.88, 0.90, -0.03, -0.01),
            {NON_INFERIOR, WORSE},
        ),
        # issue 18: CI [-0.0096, -0.0002], p = 0.04: non-inferior at 0.01, yet significantly
        # worse, so not promoted by default ...
        (
            GateSettings(),
            metrics(0.895),
            metrics(0.90),
            paired(0.895, 0.90, -0.0096, -0.0002),
            {WORSE},
        ),
        # ... unless the policy says a significant loss within the margin is acceptable
        (
            GateSettings(reject_significantly_worse=False),
            metrics(0.895),
            metrics(0.90),
            paired(0.895, 0.90, -0.0096, -0.0002),
            set(),
        ),
        (
            GateSettings(max_auc_drop=None, min_auc_gain=0.01),
            metrics(0.93),
            metrics(0.90),
            paired(0.93, 0.90, 0.005, 0.055),
            {"auc gain over champion"},
        ),
        (
            GateSettings(max_auc_drop=None, min_auc_gain=0.01),
            metrics(0.95),
            metrics(0.90),
            paired(0.95, 0.90, 0.02, 0.08),
            set(),
        ),
        (
            GateSettings(require_significance=True),
            metrics(0.95),
            metrics(0.90),
            paired(0.95, 0.90, low=-0.001),
            {"auc gain significant"},
        ),
        (
            GateSettings(require_significance=True),
            metrics(0.95),
            metrics(0.90),
            paired(0.95, 0.90, low=0.01),
            set(),
        ),
        (
            GateSettings(min_f1_ratio=1.02),
            metrics(0.9, f1=0.91),
            metrics(0.9, f1=0.90),
            paired(0.9, 0.9),
            {"f1 ratio vs champion"},
        ),
        (
            GateSettings(min_f1_ratio=1.02),
            metrics(0.9, f1=0.93),
            metrics(0.9, f1=0.90),
            paired(0.9, 0.9),
            set(),
        ),
        (
            GateSettings(slice_min_auc={"big": 0.95}),
            metrics(0.9, slices={"big": {"auc": 0.9}}),
            None,
            None,
            {"auc[big]"},
        ),
        (
            GateSettings(slice_min_auc={"big": 0.95}),
            metrics(0.9, slices={"big": {"rows": 0}}),
            None,
            None,
            {"auc[big]"},
        ),
        (
            GateSettings(min_auc=None, max_latency_ms=None, reject_significantly_worse=False),
            metrics(0.1),
            None,
            None,
            set(),
        ),
    ],
    ids=[
        "first-model-passes",
        "below-min-auc",
        "auc-undefined",
        "first-model-reject",
        "interval-within-margin",
        "point-within-margin-interval-not",
        "beyond-margin-and-worse",
        "issue-18-significantly-worse",
        "significantly-worse-allowed",
        "gain-interval-too-low",
        "gain-interval-above",
        "gain-not-significant",
        "gain-significant",
        "f1-ratio-low",
        "f1-ratio-ok",
        "slice-floor",
        "slice-empty",
        "checks-off",
    ],
)
def test_policy(gate, cand, champ, pair, expected_failures) -> None:
    checks = policy_checks(
        gate, candidate=cand, champion=champ, paired=pair, latency_ms=FAST, fairness=None
    )
    assert failed(checks) == expected_failures


@pytest.mark.parametrize(
    ("gate", "measured", "expected_failures"),
    [
        (GateSettings(), latency(0.3, 0.4), set()),
        # judged on the interval's upper end: a median under the line with noise over it fails
        (GateSettings(), latency(0.9, 1.2), {"latency (CPU ms/row)"}),
        (GateSettings(max_latency_ms=None), latency(5.0, 6.0), set()),
        (GateSettings(max_latency_ratio=1.5), latency(0.01, ratio=1.2), set()),
        (
            GateSettings(max_latency_ratio=1.5),
            latency(0.01, ratio=1.8),
            {"latency vs champion (ratio)"},
        ),
        # v1-style measurements (no candidate block) are not judged by the new check
        (GateSettings(), {"p50": 5.0, "p95": 12.0}, set()),
    ],
    ids=["fast", "noise-over-the-line", "off", "ratio-ok", "ratio-too-slow", "no-measurement"],
)
def test_latency_policy(gate, measured, expected_failures) -> None:
    checks = policy_checks(
        gate,
        candidate=metrics(0.9),
        champion=metrics(0.9),
        paired=paired(0.9, 0.9),
        latency_ms=measured,
        fairness=None,
    )
    assert failed(checks) == expected_failures


def test_latency_and_fairness() -> None:
    slow = latency(5.0, 6.0)
    checks = policy_checks(
        GateSettings(),
        candidate=metrics(0.9),
        champion=None,
        paired=None,
        latency_ms=slow,
        fairness=(0.7, {"a": 0.35, "b": 0.5}),
    )
    assert failed(checks) == {"latency (CPU ms/row)", "disparate impact"}
    fair = policy_checks(
        GateSettings(),
        candidate=metrics(0.9),
        champion=None,
        paired=None,
        latency_ms=FAST,
        fairness=(0.9, {"a": 0.45, "b": 0.5}),
    )
    assert failed(fair) == set()


@pytest.mark.parametrize(
    ("ratio", "passed"),
    [
        (None, False),  # one group, or no group predicted positive: undefined, fail closed
        (0.0, False),  # a group never predicted positive
        (0.5, False),
        (0.8, True),  # the default floor, inclusive
        (1.0, True),
    ],
)
def test_disparate_impact_ratio_edges(ratio: float | None, passed: bool) -> None:
    """The ratio is narrowed from `float | None` before any arithmetic (1 / ratio): an
    undefined or zero ratio fails the check instead of raising."""
    checks = policy_checks(
        GateSettings(max_latency_ms=None),
        candidate=metrics(0.9),
        champion=None,
        paired=None,
        latency_ms={},
        fairness=(ratio, {"a": 0.0, "b": 0.5}),
    )
    (check,) = [c for c in checks if c.name == "disparate impact"]
    assert check.passed is passed
    assert check.value == ratio


def test_decision_record_and_reasons() -> None:
    checks = policy_checks(
        GateSettings(),
        candidate=metrics(0.7),
        champion=None,
        paired=None,
        latency_ms=FAST,
        fairness=None,
    )
    decision = Decision(
        candidate=ModelRef("m", "3", "r3"),
        champion=None,
        data_md5="d",
        holdout_digest="h",
        holdout_rows=10,
        mode="enabled",
        checks=checks,
        metrics={"candidate": metrics(0.7)},
        significance=None,
        latency_ms=FAST,
        model_size_bytes=100,
    )
    record = decision.to_dict()
    assert record["schema_version"] == 2 and record["verdict"] == "fail"
    assert record["candidate"]["uri"] == "models:/m/3" and record["champion"] is None
    assert record["reasons"] == ["auc: 0.7000 < 0.8000"]
    assert "❌ fail" in decision.to_markdown()


def test_the_record_states_the_test_margin_interval_and_conclusion() -> None:
    from mlgate.gate.decision import check_schema, render_markdown
    from mlgate.gate.significance import statement

    pair = paired(0.895, 0.90, -0.0096, -0.0002)
    measured = latency(0.012, 0.013, ratio=1.01)
    measured["champion"] = measured["candidate"]
    checks = policy_checks(
        GateSettings(),
        candidate=metrics(0.895),
        champion=metrics(0.90),
        paired=pair,
        latency_ms=measured,
        fairness=None,
    )
    decision = Decision(
        candidate=ModelRef("m", "4", "r4"),
        champion=ModelRef("m", "3", "r3", "staging"),
        data_md5="d",
        holdout_digest="h",
        holdout_rows=114,
        mode="enabled",
        checks=checks,
        metrics={"candidate": metrics(0.895), "champion": metrics(0.90)},
        significance=pair.to_dict(),
        latency_ms=measured,
        model_size_bytes=100,
        statistics=statement(pair, margin=0.01, rows=114),
        flags=["candidate f1 is 0 at threshold 0.5 (...)"],
    )
    record = decision.to_dict()
    assert record["verdict"] == "fail" and record["statistics"]["margin"] == 0.01
    assert record["reasons"] == [
        "auc not significantly worse: -0.0002 < 0.0000 (upper end of the 95% DeLong interval "
        "of candidate - champion AUC (p = 0.5))"
    ]
    text = render_markdown(record)
    assert "Test: DeLong's paired test of candidate - champion AUC on the same 114" in text
    assert "Non-inferiority margin: 0.01 AUC" in text and "95% CI [-0.0096, -0.0002]" in text
    assert "significantly worse than the champion" in text
    assert "**Latency** (compiled trees" in text and "MAD" in text
    assert "> ⚠️ candidate f1 is 0 at threshold 0.5" in text
    # A version 1 record (written by an earlier mlgate) is still read and rendered.
    old = {**record, "schema_version": 1, "latency_ms": {"p50": 0.2, "p95": 0.3, "rows": 200.0}}
    del old["statistics"], old["flags"]
    check_schema(old)
    assert "AUC difference" in render_markdown(old) and "Latency" not in render_markdown(old)


@pytest.mark.parametrize("order", [["a", "b", "unused"], ["unused", "b", "a"]])
def test_disparate_impact_counts_only_groups_with_rows(order: list[str]) -> None:
    """A categorical fairness column with a category absent from the holdout: that category is
    no group (pandas would give it a NaN rate, and min/max over a NaN depend on its place), so
    the ratio is the same whatever the categories' order. By hand: a 2/4, b 1/4 → 0.25/0.5."""
    import pandas as pd

    from mlgate.pipeline.evaluate import disparate_impact

    column = pd.Categorical(["a"] * 4 + ["b"] * 4, categories=order)
    frame = pd.DataFrame({"group": column})
    proba = np.array([0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1])
    ratio, rates = disparate_impact(frame, proba, "group", 0.5)
    assert rates == {"a": 0.5, "b": 0.25}
    assert ratio == 0.5


@pytest.mark.parametrize(
    ("positives", "rows", "says"),
    [
        (0, 100, "holds no row of the positive class 'yes', so AUC is undefined"),
        (1, 100, "holds 1 row of the positive class 'yes': the gate needs at least 2"),
        (99, 100, "holds 1 row of the negative class: the gate needs at least 2"),
        (2, 100, "only 2 rows of the positive class 'yes' (of 100)"),
        (3, 300, "only 3 rows of the positive class 'yes' (of 300)"),
        (9, 1000, "only 9 rows of the positive class 'yes'"),
        (10, 1000, None),
        (500, 1000, None),
    ],
)
def test_a_holdout_with_few_rows_of_a_class(positives: int, rows: int, says: str | None) -> None:
    """The stated rule: at least 2 rows of each class, with or without a champion, else exit
    3; fewer than 10 is judged and flagged (1% positives: a heavy imbalance)."""
    from mlgate.errors import DataError
    from mlgate.pipeline.evaluate import RARE_ROWS, holdout_classes

    y = np.zeros(rows, dtype=int)
    y[np.random.default_rng(positives).choice(rows, positives, replace=False)] = 1
    if positives < 2 or rows - positives < 2:
        with pytest.raises(DataError) as info:
            holdout_classes(y, "yes")
        assert says in str(info.value) and info.value.exit_code == 3
        assert "split.holdout_fraction" in info.value.fix
        return
    flags = holdout_classes(y, "yes")
    if says is None:
        assert flags == [] and positives >= RARE_ROWS
    else:
        (flag,) = flags
        assert says in flag and "raise split.holdout_fraction" in flag
