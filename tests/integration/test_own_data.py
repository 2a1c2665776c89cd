"""docs/own-data.md, run as written (issue 19): the ten commands of "Use your own data", parsed
from the page, from an empty folder to a Staging version, on a generated table with string
labels (Yes/No), a categorical column, an integer column and a strong minority class. Local
sqlite store and a local DVC remote; the commands run as a user types them, through bash.

Cost: a tiny table (600 rows, then 900); about 75 s of CPU for the ten commands and the second
data version together (each `mlgate` command starts a Python with MLflow: ~5 s of it); wall time
was far longer on this shared 2-core machine (setup 300-800 s) than on an idle runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import BIN, REPO, without_tool_variables

PAGE = REPO / "docs" / "own-data.md"


def page_commands() -> list[str]:
    """The `$ ` lines of the console block under "## The ten commands"."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## The ten commands", 1)[1]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block, "docs/own-data.md lost its console block"
    return [line[2:] for line in block.group(1).splitlines() if line.startswith("$ ")]


def churn_table(rows: int = 600, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "gold", "pro"], rows)
    tenure = rng.integers(0, 72, rows)
    charges = rng.normal(60, 15, rows).round(2)
    score = (
        1.2 * (plan == "basic")
        - 1.0 * (plan == "pro")
        - 0.04 * tenure
        + 0.03 * (charges - 60)
        + rng.normal(0, 0.7, rows)
    )
    return pd.DataFrame(
        {
            "tenure": tenure,
            "charges": charges,
            "plan": plan,
            "region": rng.choice(["north", "south"], rows),
            "Churn": np.where(score > 0, "Yes", "No"),
        }
    )


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("own-data")
    folder = root / "churn"
    (folder / "data").mkdir(parents=True)
    table = churn_table()
    table.to_csv(folder / "data" / "churn.csv", index=False)
    env = {
        **without_tool_variables(),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(root),
        "GIT_AUTHOR_NAME": "newcomer",
        "GIT_AUTHOR_EMAIL": "newcomer@mlgate.invalid",
        "GIT_COMMITTER_NAME": "newcomer",
        "GIT_COMMITTER_EMAIL": "newcomer@mlgate.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = []
    for command in page_commands():
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"$ {command}\n{result.stderr}"
        done.append((command, result))
    return {"folder": folder, "table": table, "done": done, "env": env}


def test_the_page_has_ten_commands_from_an_empty_folder() -> None:
    commands = page_commands()
    assert len(commands) == 10
    assert commands[0] == "git init" and commands[-1].startswith("mlgate promote")


def test_the_readme_shows_the_same_ten_commands() -> None:
    """README's "Use your own data" is the page's block, not a copy that can drift from the
    commands this module runs."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Use your own data", 1)
    assert len(section) == 2, "README.md lost its 'Use your own data' section"
    block = re.search(r"```console\n(.*?)```", section[1], re.S)
    assert block, "README.md's 'Use your own data' lost its console block"
    shown = [line[2:] for line in block.group(1).splitlines() if line.startswith("$ ")]
    assert shown == page_commands()


def test_the_ten_commands_end_in_a_staging_version(walked) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{walked['folder'] / 'mlflow.db'}")
    staged = client.get_model_version_by_alias("churn-xgb", "staging")
    assert str(staged.version) == "1"
    # the positive class is recorded with the model, and the metrics are of it
    assert staged.tags["mlgate.data.positive_class"] == "Yes"
    assert staged.tags["mlgate.data.negative_class"] == "No"
    assert staged.tags["mlgate.features.categorical"] == "plan,region"
    expected_rate = (walked["table"]["Churn"] == "Yes").mean()
    run = client.get_run(staged.run_id)
    rate = float(run.data.tags["mlgate.data.positive_rate"])
    assert rate == pytest.approx(expected_rate, abs=1e-6)
    # mlgate's outputs stay out of git (the .gitignore mlgate init wrote)
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=walked["folder"], capture_output=True, text=True
    ).stdout
    assert status == "", status


def test_pyfunc_takes_integer_columns_category_codes_and_strings(walked) -> None:
    folder = walked["folder"]
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/churn-xgb@staging")
    types = {spec.name: str(spec.type) for spec in model.metadata.get_input_schema().inputs}
    assert types["tenure"].endswith("long") and types["charges"].endswith("double")
    categories = model.metadata.metadata["mlgate.categories"]
    assert categories == {"plan": ["basic", "gold", "pro"], "region": ["north", "south"]}
    table = walked["table"].head(20)
    codes = table.drop(columns=["Churn"]).assign(
        plan=table["plan"].map(categories["plan"].index).astype("float64"),
        region=table["region"].map(categories["region"].index).astype("float64"),
    )
    assert codes["tenure"].dtype == np.int64  # pyfunc refused this when every input was double
    proba = np.asarray(model.predict(codes), dtype=float)
    # the oracle: the booster itself on the same codes, with categorical feature types
    import xgboost as xgb

    booster = model.get_raw_model()
    assert booster.feature_types == ["int", "float", "c", "c"]
    direct = booster.predict(
        xgb.DMatrix(codes, feature_types=booster.feature_types, enable_categorical=True)
    )
    np.testing.assert_allclose(proba, direct, rtol=0, atol=1e-7)
    # and the rows as the user has them: category strings (mlgate's pyfunc flavour)
    strings = np.asarray(model.predict(table.drop(columns=["Churn"])), dtype=float)
    np.testing.assert_allclose(strings, direct, rtol=0, atol=1e-7)
    # the page's example, run as written: category strings, one region never seen (missing)
    snippet = PAGE.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(textwrap.dedent(snippet), namespace)  # noqa: S102 (the docs page's own example)
    rows = namespace["rows"]
    by_hand = rows.assign(plan=[0.0, 1.0], region=[0.0, np.nan])  # basic, gold; north, (west)
    expected = booster.predict(
        xgb.DMatrix(by_hand, feature_types=booster.feature_types, enable_categorical=True)
    )
    np.testing.assert_allclose(namespace["scores"], expected, rtol=0, atol=1e-7)


def test_drift_tests_categorical_features_as_categories(walked) -> None:
    """`mlgate drift` on the walked project's version 1, on a table where the plans' shares
    shift: drift on `plan` by a categorical test (chi-square at this size, checked against
    scipy's own computation), read from a file and from the prediction log's category codes.
    (The no-drift side, the same rows in another order, is tests/unit/test_drift_categorical.py.)
    Cost: two `mlgate drift` commands (about 10 s of CPU each; 80 s of wall time each at a load
    average of 15 on this shared machine)."""
    from scipy import stats

    from mlgate.serving.predlog import DirectorySink, PredictionLog

    folder, env, table = walked["folder"], walked["env"], walked["table"]
    features = table.drop(columns=["Churn"])
    rng = np.random.default_rng(21)
    plans = rng.choice(["basic", "gold", "pro"], len(table), p=[0.7, 0.2, 0.1])
    shifted = features.assign(plan=plans)
    shifted.to_csv(folder.parent / "shifted.csv", index=False)
    # the same rows as mlgate's server logs them: category codes
    known = {"plan": ["basic", "gold", "pro"], "region": ["north", "south"]}
    coded = shifted.assign(**{c: shifted[c].map(names.index) for c, names in known.items()})
    sink = folder.parent / "predictions"
    log = PredictionLog(DirectorySink(sink), "churn-xgb", "1", list(coded.columns))
    log.record(coded.to_numpy(dtype=np.float64), np.full(len(coded), 0.5))
    assert log.flush()

    shares = table["plan"].value_counts(normalize=True).sort_index()
    counts = shifted["plan"].value_counts().reindex(shares.index, fill_value=0)
    oracle = stats.chisquare(counts, shares * len(shifted)).pvalue
    for current in ("../shifted.csv", str(sink)):
        result = subprocess.run(
            ["bash", "-c", f"mlgate drift --version 1 --current {current}"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        # one feature of four drifting is under monitor.drift_share (0.5): exit 0
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        columns = json.loads((folder / "reports" / "drift.json").read_text())["columns"]
        for column in ("plan", "region"):
            assert columns[column]["kind"] == "categorical"
            assert columns[column]["method"].startswith(("chi-square", "Z-test"))
        assert columns["tenure"]["kind"] == columns["charges"]["kind"] == "numerical"
        plan = columns["plan"]
        assert plan["score"] == pytest.approx(oracle, rel=1e-6) and plan["drifted"] is True
        assert [c for c, v in columns.items() if v["drifted"]] == ["plan"]
        markdown = (folder / "reports" / "drift.md").read_text()
        assert "chi-square p_value (categorical)" in markdown


def test_a_second_version_with_a_new_category_is_compared_with_the_first(walked) -> None:
    """The second path: a data version with a plan the champion never saw. Version 2 knows
    four plans, version 1 three; evaluate scores each with its own codes. The oracle: version
    1's booster fed codes built by hand from its own category list (the new plan: missing).
    Cost: one more train and evaluate (about 20 s of CPU)."""
    from sklearn.metrics import roc_auc_score

    folder, env = walked["folder"], walked["env"]
    grown = pd.concat([walked["table"], churn_table(rows=300, seed=11)], ignore_index=True)
    grown.loc[len(walked["table"]) :: 3, "plan"] = "enterprise"
    grown.to_csv(folder / "data" / "churn.csv", index=False)
    # the schema mlgate init wrote allows the three plans it saw: the user adds the new one
    schema = (folder / "schema.yaml").read_text()
    schema = schema.replace("    - basic\n", "    - basic\n    - enterprise\n", 1)
    (folder / "schema.yaml").write_text(schema)
    for command in (
        "dvc add data",
        "dvc push",
        'git add -A && git commit -m "More rows, a new plan"',
        "mlgate train",
        "mlgate evaluate --candidate-version 2 --fail-on-gate false",
    ):
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
    decision = json.loads((folder / "reports" / "churn-xgb" / "v2" / "decision.json").read_text())
    assert decision["champion"]["version"] == "1"

    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking)
    mlflow.set_tracking_uri(tracking)
    run_id = client.get_model_version("churn-xgb", "2").run_id
    manifest = client.download_artifacts(run_id, "split/holdout.json", str(folder.parent))
    keys = json.loads(Path(manifest).read_text())["holdout"]
    holdout = pd.read_csv(folder / "data" / "churn.csv").loc[keys]
    assert (holdout["plan"] == "enterprise").any()
    champion = mlflow.pyfunc.load_model("models:/churn-xgb/1")
    known = champion.metadata.metadata["mlgate.categories"]
    assert "enterprise" not in known["plan"]
    import xgboost as xgb

    booster = champion.get_raw_model()
    by_hand = holdout.drop(columns=["Churn"]).copy()
    for column, names in known.items():
        by_hand[column] = pd.Categorical(by_hand[column], categories=names).codes.astype(float)
        by_hand.loc[by_hand[column] < 0, column] = np.nan
    proba = booster.predict(
        xgb.DMatrix(by_hand, feature_types=booster.feature_types, enable_categorical=True)
    )
    want = roc_auc_score(holdout["Churn"] == "Yes", proba)
    assert decision["metrics"]["champion"]["overall"]["auc"] == pytest.approx(want, abs=1e-9)
