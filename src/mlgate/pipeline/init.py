"""`mlgate init`: start a repository on your own data (issue 19).

Reads the data file (CSV or Parquet), checks the target against the data contract, and writes:

- `params.yaml`: the keys mlgate needs for this data, each with a comment;
- `schema.yaml`: a pandera schema inferred from the data: dtypes, nullability, the target's two
  classes and each text column's allowed category set, but no bounds fitted to this sample (the
  next data version must not be refused for one value outside today's range; add bounds by
  hand where the domain has them);
- `.gitignore`: mlgate's outputs (mlflow.db, mlartifacts/, reports/, bundle/), appended to an
  existing one.

It refuses to overwrite params.yaml or schema.yaml without `--force`, checks everything before
writing anything, and prints the next commands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from mlgate import cli
from mlgate.errors import ConfigError, DataError, did_you_mean
from mlgate.pipeline.data import LabelProblem, label_classes, load_frame
from mlgate.settings import MODEL_NAME, short

PARAMS = "params.yaml"
SCHEMA = "schema.yaml"
IGNORED = ("/mlflow.db", "/mlartifacts/", "/mlruns/", "/reports/", "/bundle/", "/.demo/")
MAX_CATEGORIES = 50  # a text column with more distinct values is not declared categorical


def infer_schema(
    frame: pd.DataFrame, target: str, classes: tuple[Any, Any], name: str
) -> Any:  # a pandera DataFrameSchema
    """A pandera DataFrameSchema of `frame`: types, nullability, the target's classes and the
    category sets of text columns; no value bounds."""
    import pandera.pandas as pa

    columns = {}
    for column in frame.columns:
        values = frame[column]
        nullable = bool(values.isna().any())
        description = None
        checks = []
        if column == target:
            dtype = _dtype(values)
            checks = [pa.Check.isin(sorted(classes, key=str))]
            description = f"the target: positive class {classes[1]!r}, negative {classes[0]!r}"
        elif _is_text(values):
            distinct = sorted(values.dropna().astype(str).unique())
            if len(distinct) <= MAX_CATEGORIES:
                dtype = "category"
                checks = [pa.Check.isin(distinct)]
                description = (
                    "categorical feature: the allowed categories seen in the data; a category "
                    "outside them is refused here, and scores as missing at serving"
                )
            else:
                dtype = "str"
                description = (
                    f"text with {len(distinct)} distinct values: not a feature mlgate can use; "
                    "drop it, encode it, or name it in data.id_column"
                )
        else:
            dtype = _dtype(values)
        columns[str(column)] = pa.Column(
            dtype,
            checks=checks or None,
            nullable=nullable,
            coerce=True,
            description=description,
        )
    return pa.DataFrameSchema(columns, strict=True, name=name)


def _is_text(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    )


def _dtype(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int64"
    if pd.api.types.is_numeric_dtype(values):
        return "float64"
    return "str"


def params_text(
    *, model: str, dvc_file: str, data_path: str, target: str, positive: Any | None
) -> str:
    positive_line = (
        f"  positive_class: {json.dumps(str(positive))}"
        "   # the class to predict, as written in the data (label 1)"
        if positive is not None
        else '  # positive_class: "1"        # the target holds 0 and 1: 1 is the positive class'
    )
    return f"""\
# mlgate settings, written by `mlgate init`. Every key is optional; the defaults and the rest
# of the keys are in the README's "Settings" table. Precedence (highest first): --set
# SECTION.KEY=VALUE, environment variables MLGATE_<SECTION>_<KEY>, this file, the defaults.

model:
  name: {model}   # the registered model's name in MLflow (and the image's)

data:
  dvc_file: {dvc_file}   # the .dvc file whose change triggers a new model
  path: {data_path}   # the data file, inside what that .dvc file tracks
  target: {json.dumps(target)}   # the label column
{positive_line}
  # id_column: customer_id      # a column naming each row: keys the split, is not a feature

schema:
  path: {SCHEMA}   # the pandera schema `mlgate validate` checks before any run
  min_rows: 50                  # fewer rows than this: refused before training
  min_class_count: 10           # fewer rows of either class than this: refused

split:
  seed: 42                      # the split hashes each row's key with this seed
  validation_fraction: 0.2      # early stopping and the threshold are chosen on this part
  holdout_fraction: 0.2         # champion and candidate are compared on this part

train:
  num_boost_round: 500          # at most this many trees ...
  early_stopping_rounds: 25     # ... stopping when validation loss has not improved this long

