from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlgate.errors import ConfigError, DataError
from mlgate.gate.metrics import classification_metrics, slice_masks, slice_metrics
from mlgate.pipeline.split import frame_digest, holdout_from_keys, row_keys, split_frame


def split(frame, seed=42):
    return split_frame(
        frame, target="diagnosis", seed=seed, validation_fraction=0.2, holdout_fraction=0.25
    )


def test_split_is_deterministic_disjoint_and_stratified(breast_cancer) -> None:
    a, b = split(breast_cancer), split(breast_cancer)
    assert a.holdout.index.equals(b.holdout.index) and a.train.index.equals(b.train.index)
    parts = [set(a.train.index), set(a.validation.index), set(a.holdout.index)]
    assert sum(map(len, parts)) == len(breast_cancer) == len(set().union(*parts))
    assert abs(len(a.holdout) / len(breast_cancer) - 0.25) < 0.05
    assert abs(len(a.validation) / len(breast_cancer) - 0.20) < 0.05
    rate = breast_cancer.diagnosis.mean()  # stratified in expectation: within ~2.5 sigma here
    for part in (a.train, a.validation, a.holdout):
        assert abs(part.diagnosis.mean() - rate) < 0.12
    assert not split(breast_cancer, seed=7).holdout.index.equals(a.holdout.index)


def test_rows_keep_their_part_across_data_versions(breast_cancer) -> None:
    """A row in the new version's holdout was never in the old version's training rows."""
    old = split(breast_cancer)
    new_data = pd.concat(
        [
            breast_cancer.iloc[40:],
            breast_cancer.iloc[:5].assign(mean_radius=lambda f: f.mean_radius + 0.5),
        ]
    )  # 40 rows withdrawn, 5 new ones
    new = split(new_data.reset_index(drop=True))
    old_train = {tuple(r) for r in old.train.drop(columns="diagnosis").itertuples(index=False)}
    new_holdout = {tuple(r) for r in new.holdout.drop(columns="diagnosis").itertuples(index=False)}
    assert not old_train & new_holdout
    old_holdout = {tuple(r) for r in old.holdout.drop(columns="diagnosis").itertuples(index=False)}
    kept = {
        tuple(r) for r in breast_cancer.iloc[40:].drop(columns="diagnosis").itertuples(index=False)
    }
    assert old_holdout & kept == new_holdout & kept  # unchanged rows stay where they were


def test_a_corrected_label_keeps_its_row_in_place(breast_cancer) -> None:
    flipped = breast_cancer.copy()
    row = split(breast_cancer).holdout.index[0]
    flipped.loc[row, "diagnosis"] = 1 - flipped.loc[row, "diagnosis"]
    assert row in split(flipped).holdout.index


def test_a_part_without_both_classes_is_refused(breast_cancer) -> None:
    tiny = pd.concat(
        [
            breast_cancer[breast_cancer.diagnosis == 1].head(2),
            breast_cancer[breast_cancer.diagnosis == 0].head(30),
        ]
    )
    with pytest.raises(DataError, match="not both classes"):
        split(tiny)


def test_holdout_is_rebuilt_from_logged_keys(breast_cancer) -> None:
    s = split(breast_cancer)
    keys = row_keys(s.holdout, None)
    rebuilt = holdout_from_keys(breast_cancer, keys, id_column=None, digest=s.holdout_digest)
    assert rebuilt.equals(s.holdout)


def test_holdout_by_id_column(breast_cancer) -> None:
    frame = breast_cancer.assign(case_id=[f"c{i}" for i in range(len(breast_cancer))])
    s = split(frame)
    keys = row_keys(s.holdout, "case_id")
    assert keys[0].startswith("c")
    rebuilt = holdout_from_keys(frame, keys, id_column="case_id", digest=s.holdout_digest)
    assert frame_digest(rebuilt) == s.holdout_digest
    with pytest.raises(DataError, match="missing from the data"):
        holdout_from_keys(frame, [*keys, "nope"], id_column="case_id", digest=s.holdout_digest)


def test_a_changed_data_version_is_refused(breast_cancer) -> None:
    s = split(breast_cancer)
    changed = breast_cancer.copy()
    changed.loc[s.holdout.index[0], "mean_radius"] += 1
    with pytest.raises(DataError, match="does not match the digest"):
        holdout_from_keys(
            changed, row_keys(s.holdout, None), id_column=None, digest=s.holdout_digest
        )
    with pytest.raises(DataError, match="missing from the data"):
        holdout_from_keys(
            breast_cancer.head(10),
            row_keys(s.holdout, None),
            id_column=None,
            digest=s.holdout_digest,
        )


