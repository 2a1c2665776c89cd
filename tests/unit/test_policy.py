"""The gate policy as a table: what passes and what fails, and why."""

from __future__ import annotations

import pytest

from mlgate.decision import Check, Decision, ModelRef
from mlgate.evaluate import policy_checks
from mlgate.settings import GateSettings
from mlgate.significance import PairedAuc


def metrics(auc: float | None, f1: float = 0.9, slices: dict | None = None) -> dict:
    overall = {"f1": f1, **({"auc": auc} if auc is not None else {})}
    return {"overall": overall, "slices": slices or {}}


def paired(cand: float, champ: float, low: float = -0.01, high: float = 0.01) -> PairedAuc:
    return PairedAuc("DeLong", cand, champ, cand - champ, 0.01, 0.0, 0.5, low, high, 0.95)


FAST = {"p50": 0.1, "p95": 0.2, "rows": 10.0}


def failed(checks: list[Check]) -> set[str]:
    return {c.name for c in checks if not c.passed}


@pytest.mark.parametrize(
    ("gate", "cand", "champ", "pair", "expected_failures"),
    [
        (GateSettings(), metrics(0.9), None, None, set()),
        (GateSettings(), metrics(0.7), None, None, {"auc"}),
        (GateSettings(), metrics(None), None, None, {"auc"}),
        (GateSettings(first_model="reject"), metrics(0.9), None, None, {"champion exists"}),
        (GateSettings(), metrics(0.90), metrics(0.905), paired(0.90, 0.905), set()),
        (
            GateSettings(),
            metrics(0.88),
            metrics(0.90),
            paired(0.88, 0.90),
            {"auc vs champion (non-inferiority)"},
        ),
        (
            GateSettings(max_auc_drop=None, min_auc_gain=0.01),
            metrics(0.905),
            metrics(0.90),
            paired(0.905, 0.90),
            {"auc gain over champion"},
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
        (GateSettings(min_auc=None, max_latency_p95_ms=None), metrics(0.1), None, None, set()),
    ],
    ids=[
        "first-model-passes",
        "below-min-auc",
        "auc-undefined",
        "first-model-reject",
        "within-margin",
        "beyond-margin",
        "gain-too-small",
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


def test_latency_and_fairness() -> None:
    slow = {"p50": 5.0, "p95": 12.0, "rows": 10.0}
    checks = policy_checks(
        GateSettings(),
        candidate=metrics(0.9),
        champion=None,
        paired=None,
        latency_ms=slow,
        fairness=(0.7, {"a": 0.35, "b": 0.5}),
    )
    assert failed(checks) == {"latency p95 (ms)", "disparate impact"}
    fair = policy_checks(
        GateSettings(),
        candidate=metrics(0.9),
        champion=None,
        paired=None,
        latency_ms=FAST,
        fairness=(0.9, {"a": 0.45, "b": 0.5}),
    )
    assert failed(fair) == set()


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
    assert record["schema_version"] == 1 and record["verdict"] == "fail"
    assert record["candidate"]["uri"] == "models:/m/3" and record["champion"] is None
    assert record["reasons"] == ["auc: 0.7000 < 0.8000"]
    assert "❌ fail" in decision.to_markdown()
