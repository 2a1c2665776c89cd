"""The data contract (issue 19): what `mlgate validate` checks beyond the schema, on generated
tables of the kinds newcomers bring: string labels, labels coded 1/2, two-letter codes,
booleans, text features, a wrong-case target name, strong imbalance, wide integer codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from mlgate.errors import DataError
from mlgate.pipeline import data, validate
from mlgate.pipeline.train import features_of, labels_of
from mlgate.settings import load_settings


def settings_with(tmp_path, **data_keys):
    overrides = [f"data.{key}={value}" for key, value in data_keys.items()]
    return load_settings(env={}, overrides=overrides, cwd=tmp_path)


def table(labels: list, rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "n": rng.integers(0, 5, rows),
            "label": [labels[i % len(labels)] for i in range(rows)],
        }
    )


def contract(frame: pd.DataFrame, settings) -> dict[str, validate.Violation]:
    _, report = validate.validate_frame(frame, pa.DataFrameSchema(), settings, name="d.csv")
    return {v.check: v for v in report.violations}


@pytest.mark.parametrize(
    ("labels", "positive", "expected"),
    [
        ([0, 1], None, [0, 1]),
        ([False, True], None, [0, 1]),
        (["No", "Yes"], "Yes", [0, 1]),
        (["No", "Yes"], "No", [1, 0]),
        ([1, 2], "2", [0, 1]),
        ([1.0, 2.0], "2", [0, 1]),
        (["CH", "MM"], "CH", [1, 0]),
        ([True, False], "False", [0, 1]),
        (["0", "1"], None, [0, 1]),  # 1/0 read as text (a Parquet string column)
        (["1", "0"], "0", [0, 1]),  # "1" listed first, "0" named positive
        (["no", "yes"], "yes", [0, 1]),
        (["stayed", "churned"], "churned", [0, 1]),
    ],
)
def test_two_classes_of_any_dtype_map_to_0_and_1(tmp_path, labels, positive, expected) -> None:
    keys = {"target": "label"} | ({"positive_class": positive} if positive else {})
    settings = settings_with(tmp_path, **keys)
    frame = table(labels)
    assert "two classes, positive one named" not in contract(frame, settings)
    y = labels_of(frame, settings)
    # the oracle: row i holds labels[i % 2], whose 0/1 is expected[i % 2]
    assert y.tolist() == [expected[i % 2] for i in range(len(frame))]


def test_an_unquoted_yes_in_params_yaml_still_names_the_yes_class(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text("data:\n  target: label\n  positive_class: Yes\n")
    settings = load_settings(env={}, params_file=tmp_path / "params.yaml", cwd=tmp_path)
    assert settings.data.positive_class == "True"  # YAML 1.1 read Yes as a boolean
    assert labels_of(table(["No", "Yes"]), settings).tolist()[:4] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("labels", "positive", "says", "fix"),
    [
        (["No", "Yes"], None, "holds 'No', 'Yes', not 0 and 1", 'positive_class: "Yes"'),
        ([1, 2], None, "holds 1, 2, not 0 and 1", 'positive_class: "2"'),
        (["No", "Yes"], "yes", '(did you mean "Yes"?)', 'set data.positive_class to "No" or'),
        (["a", "b", "c"], None, "holds 3 classes", "keep two classes"),
        (["stayed", "churned"], None, "holds 'churned', 'stayed', not 0 and 1", "positive_class"),
        (["1", "2"], None, "holds '1', '2', not 0 and 1", 'positive_class: "2"'),
        (["yes", "no"], "Yes", '(did you mean "yes"?)', 'set data.positive_class to "no" or'),
    ],
)
def test_a_target_that_is_not_two_named_classes_says_how_to_fix_it(
    tmp_path, labels, positive, says, fix
) -> None:
    keys = {"target": "label"} | ({"positive_class": positive} if positive else {})
    settings = settings_with(tmp_path, **keys)
    violation = contract(table(labels), settings)["two classes, positive one named"]
    assert violation.column == "label"
    assert says in violation.samples[0] and fix in violation.fix
    with pytest.raises(DataError) as info:  # training refuses it the same way
        labels_of(table(labels), settings)
    assert info.value.exit_code == 3 and fix in info.value.fix


def test_missing_labels_are_a_violation(tmp_path) -> None:
    frame = table([0, 1]).astype({"label": "float64"})
    frame.loc[[3, 8], "label"] = np.nan
    violation = contract(frame, settings_with(tmp_path, target="label"))["no missing label"]
    assert violation.count == 2 and violation.rows == (3, 8) and "unlabelled" in violation.fix


def test_text_features_are_named_with_the_fix(tmp_path) -> None:
    frame = table([0, 1]).assign(
        plan=lambda f: np.where(f.n > 2, "gold", "basic"), region=lambda f: f.n.astype(str) + "x"
    )
    violation = contract(frame, settings_with(tmp_path, target="label"))[
        "feature is numeric, boolean or declared categorical"
    ]
    assert violation.column == "plan, region" and violation.count == 2
    assert "plan: object (basic, gold)" in violation.samples[0] or "gold" in violation.samples[0]
    assert "`dtype: category`" in violation.fix


def test_a_text_id_column_and_booleans_are_fine(tmp_path) -> None:
    frame = table([0, 1]).assign(
        customer=lambda f: [f"c{i}" for i in range(len(f))], active=lambda f: f.n > 1
    )
    settings = settings_with(tmp_path, target="label", id_column="customer")
    assert "feature is numeric, boolean or declared categorical" not in contract(frame, settings)
    features = features_of(frame, settings)
    assert dict(features.dtypes.astype(str)) == {"x": "float64", "n": "int64", "active": "bool"}


def test_a_wrong_case_target_gets_did_you_mean_and_the_columns(tmp_path) -> None:
    frame = table([0, 1]).rename(columns={"label": "Churn"})
    violation = contract(frame, settings_with(tmp_path, target="churn"))[
        "target column present (data.target)"
    ]
    assert violation.samples == ('not a column (did you mean "Churn"?)',)
    assert "set data.target" in violation.fix and "'x', 'n', 'Churn'" in violation.fix


def test_strong_imbalance_and_wide_integer_codes_pass_the_contract(tmp_path) -> None:
    rng = np.random.default_rng(3)
    rows = 2000
    frame = pd.DataFrame({f"c{i}": rng.integers(0, 9, rows) for i in range(85)})
    frame["target"] = np.where(rng.random(rows) < 0.06, "Y", "N")
    settings = settings_with(tmp_path, target="target", positive_class="Y")
    assert contract(frame, settings) == {}
    y = labels_of(frame, settings)
    assert y.sum() == (frame["target"] == "Y").sum() and 0.04 < y.mean() < 0.08
    assert set(features_of(frame, settings).dtypes.astype(str)) == {"int64"}


def test_a_missing_data_file_lists_the_files_present(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "churn.csv").write_text("a,b\n1,2\n")
    (tmp_path / "data" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as info:
        data.load_frame(tmp_path / "data" / "data.csv")
    message = str(info.value)
    assert "files present in" in message and "churn.csv, notes.txt" in message
    assert "data.path (default data/data.csv)" in info.value.fix


def test_evaluate_refuses_a_model_trained_for_the_other_class(tmp_path) -> None:
    from mlgate.errors import ConfigError
    from mlgate.pipeline.evaluate import same_positive_class

    holdout = table(["No", "Yes"])
    settings = settings_with(tmp_path, target="label", positive_class="Yes")
    tags = {"mlgate.data.positive_class": "Yes"}
    assert same_positive_class(holdout, settings, tags, "models:/m/1") == "Yes"
    assert same_positive_class(holdout, settings, {}, "models:/m/1") == "Yes"  # older model
    flipped = settings_with(tmp_path, target="label", positive_class="No")
    with pytest.raises(ConfigError, match="trained to predict the class 'Yes'") as info:
        same_positive_class(holdout, flipped, tags, "models:/m/1")
    assert 'set data.positive_class to "Yes"' in info.value.fix and info.value.exit_code == 2
