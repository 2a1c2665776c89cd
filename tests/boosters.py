"""The small generated boosters the serving tests score against, each trained and bundled once
per test process, then copied where a test wants its bundle.

A `Small` names a model: its feature names, the linear rule that labels its generated rows, the
random seed and the training size. `booster(spec)` is its XGBoost Booster (the tests' oracle),
`bundle(spec, dest)` a copy of its serving bundle (compiled trees, or the booster alone with
`compile=False`) at `dest`. Building a bundle (training, then compiling the trees to C) costs
about a second; a copy costs a few milliseconds, and a test may damage its copy freely.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.serving.bundle import write_bundle


@dataclass(frozen=True)
class Small:
    features: tuple[str, ...]
    weights: tuple[float, ...]  # a row's label: sum(w * x) > 0
    seed: int = 0
    rows: int = 400
    rounds: int = 20
    max_depth: int = 3
    name: str = "toy"
    version: str = "3"
    run_id: str = "r3"


# tests/unit/test_serve.py, test_predlog.py, tests/integration/test_serve_workers.py
TOY = Small(("alpha", "beta", "gamma"), (1.0, 0.5, 0.0))
# tests/unit/test_serve_properties.py, test_serve_binary.py
PROP = Small(
    ("f_a", "f_b", "f_c", "f_d"),
    (1.0, 0.0, -1.0, 0.3),
    seed=7,
    rows=300,
    rounds=12,
    name="prop",
    version="1",
    run_id="r1",
)


def wide(width: int) -> Small:
    """`width` features f0, f1, ..., labelled by f0 + f1 (large bodies: 20 features)."""
    return Small(
        tuple(f"f{i}" for i in range(width)),
        (1.0, 1.0) + (0.0,) * (width - 2),
        max_depth=4,
        name="wide",
        version="1",
        run_id="r",
    )


@functools.cache
def booster(spec: Small) -> Any:
    """The spec's Booster, trained on its generated rows (one thread: the same trees each run)."""
    import xgboost as xgb

    x = np.random.default_rng(spec.seed).normal(size=(spec.rows, len(spec.features)))
    score = sum(w * x[:, i] for i, w in enumerate(spec.weights) if w)
    return xgb.train(
        {"objective": "binary:logistic", "max_depth": spec.max_depth, "nthread": 1},
        xgb.DMatrix(x, label=(score > 0).astype(int), feature_names=list(spec.features)),
        num_boost_round=spec.rounds,
    )


def bundle(spec: Small, dest: Path, compile: bool = True) -> Path:
    """A copy of the spec's serving bundle at `dest` (a new directory)."""
    shutil.copytree(_built(spec, compile), dest)
    return dest


@functools.cache
def _built(spec: Small, compile: bool) -> Path:
    built = _cache() / f"{spec.name}-{abs(hash(spec))}-{int(compile)}"
    write_bundle(
        built,
        bytes(booster(spec).save_raw("ubj")),
        compile=compile,
        name=spec.name,
        version=spec.version,
        run_id=spec.run_id,
        features=list(spec.features),
        threshold=0.5,
        data_md5="d",
        commit="c",
    )
    return built


@functools.cache
def _cache() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mlgate-test-boosters-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# -- a categorical model (issue 19): tenure (a number) and plan (a category) ------------------------
PLANS = ["basic", "gold", "pro", "silver", "team", "trial"]
CHURN_FEATURES = ["tenure", "plan"]


def churn(rows: int = 1500, seed: int = 0, plans: Any = PLANS) -> Any:
    """A generated churn frame: the label follows the plan's risk, flipped after 40 months."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    plan = rng.choice(plans, rows)
    tenure = rng.integers(0, 72, rows)
    risky = np.isin(plan, ["basic", "trial", "team"])
    y = (risky ^ (tenure > 40)) | (rng.random(rows) < 0.05)
    return pd.DataFrame({"tenure": tenure, "plan": pd.Categorical(plan), "y": y.astype(int)})


@functools.cache
def categorical(plans: tuple[str, ...] = tuple(PLANS)) -> tuple[Any, dict[str, list[str]]]:
    """The Booster trained on `churn(plans=plans)` as the train stage encodes it, and its
    categories ({"plan": [...]})."""
    import xgboost as xgb

    from mlgate.pipeline.train import categories_of, dmatrix
    from mlgate.settings import load_settings

    settings = load_settings(env={}, overrides=["data.target=y"], cwd=_cache())
    frame = churn(plans=list(plans))
    categories = categories_of(frame, settings)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "max_cat_to_onehot": 1},
        dmatrix(frame, settings, categories, frame["y"].to_numpy()),
        num_boost_round=25,
    )
    return booster, categories


def categorical_bundle(dest: Path) -> Path:
    """A copy of the categorical model's bundle (compiled trees with categorical splits)."""
    shutil.copytree(_categorical_built(), dest)
    return dest


@functools.cache
def _categorical_built() -> Path:
    booster, categories = categorical()
    built = _cache() / "churn"
    write_bundle(
        built,
        bytes(booster.save_raw("ubj")),
        name="churn",
        version="1",
        run_id="r1",
        features=CHURN_FEATURES,
        threshold=0.5,
        data_md5="d",
        commit="c",
        categories=categories,
    )
    return built
