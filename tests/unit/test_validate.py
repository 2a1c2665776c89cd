from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlgate.errors import ConfigError
from mlgate.pipeline import validate
from mlgate.settings import load_settings
from tests.conftest import REPO

SCHEMA = REPO / "schema" / "breast_cancer.yaml"


@pytest.fixture(scope="module")
def settings():
    return load_settings(env={}, params_file=REPO / "params.yaml")


@pytest.fixture(scope="module")
def schema():
    return validate.load_schema(SCHEMA)


def run(frame, schema, settings) -> validate.Report:
    return validate.validate_frame(frame, schema, settings, name="data.csv")[1]


def checks(report: validate.Report) -> set[tuple[str, str]]:
    return {(v.column, v.check) for v in report.violations}


def test_the_shipped_data_is_valid(breast_cancer, schema, settings) -> None:
    validated, report = validate.validate_frame(breast_cancer, schema, settings, name="d")
    assert report.ok, report.to_text()
    assert report.rows == 569 and report.columns == 31
    assert (validated.dtypes.drop("diagnosis") == "float64").all()


def test_every_violation_is_listed_at_once(breast_cancer, schema, settings) -> None:
    bad = breast_cancer.copy().drop(columns=["mean_area"])
    bad["extra"] = 1.0
    bad.loc[3, "mean_radius"] = -1.0
    bad["mean_texture"] = bad["mean_texture"].astype(object)
    bad.loc[5, "mean_texture"] = "abc"
    bad.loc[7, "worst_area"] = np.nan
    bad["diagnosis"] = bad["diagnosis"].astype(float)
    bad.loc[9, "diagnosis"] = np.nan
    bad.loc[10, "diagnosis"] = 2.0
    report = run(bad, schema, settings)
    assert not report.ok
    found = checks(report)
    assert ("mean_area", "required column missing") in found
    assert ("extra", "unexpected column (schema is strict)") in found
    assert ("mean_radius", "greater_than_or_equal_to(0)") in found
    assert ("mean_texture", "coerce_dtype('float64')") in found
    assert ("worst_area", "not_nullable") in found
    assert ("diagnosis", "not_nullable") in found
    assert ("diagnosis", "isin([0, 1])") in found
    assert ("diagnosis", "dtype('int64')") in found
    radius = next(v for v in report.violations if v.column == "mean_radius")
    assert radius.count == 1 and radius.samples == ("-1.0",) and radius.rows == (3,)
    text = report.to_text()
    assert "mean_radius: greater_than_or_equal_to(0) failed 1x, e.g. -1.0 at rows 3" in text
    assert "| mean_area |" in report.to_markdown()


def test_a_single_class_is_refused(breast_cancer, schema, settings) -> None:
    report = run(breast_cancer[breast_cancer.diagnosis == 0], schema, settings)
    assert ("diagnosis", "both classes present") in checks(report)


def test_a_tiny_class_and_too_few_rows_are_refused(breast_cancer, schema, settings) -> None:
    frame = pd.concat(
        [
            breast_cancer[breast_cancer.diagnosis == 0].head(60),
            breast_cancer[breast_cancer.diagnosis == 1].head(3),
        ]
    )
    found = checks(run(frame, schema, settings))
    assert ("(data frame)", "at least 100 rows (schema.min_rows)") in found
    assert ("diagnosis", "at least 20 rows per class (schema.min_class_count)") in found


def test_a_missing_target_column_is_reported(breast_cancer, schema, settings) -> None:
    report = run(breast_cancer.drop(columns=["diagnosis"]), schema, settings)
    assert ("diagnosis", "target column present (data.target)") in checks(report)


def test_an_empty_frame_is_reported(breast_cancer, schema, settings) -> None:
    report = run(breast_cancer.head(0), schema, settings)
    assert not report.ok


@pytest.mark.parametrize("text", ["", "columns: [", "not: a schema"])
def test_a_bad_schema_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not a valid pandera YAML schema"):
        validate.load_schema(path)


def test_a_missing_schema_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema file .* not found"):
        validate.load_schema(tmp_path / "nope.yaml")


def _partitioned(frame, settings, bounds, schema_path=SCHEMA):
    """What the dask engine reports (validate.merge of each partition's checks.summarize, as
    the workers compute them), without a cluster: the cluster's part is the integration test."""
    from mlgate.pipeline import checks

    text = schema_path.read_text()
    schema = validate.load_schema(schema_path)
    duplicated = {}
    for column in checks.unique_columns(schema):
        counts = frame[column].value_counts(dropna=False)
        duplicated[column] = counts[counts > 1].index.tolist()
    parts = [frame.iloc[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    summaries = [
        checks.summarize(p, text, settings.data.target, settings.data.id_column, duplicated)
        for p in parts
    ]
    return validate.merge(summaries, settings, name="data.csv")


def _spoiled(breast_cancer):
    bad = breast_cancer.copy().drop(columns=["mean_area"])
    bad["extra"] = 1.0
    bad["mean_texture"] = bad["mean_texture"].astype(object)
    for row in (3, 199, 200, 400):  # a violation at each side of the boundaries 200 and 400
        bad.loc[row, "mean_radius"] = -1.0
    bad.loc[5, "mean_texture"] = "abc"
    bad.loc[201, "mean_texture"] = "xyz"
    bad.loc[7, "worst_area"] = np.nan
    bad.loc[399, "worst_area"] = np.inf
    bad["diagnosis"] = bad["diagnosis"].astype(float)
    bad.loc[9, "diagnosis"] = np.nan
    bad.loc[401, "diagnosis"] = np.nan
    bad.loc[10, "diagnosis"] = 2.0
    return bad


@pytest.mark.parametrize(
    "bounds", [[0, 200, 400, 569], [0, 569], [0, 0, 1, 200, 200, 569]], ids=["3", "1", "empty"]
)
def test_the_partitions_report_is_the_whole_frames(breast_cancer, settings, bounds) -> None:
    """The oracle: validate_frame on the whole frame (the local engine)."""
    schema = validate.load_schema(SCHEMA)
    bad = _spoiled(breast_cancer)
    for frame in (bad, breast_cancer, breast_cancer[breast_cancer.diagnosis == 0]):
        local = run(frame, schema, settings)
        merged = _partitioned(frame, settings, [min(b, len(frame)) for b in bounds])
        assert merged == local, f"{merged.to_text()}\n---\n{local.to_text()}"
    assert not local.ok
    radius = next(v for v in run(bad, schema, settings).violations if v.column == "mean_radius")
    assert radius.rows == (3, 199, 200, 400) and radius.count == 4


def test_a_unique_column_is_checked_across_partitions(breast_cancer, settings, tmp_path):
    """Duplicates in two partitions (and none within one) fail as in the whole frame."""
    import yaml

    doc = yaml.safe_load(SCHEMA.read_text())
    doc["columns"]["mean_radius"]["unique"] = True
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(doc))
    frame = breast_cancer.drop_duplicates("mean_radius").reset_index(drop=True)
    frame.loc[300, "mean_radius"] = frame.loc[2, "mean_radius"]
    local = run(frame, validate.load_schema(path), settings)
    assert ("mean_radius", "field_uniqueness") in checks(local)
    merged = _partitioned(frame, settings, [0, 200, len(frame)], schema_path=path)
    assert merged == local
