"""The bad-input catalogue, part one: data files and the identifiers that reach the registry,
image names and URIs. Each bad input gets a clear error that names the fix and the exit code
of its kind, never a traceback.

The rest of the catalogue lives beside the code it exercises: settings in test_settings
(unknown keys, wrong types, ranges), schema violations in test_validate, serving requests in
test_serve (with hypothesis), and whole runs with bad data in tests/integration/test_train.
SECURITY.md counts them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlgate import cli, validate
from mlgate.data import load_frame
from mlgate.errors import ConfigError, DataError
from mlgate.settings import load_settings
from tests.conftest import REPO

HEADER = "mean_radius,diagnosis\n"

# (id, file name, bytes, what the error says)
FILES = [
    ("latin-1", "d.csv", HEADER.encode() + "1.5,caf\xe9\n".encode("latin-1"), "is not UTF-8"),
    ("utf-16", "d.csv", HEADER.encode("utf-16"), "is not UTF-8"),
    ("binary", "d.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not UTF-8"),
    ("empty", "d.csv", b"", "is empty"),
    ("blank-lines", "d.csv", b"\n\n\n", "is empty"),
    ("ragged", "d.csv", (HEADER + "1.0,0\n2.0,1,7,8\n").encode(), "cannot parse"),
    ("csv-named-parquet", "d.parquet", (HEADER + "1.0,0\n").encode(), "cannot parse"),
    ("truncated-parquet", "d.parquet", b"PAR1\x00\x00", "cannot parse"),
    ("missing", None, b"", "does not exist"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), [f[1:] for f in FILES], ids=[f[0] for f in FILES]
)
def test_unreadable_data_files(
    tmp_path: Path, name: str | None, content: bytes, message: str
) -> None:
    path = tmp_path / (name or "absent.csv")
    if name is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_frame(path)
    assert message in str(info.value) and info.value.fix
    assert info.value.exit_code == 3


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(HEADER + "1.0,0\n" * 100_000)
    with pytest.raises(DataError) as info:
        load_frame(path, max_bytes=100_000)
    assert "over data.max_bytes" in str(info.value) and "raise data.max_bytes" in info.value.fix


@pytest.fixture(scope="module")
def settings():
    return load_settings(env={}, params_file=REPO / "params.yaml")


@pytest.fixture(scope="module")
def schema():
    return validate.load_schema(REPO / "schema" / "breast_cancer.yaml")


def spoil(frame, how: str):
    frame = frame.copy()
    if how == "header-only":
        return frame.head(0)
    if how == "duplicate-column":
        return frame.rename(columns={"mean_area": "mean_radius"})
    if how == "infinite-value":
        frame.loc[3, "mean_radius"] = np.inf
        return frame
    if how == "all-missing-column":
        frame["mean_texture"] = np.nan
        return frame
    if how == "label-words":
        frame["diagnosis"] = frame["diagnosis"].map({0: "benign", 1: "malignant"})
        return frame
    if how == "negative-size":
        frame.loc[7, "mean_area"] = -1.0
        return frame
    if how == "extra-column":
        frame["patient_name"] = "x"
        return frame
    if how == "numbers-as-text":
        frame["mean_smoothness"] = frame["mean_smoothness"].map(lambda v: f"{v:.3f} mm")
        return frame
    raise AssertionError(how)


SPOILED = [
    "header-only",
    "duplicate-column",
    "infinite-value",
    "all-missing-column",
    "label-words",
    "negative-size",
    "extra-column",
    "numbers-as-text",
]


@pytest.mark.parametrize("how", SPOILED)
def test_spoiled_data_is_reported_not_trained_on(breast_cancer, schema, settings, how) -> None:
    _, report = validate.validate_frame(spoil(breast_cancer, how), schema, settings, name="d.csv")
    assert not report.ok, how
    text = report.to_text()
    assert text.strip() and "Traceback" not in text


BAD_VERSIONS = [
    "1; rm -rf /",
    "$(id)",
    "../1",
    "models:/m/1",
    "runs:/abc/model",
    "s3://bucket/model",
    "-1",
    "0",
    "1.0",
    "1e3",
    "",
    " 1",
    "1\n",
    "²",
    "١",
    "9999999999",
]


@pytest.mark.parametrize("value", BAD_VERSIONS)
def test_model_versions_are_plain_numbers(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a model version"):
        cli.model_version(value)


@given(st.text(max_size=12))
def test_a_model_version_is_never_anything_but_digits(value: str) -> None:
    try:
        parsed = cli.model_version(value)
    except argparse.ArgumentTypeError:
        return
    assert parsed.isascii() and parsed.isdigit() and int(parsed) >= 1


BAD_NAMES = [
    "$(id)",
    "a/b",
    "../../etc/passwd",
    "model\n",
    "name with spaces",
    "modèle",
    ".hidden",
    "-flag",
    "a" * 101,
    "a;b",
    "`x`",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_model_names_are_a_safe_alphabet(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"MLGATE_MODEL_NAME": name}, params_file=REPO / "params.yaml")
    assert "is not a safe registered-model name" in str(info.value) and info.value.fix


BAD_SETTINGS = [
    ({"MLGATE_DEPLOY_IMAGE": "Registry/UPPER"}, "deploy.image"),
    ({"MLGATE_DEPLOY_IMAGE": "ghcr.io/o/r;id"}, "deploy.image"),
    ({"MLGATE_TRACKING_LOCK_WAIT": "-1"}, "tracking.lock_wait"),
    ({"MLGATE_TRACKING_LOCK_LEASE": "0"}, "tracking.lock_lease"),
    ({"MLGATE_SERVE_PORT": "70000"}, "serve.port"),
    ({"MLGATE_DATA_MAX_BYTES": "lots"}, "data.max_bytes must be an integer"),
    ({"MLGATE_DEPLOY_ENVIRONMENT": "prod/../x"}, "deploy.environment"),
    ({"MLGATE_DEPLOY_ENVIRONMENT": "prod uction"}, "deploy.environment"),
    ({"MLGATE_DEPLOY_ENVIRONMENT": ".."}, "deploy.environment"),
    ({"MLGATE_DEPLOY_ALLOW_UNPROTECTED_ENVIRONMENT": "yes please"}, "must be true or false"),
]


@pytest.mark.parametrize(("env", "message"), BAD_SETTINGS)
def test_bad_settings_for_the_production_steps(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, params_file=REPO / "params.yaml")
    assert message in str(info.value) and info.value.fix
