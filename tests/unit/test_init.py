"""`mlgate init` (issue 19) and the newcomer mistakes of the issue, each ending in `error:` and
`fix:` with its exit code, never a traceback. Generated tables only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
import yaml

from mlgate.errors import ConfigError, DataError
from mlgate.pipeline import init, validate
from mlgate.settings import load_settings
from tests.conftest import push_data


def table(rows: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": rng.normal(50, 12, rows),
            "brand": rng.choice(["CH", "MM"], rows),
            "store": rng.choice(["a", "b", "c", "d"], rows),
            "member": rng.random(rows) < 0.3,
            "Purchase": rng.choice(["CH", "MM"], rows, p=[0.94, 0.06]),
        }
    )
    frame.loc[[2, 7], "income"] = np.nan
    return frame


def folder_with(tmp_path: Path, frame: pd.DataFrame, name: str = "data/orders.csv") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["data/orders.csv", "data/orders.parquet"])
def test_init_writes_params_schema_and_gitignore(tmp_path: Path, name: str) -> None:
    frame = table()
    folder_with(tmp_path, frame, name)
    steps = init.init(tmp_path, Path(name), "Purchase", "MM")
    assert steps[:2] == ["dvc add data", "dvc push"] and steps[-1] == "mlgate train"

    params_text = (tmp_path / "params.yaml").read_text()
    for line in params_text.splitlines():  # every key it sets carries a comment
        if line.strip() and not line.lstrip().startswith("#") and not line.endswith(":"):
            assert "#" in line, line
    settings = load_settings(env={}, params_file=tmp_path / "params.yaml")
    assert settings.data.target == "Purchase" and settings.data.positive_class == "MM"
    assert str(settings.data.path) == name and str(settings.data.dvc_file) == "data.dvc"

    doc = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    columns = doc["columns"]
    for column in columns.values():  # no bounds fitted to the sample
        assert not {"greater_than_or_equal_to", "less_than_or_equal_to", "in_range"} & set(column)
    assert columns["store"]["dtype"] == "category"
    assert columns["store"]["isin"] == ["a", "b", "c", "d"]
    assert columns["Purchase"]["isin"] == ["CH", "MM"]
    assert columns["income"]["nullable"] is True and not columns["age"].get("nullable")
    assert columns["age"]["dtype"] == "int64" and columns["member"]["dtype"] == "bool"

    # the schema it wrote accepts the data, and the data contract holds
    schema = validate.load_schema(tmp_path / "schema.yaml")
    source = (
        pd.read_parquet(tmp_path / name)
        if name.endswith("parquet")
        else pd.read_csv(tmp_path / name)
    )
    _, report = validate.validate_frame(source, schema, settings, name=name)
    assert report.ok, report.to_text()
    # a value outside this sample's range is still valid (no fitted bounds)
    wider = source.assign(age=source["age"] + 1000)
    assert validate.validate_frame(wider, schema, settings, name=name)[1].ok

    ignored = (tmp_path / ".gitignore").read_text().splitlines()
    assert {"/mlflow.db", "/mlartifacts/", "/reports/", "/bundle/"} <= set(ignored)


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    folder_with(tmp_path, table())
    (tmp_path / "params.yaml").write_text("# mine\n")
    (tmp_path / ".gitignore").write_text("/mlflow.db\n*.log\n")
    with pytest.raises(ConfigError, match="params.yaml already exist") as info:
        init.init(tmp_path, Path("data/orders.csv"), "Purchase", "MM")
    assert "--force" in info.value.fix and info.value.exit_code == 2
    assert (tmp_path / "params.yaml").read_text() == "# mine\n"  # nothing written
    assert not (tmp_path / "schema.yaml").exists()
    init.init(tmp_path, Path("data/orders.csv"), "Purchase", "MM", force=True)
    assert "positive_class" in (tmp_path / "params.yaml").read_text()
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["/mlflow.db", "*.log"] and lines.count("/mlflow.db") == 1
    init.init(tmp_path, Path("data/orders.csv"), "Purchase", "MM", force=True)  # again
    assert (tmp_path / ".gitignore").read_text().splitlines() == lines


@pytest.mark.parametrize(
    ("target", "positive", "error", "says", "fix"),
    [
        ("purchase", "MM", ConfigError, 'did you mean "Purchase"?', "exactly as in the header"),
        ("Purchase", None, DataError, "not 0 and 1", 'with --positive "MM"'),
        ("Purchase", "mm", DataError, 'did you mean "MM"?', '"CH" or "MM"'),
        ("store", "a", DataError, "holds 4 classes", "keep two classes"),
    ],
)
def test_init_refuses_a_target_it_cannot_use(tmp_path, target, positive, error, says, fix):
    folder_with(tmp_path, table())
    with pytest.raises(error) as info:
        init.init(tmp_path, Path("data/orders.csv"), target, positive)
    assert says in info.value.message and fix in info.value.fix
    assert not (tmp_path / "params.yaml").exists()


def test_init_cli_prints_the_next_commands(tmp_path, monkeypatch, capsys) -> None:
    folder_with(tmp_path, table())
    monkeypatch.chdir(tmp_path)
    assert init.main(["--data", "data/orders.csv", "--target", "Purchase", "--positive", "MM"]) == 0
    out = capsys.readouterr().out
    assert "dvc add data" in out and "mlgate train" in out
    assert init.main(["--data", "data/orders.csv", "--target", "Purchase", "--positive", "MM"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fix: pass --force" in err and "Traceback" not in err
    assert init.main(["--data", "data/nope.csv", "--target", "Purchase"]) == 3
    err = capsys.readouterr().err
    assert "files present in" in err and "orders.csv" in err and "fix:" in err


def spoiled(breast_cancer: pd.DataFrame) -> pd.DataFrame:
    """The shipped data as a newcomer's table: Yes/No labels and a text column."""
    return breast_cancer.assign(
        diagnosis=breast_cancer["diagnosis"].map({0: "No", 1: "Yes"}),
        clinic=np.where(breast_cancer["mean_radius"] > 14, "north", "south"),
    )


@pytest.mark.parametrize(
    ("overrides", "code", "says"),
    [
        ([], 4, 'name the class to predict in params.yaml: data: positive_class: "Yes"'),
        (["data.target=Diagnosis"], 4, 'did you mean "diagnosis"?'),
        (["data.path=data/data.csv"], 3, "files present in"),
    ],
)
def test_newcomer_mistakes_end_in_error_and_fix(
    project, clean_env, breast_cancer, capsys, overrides, code, says
) -> None:
    push_data(project, spoiled(breast_cancer))
    argv = ["--params", str(project / "params.yaml")]
    for override in overrides:
        argv += ["--set", override]
    assert validate.main(argv, clean_env) == code
    err = capsys.readouterr()
    text = err.out + err.err
    assert "error: " in err.err and "\n  fix: " in err.err and "Traceback" not in text
    assert says in text
    if code == 4:  # the text column is named with its fix too
        assert "clinic" in text and "`dtype: category`" in text


def test_the_inferred_schema_is_a_pandera_schema() -> None:
    frame = table()
    schema = init.infer_schema(frame, "Purchase", ("CH", "MM"), name="x")
    assert isinstance(schema, pa.DataFrameSchema) and schema.strict is True
    assert set(schema.columns) == set(frame.columns)
