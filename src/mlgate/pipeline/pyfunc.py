"""The `python_function` flavour of a model with categorical features (issue 19).

MLflow's XGBoost flavour scores a pyfunc input with `xgboost.DMatrix(frame)`, without the
categories the model was trained on: category strings fail, and pandas categoricals would be
coded by whatever categories the caller's frame happens to hold. A model trained on declared
categorical features is therefore logged with this file as its pyfunc `loader_module` (copied
into the model's `code/` folder as the top-level module `mlgate_pyfunc`, so loading it needs
only what the model's requirements already pin: mlflow, xgboost, pandas and numpy, and not
mlgate). Its `predict` takes, per categorical column, category strings, pandas categoricals or
the integer codes of the recorded category set (code i is the i-th category of the model's
`mlgate.categories` metadata, sorted as text); a category the model never saw, a code outside
the set and a missing value are all scored as missing, which follows each split's default
branch, as mlgate's server does. The `xgboost` flavour is untouched: `mlflow.xgboost.load_model`
returns the Booster. A model without categorical features keeps MLflow's own loader.

This file must import nothing from mlgate: it runs inside any Python that loads the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODULE = "mlgate_pyfunc"  # the name it is imported as from the model's code/ folder
SOURCE = Path(__file__)
CATEGORIES_KEY = "mlgate.categories"  # MLmodel metadata: {feature: [category, ...]}


def encode(features: pd.DataFrame, categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Categorical columns as float64 codes into their recorded categories. Text and pandas
    categoricals are looked up by their text; numbers are taken as codes already. A missing
    value, a category the model never saw and a code that is not one of 0 .. n-1 become NaN:
    XGBoost's missing value (an unseen category is scored as missing)."""
    if not categories:
        return features
    out = features.copy()
    for column, known in categories.items():
        if column not in out.columns:
            continue
        values = out[column]
        if values.dtype == object:
            values = values.infer_objects()  # numbers that arrive as objects are codes
        if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(
            values
        ):
            texts = values.astype(object).where(values.notna(), "")
            found = pd.Index(list(known)).get_indexer(texts.astype(str))
            codes = found.astype("float64")
            codes[(found < 0) | values.isna().to_numpy()] = np.nan
        else:
            codes = values.to_numpy(dtype="float64", na_value=np.nan)
        codes = np.where(
            (codes >= 0) & (codes < len(known)) & (np.floor(codes) == codes), codes, np.nan
        )
        out[column] = codes
    return out


def any_categories(signature: Any, categories: Mapping[str, Sequence[str]]) -> Any:
    """`signature` with each categorical feature declared `any` instead of the `double` of its
    codes: MLflow's schema check then lets category strings, pandas categoricals and integer
    codes through to `predict`, which encodes them (other features keep their types)."""
    if not categories:
        return signature
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    anything = AnyType()  # type: ignore[no-untyped-call]
    inputs = [
        ColSpec(anything, spec.name, required=spec.required) if spec.name in categories else spec
        for spec in signature.inputs.inputs
    ]
    return ModelSignature(Schema(inputs), signature.outputs, signature.params)


class CategoricalBooster:
    """What `mlflow.pyfunc.load_model` returns the model as: the booster and its categories."""

    def __init__(self, booster: Any, categories: Mapping[str, Sequence[str]]) -> None:
        self.booster = booster
        self.categories = {str(k): [str(c) for c in v] for k, v in categories.items()}

    def get_raw_model(self) -> Any:
        return self.booster

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> np.ndarray:
        import xgboost as xgb

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        names = list(self.booster.feature_names or frame.columns)
        missing = [name for name in names if name not in frame.columns]
        if missing:
            raise ValueError(f"the input lacks the model's feature(s) {', '.join(missing)}")
        frame = encode(frame[names], self.categories)
        types = self.booster.feature_types or [
            "c" if name in self.categories else "float" for name in names
        ]
        numbers = [n for n, t in zip(names, types, strict=True) if t != "c"]
        frame = frame.astype({n: "float64" for n in numbers if frame[n].dtype == object})
        matrix = xgb.DMatrix(frame, feature_types=list(types), enable_categorical=True)
        return np.asarray(self.booster.predict(matrix, **dict(params or {})))


def _load_pyfunc(path: str) -> CategoricalBooster:
    """Called by `mlflow.pyfunc.load_model` with the booster file (the flavour's `data`)."""
    import xgboost as xgb
    from mlflow.models import Model

    booster = xgb.Booster()
    booster.load_model(path)
    metadata = Model.load(str(Path(path).parent)).metadata or {}
    return CategoricalBooster(booster, metadata.get(CATEGORIES_KEY) or {})


class Flavor:
    """`mlflow.models.Model.log(flavor=Flavor, ...)`: MLflow's XGBoost flavour, whose
    python_function loader is this module, copied into the model."""

    @staticmethod
    def save_model(xgb_model: Any, path: str, mlflow_model: Any, **kwargs: Any) -> None:
        import os
        import shutil
        import tempfile

        import mlflow.xgboost

        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp, f"{MODULE}.py")
            shutil.copyfile(SOURCE, copy)
            mlflow.xgboost.save_model(
                xgb_model, path, mlflow_model=mlflow_model, code_paths=[str(copy)], **kwargs
            )
        mlflow_model.flavors["python_function"]["loader_module"] = MODULE
        mlflow_model.save(os.path.join(path, "MLmodel"))
