"""The training rows reach XGBoost without pandas' copies (issue 18: the split taken by
positions, the features as views of the validated frame, the validation part's DMatrix
scored once), and everything that is logged is what the copying path gave. The oracle is
that path written out here with pandas' own copies: boolean masks, `drop`, `astype`, a
DMatrix built again for each prediction. Small data, no services."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from mlgate.pipeline.frames import row_hash
from mlgate.pipeline.split import frame_digest, split_frame
from mlgate.pipeline.train import (
    categories_of,
    encode,
    feature_types,
    features_of,
    fit_scored,
    labels_of,
    predict,
)
from mlgate.settings import load_settings

SEED, VALIDATION, HOLDOUT = 7, 0.2, 0.25


def mixed(rows: int = 3_000, seed: int = 0) -> pd.DataFrame:
    """Every kind of feature mlgate trains on: float with missing values, integers of two
    widths, booleans, a declared category; the label last."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.1] = np.nan
    count = rng.integers(0, 20, rows)
    small = rng.integers(0, 5, rows).astype("uint8")
    flag = rng.random(rows) < 0.3
    plan = pd.Categorical(rng.choice(["basic", "plus", "pro"], rows))
    logit = np.nan_to_num(x) + 0.2 * count - 2 + flag - (plan == "pro")
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pd.DataFrame(
        {"x": x, "count": count, "small": small, "flag": flag, "plan": plan, "y": y}
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(
        env={},
        overrides=[
            "data.target=y",
            f"split.seed={SEED}",
            f"split.validation_fraction={VALIDATION}",
            f"split.holdout_fraction={HOLDOUT}",
            "train.num_boost_round=60",
            "train.early_stopping_rounds=5",
        ],
        cwd=tmp_path_factory.mktemp("s"),
    )


def copied_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    keys = frame.drop(columns=["y"])
    rows = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    salt = pd.util.hash_array(np.array([SEED], dtype="uint64"))[0]
    position = pd.util.hash_array(rows ^ salt) % 1_000_000 / 1_000_000
    holdout = position < HOLDOUT
    validation = ~holdout & (position < HOLDOUT + VALIDATION)
    return frame[~holdout & ~validation], frame[validation], frame[holdout]


def copied_features(part: pd.DataFrame) -> pd.DataFrame:
    features = part.drop(columns=["y"])
    return features.astype({"x": "float64", "count": "int64", "small": "int64", "flag": "bool"})


def copied_matrix(part: pd.DataFrame, categories, label=None):
    import xgboost as xgb

    features = copied_features(part)
    types = feature_types(features, categories)
    return xgb.DMatrix(
        encode(features, categories), label=label, feature_types=types, enable_categorical=True
    )


@pytest.mark.parametrize("rows", [3_000, 700])
def test_the_model_and_its_records_are_the_copying_paths(settings, rows: int) -> None:
    import xgboost as xgb

    frame = mixed(rows)
    categories = categories_of(frame, settings)
    assert categories == {"plan": ["basic", "plus", "pro"]}
    hashed = row_hash(frame, target="y", seed=SEED, id_column=None)
    expected_hash = pd.util.hash_array(
        pd.util.hash_pandas_object(frame.drop(columns=["y"]), index=False).to_numpy()
        ^ pd.util.hash_array(np.array([SEED], dtype="uint64"))[0]
    )
    np.testing.assert_array_equal(hashed, expected_hash)

    split = split_frame(
        frame, target="y", seed=SEED, validation_fraction=VALIDATION, holdout_fraction=HOLDOUT
    )
    train, validation, holdout = copied_split(frame)
    for ours, theirs in zip(
        (split.train, split.validation, split.holdout), (train, validation, holdout), strict=True
    ):
        pd.testing.assert_frame_equal(ours, theirs)
    assert split.holdout_digest == frame_digest(holdout)
    pd.testing.assert_frame_equal(features_of(frame, settings, view=True), copied_features(frame))

    booster, best, scored = fit_scored(split, settings, categories)
    reference = xgb.train(
        dict(settings.train.params),
        copied_matrix(train, categories, train["y"].to_numpy()),
        num_boost_round=60,
        evals=[(copied_matrix(validation, categories, validation["y"].to_numpy()), "v")],
        early_stopping_rounds=5,
        verbose_eval=False,
    )
    assert best == reference.best_iteration
    expected = reference[: best + 1]
    expected.set_attr(best_iteration=str(best))
    sha = [hashlib.sha256(b.save_raw("ubj")).hexdigest() for b in (booster, expected)]
    assert sha[0] == sha[1]
    np.testing.assert_array_equal(scored, expected.predict(copied_matrix(validation, categories)))
    np.testing.assert_array_equal(scored, predict(booster, split.validation, settings, categories))
    np.testing.assert_array_equal(
        predict(booster, split.holdout, settings, categories),
        expected.predict(copied_matrix(holdout, categories)),
    )
    np.testing.assert_array_equal(labels_of(split.holdout, settings), holdout["y"].to_numpy())

    again = fit_scored(split, settings, categories)  # a re-run: the same bytes
    assert hashlib.sha256(again[0].save_raw("ubj")).hexdigest() == sha[0]


def test_features_are_views_of_the_validated_frame_for_a_reader_only(settings) -> None:
    """What makes the training path cheap: for the DMatrix (`view=True`) no feature column
    that keeps its type is copied; everyone else (evaluate, drift) gets a frame of its own."""
    frame = mixed(500)
    viewed, own = features_of(frame, settings, view=True), features_of(frame, settings)
    pd.testing.assert_frame_equal(viewed, own)
    pd.testing.assert_frame_equal(own, copied_features(frame))
    assert np.shares_memory(viewed["x"].to_numpy(), frame["x"].to_numpy())
    assert np.shares_memory(viewed["count"].to_numpy(), frame["count"].to_numpy())
    assert not np.shares_memory(own["x"].to_numpy(), frame["x"].to_numpy())
    assert viewed["small"].dtype == np.int64  # the one column whose type changes
    assert list(viewed.columns) == ["x", "count", "small", "flag", "plan"]
