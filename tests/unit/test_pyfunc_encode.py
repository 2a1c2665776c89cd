"""The encoding rule of the logged model's pyfunc flavour (mlgate.pipeline.pyfunc.encode),
shared by training and evaluation: text and pandas categoricals by their text, numbers as codes,
and everything outside the recorded list missing. The oracle: positions in the list, by hand."""

from __future__ import annotations

import math

import pandas as pd

from mlgate.pipeline.pyfunc import encode

PLANS = ["basic", "gold", "pro"]


def codes(values: pd.Series, known: list[str] = PLANS) -> list[float | None]:
    out = encode(pd.DataFrame({"plan": values, "x": 1.0}), {"plan": known})
    assert out["x"].tolist() == [1.0] * len(values)  # other columns untouched
    return [None if math.isnan(v) else v for v in out["plan"].tolist()]


def test_text_is_looked_up_and_unseen_or_missing_text_is_missing() -> None:
    assert codes(pd.Series(["pro", "basic", "enterprise", None, "gold"])) == [
        2.0,
        0.0,
        None,
        None,
        1.0,
    ]


def test_pandas_categoricals_go_by_their_text_not_their_own_codes() -> None:
    values = pd.Series(pd.Categorical(["gold", "pro", "new"], categories=["pro", "new", "gold"]))
    assert codes(values) == [1.0, 2.0, None]


def test_numbers_are_codes_and_codes_outside_the_list_are_missing() -> None:
    assert codes(pd.Series([0, 2, 3, -1])) == [0.0, 2.0, None, None]
    assert codes(pd.Series([1.0, float("nan"), 0.5])) == [1.0, None, None]
    assert codes(pd.Series([2, 1], dtype=object)) == [2.0, 1.0]  # numbers as objects (any)


def test_digit_text_is_a_category_name_not_a_code() -> None:
    assert codes(pd.Series(["10", "2", "7"]), known=["10", "2"]) == [0.0, 1.0, None]
