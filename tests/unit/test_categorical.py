"""Categorical features end to end without services (issue 19): compiled trees with categorical
splits against the booster on rows built around every category; the server taking category
text in every request format with errors that name the column; champion and candidate with
different category sets each scored with their own codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlgate.pipeline.train import CATEGORIES_KEY, categories_of, conform, encode
from mlgate.serving import trees
from mlgate.serving.app import App, Limits
from mlgate.serving.bundle import load_bundle
from mlgate.settings import load_settings
from tests import boosters
from tests.boosters import CHURN_FEATURES, PLANS, churn
from tests.unit.test_serve import call

FEATURES = CHURN_FEATURES


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(env={}, overrides=["data.target=y"], cwd=tmp_path_factory.mktemp("s"))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return boosters.categorical_bundle(tmp_path_factory.mktemp("bundle") / "b")


def test_categories_are_sorted_text_and_unseen_is_missing(settings) -> None:
    frame = churn()
    categories = categories_of(frame, settings)
    assert categories == {"plan": sorted(PLANS)}
    probe = pd.DataFrame({"tenure": [1, 2, 3], "plan": ["gold", "platinum", None]})
    codes = encode(probe, categories)["plan"].tolist()
    assert codes[0] == sorted(PLANS).index("gold") and np.isnan(codes[1]) and np.isnan(codes[2])


def test_compiled_trees_match_the_booster_around_every_category(settings, bundle_dir) -> None:
    booster, _ = boosters.categorical()
    assert booster.feature_types == ["int", "c"]
    rows = trees.parity_rows(booster)
    codes = set(np.unique(rows[~np.isnan(rows[:, 1]), 1]).astype(int))
    assert set(range(len(PLANS))) <= codes and len(PLANS) in codes  # every code, one unseen
    assert np.isnan(rows[:, 1]).any()
    # the trees the bundle compiled (once per test process, tests/boosters.py) from this booster
    meta = json.loads((bundle_dir / "bundle.json").read_text())["compiled"]
    assert json.loads((bundle_dir / "bundle.json").read_text())["model_sha256"] == (
        hashlib.sha256(bytes(booster.save_raw("ubj"))).hexdigest()
    )
    assert meta["parity"]["max_abs_diff"] <= 1e-6
    compiled = trees.CompiledTrees(bundle_dir / trees.LIBRARY, 2, threads=1)
    # an independent oracle: the booster on a DataFrame of category text, recoded by XGBoost
    import xgboost as xgb

    text = pd.DataFrame(
        {"tenure": np.tile([5, 41, 70], len(PLANS)), "plan": np.repeat(sorted(PLANS), 3)}
    )
    matrix = encode(text, {"plan": sorted(PLANS)}).to_numpy(dtype="float64")
    direct = booster.predict(
        xgb.DMatrix(
            matrix, feature_names=FEATURES, feature_types=["int", "c"], enable_categorical=True
        )
    )
    np.testing.assert_allclose(compiled.predict(matrix), direct, rtol=0, atol=1e-6)


def test_the_server_takes_category_text_in_every_format(bundle_dir) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.trees.engine == "compiled" and bundle.categories == {"plan": sorted(PLANS)}
    app = App(bundle, Limits(max_body_bytes=65536, max_rows=50))
    rows = [[3, "trial"], [55, "gold"], [20, "team"]]
    codes = encode(pd.DataFrame(rows, columns=FEATURES), bundle.categories)
    want = bundle.predict(codes.to_numpy(dtype="float64")).tolist()
    bodies = [
        {"dataframe_split": {"columns": FEATURES, "data": rows}},
        {"dataframe_split": {"columns": ["plan", "tenure"], "data": [[r[1], r[0]] for r in rows]}},
        {"dataframe_records": [dict(zip(FEATURES, r, strict=True)) for r in rows]},
        {"inputs": {"tenure": [r[0] for r in rows], "plan": [r[1] for r in rows]}},
        {"instances": rows},
    ]
    for body in bodies:
        status, answer = call(app, "POST", "/invocations", body)
        assert status == 200, (body, answer)
        np.testing.assert_allclose(answer["predictions"], want, atol=1e-12)
    csv = "plan,tenure\n" + "".join(f"{r[1]},{r[0]}\n" for r in rows)
    status, answer = call(app, "POST", "/invocations", csv, content_type="text/csv")
    assert status == 200, answer
    np.testing.assert_allclose(answer["predictions"], want, atol=1e-12)
    v2 = {
        "inputs": [
            {"name": "tenure", "shape": [3], "datatype": "INT64", "data": [r[0] for r in rows]},
            {"name": "plan", "shape": [3], "datatype": "BYTES", "data": [r[1] for r in rows]},
        ]
    }
    status, answer = call(app, "POST", "/v2/models/churn/infer", v2)
    assert status == 200, answer
    np.testing.assert_allclose(answer["outputs"][0]["data"], want, atol=1e-12)
    status, described = call(app, "GET", "/version")
    assert {"name": "plan", "type": "category", "categories": sorted(PLANS)} in (
        described["inputs"]
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"dataframe_split": {"columns": FEATURES, "data": [[3, "platinum"]]}}, "column 'plan'"),
        ({"dataframe_split": {"columns": FEATURES, "data": [["many", "gold"]]}}, "column 'tenure'"),
        ({"dataframe_records": [{"tenure": 3, "plan": "platinum"}]}, "not seen in training"),
    ],
)
def test_bad_category_requests_name_the_column(bundle_dir, body, says) -> None:
    app = App(load_bundle(bundle_dir), Limits(max_body_bytes=65536, max_rows=50))
    status, answer = call(app, "POST", "/invocations", body)
    assert status == 400 and says in json.dumps(answer)
    assert call(app, "GET", "/ping")[0] == 200


def test_an_unseen_category_scores_as_missing_when_missing_is_allowed(bundle_dir) -> None:
    bundle = load_bundle(bundle_dir)
    app = App(bundle, Limits(max_body_bytes=65536, max_rows=50, allow_missing=True))
    status, answer = call(
        app,
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": FEATURES, "data": [[3, "platinum"]]}},
    )
    assert status == 200
    missing = bundle.predict(np.array([[3.0, np.nan]]))
    np.testing.assert_allclose(answer["predictions"], missing, atol=1e-12)


class Recorded:
    """What evaluate reads of a loaded pyfunc model: its metadata and signature."""

    def __init__(self, categories, schema=None) -> None:
        self.metadata = SimpleNamespace(
            metadata={CATEGORIES_KEY: categories} if categories else {},
            get_input_schema=lambda: schema,
        )


def test_champion_and_candidate_get_codes_from_their_own_categories(settings) -> None:
    """A champion that knew fewer plans and a candidate that knows more: the same holdout row
    reaches each model as the code of the same plan in that model's own list."""
    champion = Recorded({"plan": ["basic", "gold", "pro"]})
    candidate = Recorded({"plan": sorted(PLANS)})
    holdout = pd.DataFrame({"tenure": [1, 2, 3], "plan": ["pro", "trial", "gold"]})
    champ = conform(holdout, champion)["plan"].tolist()
    cand = conform(holdout, candidate)["plan"].tolist()
    assert champ[0] == 2 and np.isnan(champ[1]) and champ[2] == 1  # trial: unseen, missing
    assert cand == [sorted(PLANS).index(p) for p in ["pro", "trial", "gold"]]
    # and scores agree with each model's booster fed the same plan's own codes
    old, _ = boosters.categorical(("basic", "gold", "pro"))
    new, _ = boosters.categorical()
    import xgboost as xgb

    for booster, model, names in (
        (old, champion, ["basic", "gold", "pro"]),
        (new, candidate, sorted(PLANS)),
    ):
        got = booster.inplace_predict(conform(holdout, model).to_numpy(dtype="float64"))
        by_hand = np.array(
            [
                [1, names.index("pro")],
                [2, names.index("trial") if "trial" in names else np.nan],
                [3, names.index("gold")],
            ],
            dtype=float,
        )
        want = booster.predict(
            xgb.DMatrix(
                by_hand,
                feature_names=FEATURES,
                feature_types=["int", "c"],
                enable_categorical=True,
            )
        )
        np.testing.assert_allclose(got, want, atol=1e-7)
