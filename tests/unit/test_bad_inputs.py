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

from mlgate import cli
from mlgate.errors import ConfigError, DataError
from mlgate.pipeline import validate
from mlgate.pipeline.data import load_frame
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


# Part two (issue 16): inputs that used to end in a traceback, a huge message or a hang.


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


BAD_TRACKING_URIS = [
    ("not a uri", "is not a URI"),
    ("localhost:5000", "is not a URI"),
    ("mlruns", "is not a URI"),
    ("ftp://host/path", "scheme 'ftp' is not supported"),
    ("htp://host:5000", 'did you mean "http"'),
    ("file:///tmp/mlruns", "scheme 'file' is not supported"),
    ("http://", "names no host"),
    ("sqlite://m.db", "sqlite takes three slashes"),
]


@pytest.mark.parametrize(("uri", "message"), BAD_TRACKING_URIS)
def test_tracking_uris_are_checked_when_settings_load(uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"MLGATE_TRACKING_URI": uri}, params_file=REPO / "params.yaml")
    assert message in str(info.value) and info.value.fix and info.value.exit_code == 2
    if "not supported" in message:
        assert "http, https, sqlite, postgresql, mysql, mssql" in info.value.fix


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "https://mlflow.example", "postgresql+psycopg2://u@h/db"]
)
def test_supported_tracking_uris_load(uri: str) -> None:
    settings = load_settings(env={"MLGATE_TRACKING_URI": uri}, params_file=REPO / "params.yaml")
    assert settings.tracking_uri == uri


def test_a_bad_tracking_uri_is_one_short_error_on_the_command_line(capsys) -> None:
    code, output = run_cli(
        ["validate", "--params", str(REPO / "params.yaml"), "--tracking-uri", "x" * 100_000],
        capsys,
    )
    assert code == 2
    assert "error: tracking.uri 'xxxx" in output and "(100,002 chars) is not a URI" in output
    assert "Traceback" not in output and len(output) < 2_000


def test_a_sqlite_store_in_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    from mlgate.registry import tracking

    (tmp_path / "params.yaml").write_text("tracking: {uri: 'sqlite:///no/such/folder/m.db'}\n")
    settings = load_settings(env={}, params_file=tmp_path / "params.yaml")
    with pytest.raises(ConfigError) as info:
        tracking.connect(settings)
    assert "does not exist" in str(info.value) and "mkdir -p" in info.value.fix
    assert info.value.exit_code == 2
    assert not (tmp_path / "no").exists()


def test_a_sqlite_store_in_an_existing_folder_is_created(tmp_path: Path) -> None:
    from mlgate.registry import tracking

    (tmp_path / "params.yaml").write_text("tracking: {uri: 'sqlite:///m.db'}\n")
    settings = load_settings(env={}, params_file=tmp_path / "params.yaml")
    tracking.connect(settings)
    assert (tmp_path / "m.db").is_file()


def test_an_id_column_that_is_not_in_the_data_lists_the_columns(breast_cancer) -> None:
    from mlgate.pipeline.data import check_id_column

    with pytest.raises(ConfigError) as info:
        check_id_column(breast_cancer, "mean_radiu")
    message = str(info.value)
    assert "data.id_column 'mean_radiu' is not a column of the data" in message
    assert 'did you mean "mean_radius"' in message and "'mean_texture'" in message
    assert "(31 in all)" in message
    assert info.value.fix and info.value.exit_code == 2
    check_id_column(breast_cancer, "mean_radius")  # a real column passes
    check_id_column(breast_cancer, None)


def test_a_params_file_over_the_cap_fails_fast_with_a_short_message(tmp_path: Path) -> None:
    from mlgate.settings import PARAMS_MAX_BYTES

    path = tmp_path / "params.yaml"
    with path.open("w") as handle:  # one long value: what used to be echoed whole
        handle.write("model:\n  name: '")
        handle.write("x" * (PARAMS_MAX_BYTES + 1))
        handle.write("'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, params_file=path)
    assert "over the 1,048,576-byte cap" in str(info.value) and info.value.exit_code == 2
    assert len(str(info.value)) < 300


def test_a_long_bad_value_is_echoed_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  seed: '" + "9" * 500_000 + "x'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, params_file=path)
    assert "split.seed must be an integer" in str(info.value)
    assert "(500,003 chars)" in str(info.value) and len(str(info.value)) < 300


def alias_bomb(levels: int = 12) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "train:\n  params:\n" + "".join(f"    {line}\n" for line in lines)


def test_a_yaml_alias_bomb_in_the_params_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(alias_bomb())  # 9**12 strings if expanded
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, params_file=path)
    assert "params.yaml uses a YAML alias (*'a0') at line 4" in str(info.value)
    assert "write the value out in full" in info.value.fix and info.value.exit_code == 2


def test_a_yaml_alias_bomb_in_the_environment_is_refused() -> None:
    bomb = "{a: &a [x, x, x], b: &b [*a, *a, *a], c: [*b, *b, *b]}"
    with pytest.raises(ConfigError) as info:
        load_settings(env={"MLGATE_TRAIN_PARAMS": bomb}, params_file=REPO / "params.yaml")
    assert "environment variable MLGATE_TRAIN_PARAMS uses a YAML alias" in str(info.value)


def test_a_yaml_alias_bomb_fails_on_the_command_line_without_a_traceback(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(alias_bomb(20))
    code, output = run_cli(["validate", "--params", str(path)], capsys)
    assert code == 2 and "uses a YAML alias" in output and "Traceback" not in output
