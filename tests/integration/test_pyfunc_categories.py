"""The logged model through `mlflow.pyfunc` takes what users send (issue 19): category strings,
pandas categoricals and integer codes of its recorded category sets, next to integer and float
columns; an unseen category is scored as missing. The model is logged by mlgate's own
`train.log_model` to the session's MLflow server and loaded back from it. The oracle: the
booster itself (`mlflow.xgboost.load_model`) on codes the test builds from the recorded
category lists, with `pandas.Categorical`. A model without categorical features keeps MLflow's
own XGBoost pyfunc, exactly as before.

Cost: two tiny boosters (400 rows, 20 trees) logged and loaded: a few seconds each on the
session's server. (`mlflow models predict` on the same model and rows gave the same answers, but
took 46 s on this shared machine: it is not part of the suite.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml

from mlgate.pipeline import train

pytestmark = pytest.mark.integration

PLANS = ["basic", "gold", "pro"]
REGIONS = ["north", "south"]


def table(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows),
            "charges": rng.normal(60, 15, rows).round(2),
            "plan": rng.choice(PLANS, rows),
            "region": rng.choice(REGIONS, rows),
        }
    )
    score = (
        1.5 * (frame["plan"] == "basic")
        - 1.2 * (frame["plan"] == "pro")
        + 0.8 * (frame["region"] == "north")
        - 0.04 * frame["tenure"]
        + rng.normal(0, 0.5, rows)
    )
    return frame, (score > -0.8).to_numpy(dtype=float)


def by_hand(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """The oracle's encoding: pandas' own codes into the recorded lists; -1 (unseen) is NaN."""
    out = frame.copy()
    for column, names in categories.items():
        codes = pd.Categorical(frame[column].astype(object), categories=names).codes
        out[column] = np.where(codes < 0, np.nan, codes.astype(float))
    return out


@pytest.fixture(scope="module")
def logged(mlflow_server: str) -> dict:
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("pyfunc-categories")
    frame, label = table(400, seed=3)
    categories = {"plan": PLANS, "region": REGIONS}
    codes = by_hand(frame, categories)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "max_cat_to_onehot": 1},
        xgb.DMatrix(
            codes, label, feature_types=["int", "float", "c", "c"], enable_categorical=True
        ),
        num_boost_round=20,
    )
    plain = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgb.DMatrix(frame[["tenure", "charges"]], label),
        num_boost_round=20,
    )
    with mlflow.start_run():
        with_categories = train.log_model(booster, codes, categories)
        without = train.log_model(plain, frame[["tenure", "charges"]], {})
    return {"categorical": with_categories.model_uri, "plain": without.model_uri}


def scoring_rows() -> pd.DataFrame:
    """Rows around every category, an unseen plan and region, and missing values."""
    frame, _ = table(60, seed=9)
    frame.loc[0:5, "plan"] = "enterprise"  # never seen in training
    frame.loc[6:8, "region"] = "west"
    frame.loc[9:11, "plan"] = None
    return frame.astype({"plan": object, "region": object})


def test_pyfunc_scores_category_strings_codes_and_pandas_categoricals(logged) -> None:
    uri = logged["categorical"]
    model = mlflow.pyfunc.load_model(uri)
    booster = mlflow.xgboost.load_model(uri)
    assert isinstance(booster, xgb.Booster)  # the xgboost flavour still loads the Booster
    categories = model.metadata.metadata["mlgate.categories"]
    assert categories == {"plan": PLANS, "region": REGIONS}
    # loaded from the model's own code/ folder, not from the mlgate package
    loader = sys.modules["mlgate_pyfunc"].__file__
    assert loader and Path(loader).parent.name == "code"

    rows = scoring_rows()
    oracle = booster.predict(
        xgb.DMatrix(
            by_hand(rows, categories),
            feature_types=booster.feature_types,
            enable_categorical=True,
        )
    )
    # the unseen categories are scored as missing: the oracle gave them NaN
    assert by_hand(rows, categories)["plan"].isna().sum() == 9

    strings = np.asarray(model.predict(rows), dtype=float)
    np.testing.assert_allclose(strings, oracle, rtol=0, atol=1e-7)

    # pandas categoricals whose own category order differs from the model's
    shuffled = rows.assign(
        plan=pd.Categorical(rows["plan"], categories=["pro", "enterprise", "gold", "basic"]),
        region=pd.Categorical(rows["region"], categories=["west", "south", "north"]),
    )
    np.testing.assert_allclose(model.predict(shuffled), oracle, rtol=0, atol=1e-7)

    # integer codes into the recorded lists (unseen: a code outside them; missing: NaN)
    codes = by_hand(rows, categories)
    as_int = codes.assign(
        plan=codes["plan"].fillna(len(PLANS)).astype("int64"),
        region=codes["region"].fillna(-1).astype("int64"),
    )
    assert as_int["tenure"].dtype == np.int64
    np.testing.assert_allclose(model.predict(as_int), oracle, rtol=0, atol=1e-7)
    np.testing.assert_allclose(model.predict(codes), oracle, rtol=0, atol=1e-7)
    # columns in another order are taken by name
    np.testing.assert_allclose(model.predict(rows[rows.columns[::-1]]), oracle, atol=1e-7)


def test_the_flavours_the_auditor_reads_are_unchanged(logged) -> None:
    local = Path(mlflow.artifacts.download_artifacts(logged["categorical"]))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["xgboost"]
    assert flavor["model_class"] == "xgboost.core.Booster" and flavor["data"] == "model.ubj"
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlgate_pyfunc"
    assert (local / "code" / "mlgate_pyfunc.py").is_file()
    inputs = {c["name"]: c["type"] for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs == {"tenure": "long", "charges": "double", "plan": "any", "region": "any"}


def test_a_model_without_categories_keeps_mlflows_own_pyfunc(logged) -> None:
    uri = logged["plain"]
    local = Path(mlflow.artifacts.download_artifacts(uri))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.xgboost"
    assert not (local / "code").exists() and "metadata" not in mlmodel
    model = mlflow.pyfunc.load_model(uri)
    rows = scoring_rows()[["tenure", "charges"]]
    booster = mlflow.xgboost.load_model(uri)
    np.testing.assert_allclose(
        model.predict(rows), booster.predict(xgb.DMatrix(rows)), rtol=0, atol=1e-7
    )