def test_classification_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = classification_metrics(y, p, 0.5)
    assert m["auc"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert set(m) == {"auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall"}
    assert m["brier"] == pytest.approx((0.1**2 + 0.6**2 + 0.6**2 + 0.1**2) / 4)
    one_class = classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)
    assert "auc" not in one_class and one_class["recall"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_counted_metrics_equal_sklearns(seed: int) -> None:
    """Precision, recall, F1 and Brier are computed from counts (fast); they must equal
    sklearn's scorers, edge cases included (nothing predicted positive, one class)."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    n = [1, 2, 7, 50, 500, 5000][seed]
    y = rng.integers(0, 2, n) if seed != 2 else np.ones(n, dtype=int)
    p = rng.random(n) * (0.4 if seed == 3 else 1.0)  # seed 3: nothing reaches 0.5
    m = classification_metrics(y, p, 0.5)
    pred = (p >= 0.5).astype(int)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p, pos_label=1))


def test_slice_metrics(breast_cancer) -> None:
    y = breast_cancer.diagnosis.to_numpy()
    p = np.clip(y * 0.8 + 0.1, 0, 1)
    out = slice_metrics(
        breast_cancer, y, p, {"big": "mean_radius >= 15", "none": "mean_radius < 0"}, 0.5
    )
    assert out["big"]["rows"] == float((breast_cancer.mean_radius >= 15).sum())
    assert out["big"]["auc"] == pytest.approx(1.0)
    assert out["none"] == {"rows": 0.0}
    with pytest.raises(ConfigError, match="metrics.slices.bad"):
        slice_metrics(breast_cancer, y, p, {"bad": "no_such_column > 1"}, 0.5)


def test_the_schema_sample_gives_the_whole_frames_schema() -> None:
    """MLflow's schema of a sample equals its schema of the frame: types, and optional exactly
    for the columns with a missing value anywhere (here far past the first rows)."""
    from mlflow.models import infer_signature

    from mlgate.pipeline.train import schema_sample

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(5_000, 4)), columns=list("abcd"))
    frame["n"] = rng.integers(0, 3, 5_000)
    frame.loc[4_321, "b"] = np.nan
    frame.loc[4_999, "d"] = np.nan
    frame.index = rng.permutation(10_000)[:5_000]  # not a range, not sorted
    sample = schema_sample(frame)
    assert len(sample) == 102
    assert infer_signature(sample).inputs == infer_signature(frame).inputs
    optional = {s.name for s in infer_signature(sample).inputs.inputs if not s.required}
    assert optional == {"b", "d"}


@pytest.mark.parametrize("seed", range(8))
def test_ranked_metrics_equal_sklearns(seed: int) -> None:
    """AUC, PR-AUC and log loss are computed with numpy (importing sklearn.metrics cost 2-3 s
    of every train and evaluate process); they must equal scikit-learn's, with ties (scores
    rounded to few values), scores of exactly 0 and 1, and rare positives."""
    from scipy.stats import rankdata
    from sklearn import metrics as skm

    from mlgate.gate.metrics import midranks

    rng = np.random.default_rng(seed)
    n = [3, 10, 57, 500, 5000, 20000, 400, 1000][seed]
    y = (rng.random(n) < (0.03 if seed == 6 else 0.4)).astype(int)
    y[:2] = [0, 1]  # both classes
    p = rng.random(n)
    if seed in (1, 3, 5):
        p = np.round(p, 1)  # many ties
    if seed == 7:
        p[rng.random(n) < 0.2] = 0.0
        p[rng.random(n) < 0.2] = 1.0
    m = classification_metrics(y, p, 0.5)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p), rel=1e-12)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), rel=1e-9)
    assert np.array_equal(midranks(p), rankdata(p))


@pytest.mark.parametrize("dtype", ["float32", "float32-as-float64", "float64"])
def test_one_sort_serves_metrics_and_slices_exactly(dtype: str) -> None:
    """The gate sorts each model's scores once (`sort_order`: packed 64-bit keys for float32
    scores, argsort otherwise) and derives AUC, PR-AUC and every slice from that one order.
    Against scikit-learn and scipy on float32 scores with many ties, negative values and -0.0
    (which must tie with 0.0), and on float64 scores that float32 cannot hold."""
    from scipy.stats import rankdata
    from sklearn import metrics as skm

    from mlgate.gate.metrics import Ranking, midranks, sort_order

    rng = np.random.default_rng(11)
    n = 3_000
    y = (rng.random(n) < 0.3).astype(int)
    p = np.round(rng.normal(y * 0.6, 0.5, n), 2)  # ties, negatives
    p[:40] = -0.0
    p[40:80] = 0.0
    p = p.astype(np.float32) if dtype.startswith("float32") else p + 1e-13 * rng.random(n)
    if dtype == "float32-as-float64":
        p = p.astype(np.float64)
    order = sort_order(p)
    assert sorted(order.tolist()) == list(range(n))  # a permutation ...
    assert np.all(np.diff(p[order].astype(np.float64)) >= 0)  # ... in ascending order
    assert np.array_equal(midranks(p), rankdata(p))
    m = classification_metrics(y, p, 0.5, Ranking(y, p, order))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p), rel=1e-12)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 3, n)})
    slices = {"high": "a > 0.3", "b0": "b == 0"}
    out = slice_metrics(frame, y, p, slices, 0.5, Ranking(y, p))
    # the gate evaluates the queries once for both models and passes the masks: the same
    masks = slice_masks(frame, slices)
    assert slice_metrics(frame, y, p, slices, 0.5, Ranking(y, p), masks=masks) == out
    for name, query in slices.items():
        mask = frame.eval(query).to_numpy()
        alone = classification_metrics(y[mask], p[mask], 0.5)
        assert out[name]["auc"] == pytest.approx(skm.roc_auc_score(y[mask], p[mask]), rel=1e-12)
        assert out[name]["pr_auc"] == pytest.approx(alone["pr_auc"], rel=1e-12)
        assert out[name]["brier"] == pytest.approx(alone["brier"], rel=1e-12)