metrics:
  threshold: 0.5                # or a rule chosen on validation: max_f1, precision>=0.9

tracking:
  uri: sqlite:///mlflow.db      # a local MLflow store; CI passes its tracking server's URI
  experiment: {model}   # the MLflow experiment of the training runs
"""


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _model_name(root: Path, data: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", data.stem).strip("-._") or root.name
    name = f"{base}-xgb"[:100]
    return name if MODEL_NAME.fullmatch(name) else "mlgate-model"


def init(
    root: Path, data: Path, target: str, positive: str | None = None, force: bool = False
) -> list[str]:
    """Write params.yaml, schema.yaml and .gitignore into `root` for `data`; return the next
    commands. Everything is checked before anything is written."""
    root = root.resolve()
    path = data if data.is_absolute() else root / data
    try:
        relative = PurePosixPath(path.resolve().relative_to(root))
    except ValueError as exc:
        raise ConfigError(
            f"--data {data} is outside this repository ({root})",
            fix="copy the data file into the repository (e.g. data/) and run mlgate init there",
        ) from exc
    if path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise ConfigError(
            f"--data {data}: mlgate reads CSV (.csv) and Parquet (.parquet, .pq) files",
            fix="convert the data to CSV or Parquet",
        )
    frame = load_frame(path)
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        same = [c for c in columns if c.casefold() == target.casefold()]
        hint = f' (did you mean "{same[0]}"?)' if same else did_you_mean(target, columns)
        listed = ", ".join(short(c, 40) for c in columns[:20])
        raise ConfigError(
            f"--target {target!r} is not a column of {relative}{hint}; its columns: {listed}",
            fix="pass the label column's name exactly as in the header",
        )
    try:
        classes = label_classes(frame[target], positive, target)
    except LabelProblem as exc:
        fix = exc.fix.replace("data.positive_class", "--positive").replace(
            'in params.yaml: data: positive_class: "', 'with --positive "'
        )
        raise DataError(exc.message, fix=fix) from exc
    existing = [name for name in (PARAMS, SCHEMA) if (root / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"{' and '.join(existing)} already exist in {root}; nothing was written",
            fix="pass --force to replace them (commit or copy them first)",
        )
    tracked = relative.parts[0]
    dvc_file = f"{tracked}.dvc"
    if len(relative.parts) == 1:
        dvc_file = f"{relative}.dvc"
    model = _model_name(root, path)
    schema = infer_schema(frame, target, classes, name=model)
    schema_yaml = (
        f"# pandera schema of {relative}, inferred by `mlgate init`: dtypes, nullability, the\n"
        "# target's classes and the allowed categories of text columns. No value bounds: add\n"
        "# them by hand where the domain has them (e.g. greater_than_or_equal_to: 0).\n"
        + schema.to_yaml()
    )
    _write_text(
        root / PARAMS,
        params_text(
            model=model,
            dvc_file=dvc_file,
            data_path=str(relative),
            target=target,
            positive=None if positive is None else classes[1],
        ),
    )
    _write_text(root / SCHEMA, schema_yaml)
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.is_file() else []
    missing = [entry for entry in IGNORED if entry not in lines]
    if missing:
        _write_text(
            gitignore,
            "\n".join([*lines, "# mlgate's outputs (mlgate init)", *missing]) + "\n",
        )
    return [
        f"dvc add {tracked}",
        "dvc push",
        f"git add {dvc_file} .gitignore {PARAMS} {SCHEMA}",
        'git commit -m "Data and mlgate settings"',
        "mlgate validate",
        "mlgate train",
    ]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate init: write params.yaml, a pandera schema and a .gitignore for your data."""
    parser = argparse.ArgumentParser(prog="mlgate init", description=main.__doc__)
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="PATH",
        help="the data file (CSV or Parquet), inside this repository",
    )
    parser.add_argument("--target", required=True, metavar="COLUMN", help="the label column")
    parser.add_argument(
        "--positive",
        metavar="VALUE",
        help="the class to predict, as written in the data (needed unless the "
        "target holds 0 and 1)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing params.yaml and schema.yaml"
    )
    args = parser.parse_args(argv)

    def action() -> int:
        steps = init(Path.cwd(), args.data, args.target, args.positive, args.force)
        print(f"wrote {PARAMS}, {SCHEMA} and .gitignore for {args.data}; next:")
        for step in steps:
            print(f"  {step}")
        sys.stdout.flush()
        return 0

    return cli.run(action)
