"""Stage 1b: validate the data against the pandera schema kept in the repository.

The schema is a pandera YAML file (`schema.path`), never Python. Validation is lazy: every failing
column and check is listed with its count and sample values, together with the checks that
training itself needs (enough rows, both classes present). Bad data never reaches training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mlgate import cli, github
from mlgate.data import DataVersion, load_frame, pull
from mlgate.errors import ConfigError, ValidationFailed
from mlgate.files import write_json_atomic
from mlgate.settings import Settings

SAMPLES = 5
DATAFRAME = "(data frame)"


@dataclass(frozen=True)
class Violation:
    column: str
    check: str
    count: int
    samples: tuple[str, ...]
    rows: tuple[int, ...] = ()


@dataclass(frozen=True)
class Report:
    schema_version: int
    data: str
    rows: int
    columns: int
    violations: tuple[Violation, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_markdown(self) -> str:
        if self.ok:
            return f"### ✅ Data valid\n`{self.data}`: {self.rows} rows, {self.columns} columns"
        table = github.markdown_table(
            ["column", "check", "failures", "sample values", "sample rows"],
            [
                (
                    v.column,
                    f"`{v.check}`",
                    v.count,
                    ", ".join(v.samples),
                    ", ".join(map(str, v.rows)),
                )
                for v in self.violations
            ],
        )
        return (
            f"### ❌ Data invalid: {len(self.violations)} checks failed\n"
            f"`{self.data}`: {self.rows} rows, {self.columns} columns\n\n{table}"
        )

    def to_text(self) -> str:
        if self.ok:
            return f"data valid: {self.data} ({self.rows} rows, {self.columns} columns)"
        lines = [
            f"data invalid: {self.data} ({self.rows} rows, {self.columns} columns), "
            f"{len(self.violations)} checks failed:"
        ]
        for v in self.violations:
            rows = f" at rows {', '.join(map(str, v.rows))}" if v.rows else ""
            lines.append(
                f"  - {v.column}: {v.check} failed {v.count}x, e.g. {', '.join(v.samples)}{rows}"
            )
        return "\n".join(lines)


def load_schema(path: Path):  # -> pandera DataFrameSchema
    import pandera.pandas as pa

    if not path.is_file():
        raise ConfigError(
            f"schema file {path} not found",
            fix="set schema.path to the pandera YAML schema of your data",
        )
    fix = "write it in pandera's YAML format (see schema/breast_cancer.yaml)"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("columns"), dict)
            or not doc["columns"]
        ):
            # pandera accepts such a file and would then check nothing at all
            raise ConfigError(
                f"schema file {path} is not a valid pandera YAML schema: it has "
                "no 'columns:' mapping",
                fix=fix,
            )
        return pa.DataFrameSchema.from_yaml(path)
    except ConfigError:
        raise
    except Exception as exc:  # pandera and yaml raise many types for a bad schema file
        raise ConfigError(
            f"schema file {path} is not a valid pandera YAML schema: {exc}", fix=fix
        ) from exc


def validate_frame(
    frame: pd.DataFrame, schema, settings: Settings, *, name: str
) -> tuple[pd.DataFrame, Report]:
    """Validate lazily and return the validated (coerced) frame with a report of every failure."""
    import pandera.errors

    violations: list[Violation] = []
    validated = frame
    try:
        validated = schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        violations += _group(exc.failure_cases)
    except pandera.errors.SchemaError as exc:  # non-lazy failures (e.g. an empty frame)
        violations.append(Violation(DATAFRAME, str(exc).splitlines()[0], 1, ()))
    violations += _training_checks(frame, settings)
    report = Report(
        schema_version=1,
        data=name,
        rows=len(frame),
        columns=frame.shape[1],
        violations=tuple(violations),
    )
    return validated, report


def _group(failure_cases: pd.DataFrame) -> list[Violation]:
    cases = failure_cases.copy()
    schema_level = cases["schema_context"] == "DataFrameSchema"
    # For schema-wide checks (a column missing or unexpected) the column is the failure case.
    cases.loc[schema_level, "column"] = cases.loc[schema_level, "failure_case"]
    out = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        rows = tuple(int(i) for i in group["index"].dropna().head(SAMPLES))
        samples = tuple(dict.fromkeys(repr(v) for v in group["failure_case"].head(SAMPLES)))
        if check in {"column_in_schema", "column_in_dataframe"}:
            check = {
                "column_in_schema": "unexpected column (schema is strict)",
                "column_in_dataframe": "required column missing",
            }[check]
            samples = ()
        out.append(Violation(str(column), str(check), len(group), samples, rows))
    return out


def _training_checks(frame: pd.DataFrame, settings: Settings) -> list[Violation]:
    """What training needs beyond the schema: enough rows and both classes, each big enough
    for a stratified three-way split."""
    out = []
    if len(frame) < settings.schema.min_rows:
        out.append(
            Violation(
                DATAFRAME,
                f"at least {settings.schema.min_rows} rows (schema.min_rows)",
                1,
                (f"{len(frame)} rows",),
            )
        )
    numeric = frame.select_dtypes("number")
    for column, count in np.isinf(numeric).sum().items():
        if count:  # pandera's range checks let +inf through; XGBoost refuses it
            bad = numeric[column][np.isinf(numeric[column])].head(5)
            out.append(
                Violation(
                    str(column),
                    "finite values",
                    int(count),
                    tuple(str(v) for v in bad),
                    tuple(int(r) for r in bad.index),
                )
            )
    target = settings.data.target
    if target not in frame.columns:
        out.append(Violation(target, "target column present (data.target)", 1, ()))
        return out
    counts = frame[target].value_counts(dropna=True)
    if len(counts) < 2:
        seen = ", ".join(f"{k!r}" for k in counts.index) or "none"
        out.append(Violation(target, "both classes present", 1, (f"classes seen: {seen}",)))
    else:
        small = counts[counts < settings.schema.min_class_count]
        for label, count in small.items():
            out.append(
                Violation(
                    target,
                    f"at least {settings.schema.min_class_count} rows per "
                    "class (schema.min_class_count)",
                    1,
                    (f"{label!r}: {count}",),
                )
            )
    return out


def check(settings: Settings) -> tuple[pd.DataFrame, DataVersion, Report]:
    """Pull, load and validate; raise ValidationFailed (after reporting) when the data is bad."""
    version = pull(settings)
    schema = load_schema(settings.path(settings.schema.path))
    frame = load_frame(settings.path(Path(version.path)), settings.data.max_bytes)
    validated, report = validate_frame(frame, schema, settings, name=version.path)
    report_path = settings.path(settings.reports.dir) / "validation.json"
    write_json_atomic(report_path, {**asdict(report), "ok": report.ok, "data_md5": version.dvc_md5})
    print(report.to_text(), flush=True)
    github.write_summary(settings.github, report.to_markdown())
    github.write_outputs(
        settings.github,
        {
            "valid": str(report.ok).lower(),
            "report": github.relative(report_path, Path.cwd()),
            "data-hash": version.dvc_md5,
        },
    )
    if not report.ok:
        for v in report.violations[:10]:
            github.annotate(
                "error", f"{v.column}: {v.check} failed {v.count}x", title="data validation"
            )
        raise ValidationFailed(
            f"{version.path} breaks the schema in {len(report.violations)} checks "
            "(listed above); nothing was trained",
            fix=f"correct the data and push a new version (`dvc add`, `dvc push`), or update "
            f"{settings.schema.path} if the schema is what changed",
        )
    return validated, version, report


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate validate: pull the data named by data.dvc and validate it against the schema."""
    parser = cli.stage_parser("validate", main.__doc__)
    args = parser.parse_args(argv)

    def action() -> int:
        check(cli.settings_from(args, env))
        return 0

    return cli.run(action)
