"""Stage 1b: validate the data against the pandera schema kept in the repository.

The schema is a pandera YAML file (`schema.path`), never Python. Validation is lazy: every failing
column and check is listed with its count and sample values, together with the checks that
training itself needs (enough rows, both classes present). Bad data never reaches training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlgate import cli
from mlgate.errors import ConfigError, ValidationFailed, did_you_mean
from mlgate.files import write_json_atomic
from mlgate.github import outputs as github
from mlgate.pipeline import checks
from mlgate.pipeline.data import DataVersion, LabelProblem, label_classes, load_frame, pull
from mlgate.settings import Settings, short

SAMPLES = 5
DATAFRAME = "(data frame)"


@dataclass(frozen=True)
class Violation:
    column: str
    check: str
    count: int
    samples: tuple[str, ...]
    rows: tuple[int, ...] = ()
    fix: str = ""  # what to change, for the data contract's checks


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
            if v.fix:
                lines.append(f"      fix: {v.fix}")
        return "\n".join(lines)


def load_schema(path: Path) -> Any:  # pandera DataFrameSchema
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
    frame: pd.DataFrame, schema: Any, settings: Settings, *, name: str
) -> tuple[pd.DataFrame, Report]:
    """Validate lazily and return the validated (coerced) frame with a report of every failure."""
    import pandera.errors

    violations: list[Violation] = []
    validated = frame
    try:
        validated = schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        violations += _group(exc.failure_cases, schema, frame.columns)
    except pandera.errors.SchemaError as exc:  # non-lazy failures (e.g. an empty frame)
        violations.append(Violation(DATAFRAME, str(exc).splitlines()[0], 1, ()))
    violations += _training_checks(frame, settings)
    violations += contract_checks(validated, settings)
    report = Report(
        schema_version=1,
        data=name,
        rows=len(frame),
        columns=frame.shape[1],
        violations=tuple(violations),
    )
    return validated, report


def _group(failure_cases: pd.DataFrame, schema: Any, columns: Sequence[Any]) -> list[Violation]:
    out = []
    cases = checks.ordered(failure_cases, schema, columns)
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        rows = tuple(int(i) for i in group["index"].dropna().head(SAMPLES))
        samples = tuple(repr(v) for v in group["failure_case"].head(SAMPLES))
        out.append(_violation(str(column), str(check), len(group), samples, rows))
    return out


def _violation(
    column: str, check: str, count: int, samples: tuple[str, ...], rows: tuple[int, ...]
) -> Violation:
    """One failing pandera check: the first SAMPLES cases' values (each once) and rows."""
    values = tuple(dict.fromkeys(samples))
    if check in {"column_in_schema", "column_in_dataframe"}:
        check = {
            "column_in_schema": "unexpected column (schema is strict)",
            "column_in_dataframe": "required column missing",
        }[check]
        values = ()
    return Violation(column, check, count, values, rows)


def _training_checks(frame: pd.DataFrame, settings: Settings) -> list[Violation]:
    """What training needs beyond the schema: enough rows and both classes, each big enough
    for a stratified three-way split."""
    classes = checks.classes_of(frame, settings.data.target)
    return _training_violations(
        len(frame),
        [str(c) for c in frame.columns],
        checks.infinite_of(frame),
        None if classes is None else frame[settings.data.target].value_counts(dropna=True),
        settings,
    )


def _training_violations(
    rows: int,
    columns: list[str],
    infinite: Mapping[str, tuple[int, list[str], list[int]]],
    counts: pd.Series | None,
    settings: Settings,
) -> list[Violation]:
    """The training checks from the data's aggregates: its rows and columns, +inf per numeric
    column (`checks.infinite_of`), the target's value counts (None: no target column)."""
    out = []
    if rows < settings.schema.min_rows:
        out.append(
            Violation(
                DATAFRAME,
                f"at least {settings.schema.min_rows} rows (schema.min_rows)",
                1,
                (f"{rows} rows",),
            )
        )
    for column, (count, values, at) in infinite.items():
        # pandera's range checks let +inf through; XGBoost refuses it
        out.append(Violation(column, "finite values", count, tuple(values), tuple(at)))
    target = settings.data.target
    if counts is None:
        listed = ", ".join(short(c, 40) for c in columns[:20]) + (
            f", ... ({len(columns)} in all)" if len(columns) > 20 else ""
        )
        out.append(
            Violation(
                target,
                "target column present (data.target)",
                1,
                (f"not a column{_did_you_mean_column(target, columns)}",),
                fix=f"set data.target to the label column; the columns are: {listed}",
            )
        )
        return out
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


def _did_you_mean_column(name: str, columns: list[str]) -> str:
    """did_you_mean, first ignoring case (a one-letter name differs from its capital by all of
    its letters, so difflib alone misses it)."""
    same = [c for c in columns if c.casefold() == name.casefold()]
    return f' (did you mean "{same[0]}"?)' if same else did_you_mean(name, columns)


def contract_checks(frame: pd.DataFrame, settings: Settings) -> list[Violation]:
    """The data contract, beyond the schema: the target is two classes, the positive one
    named (data.positive_class) unless they are 0 and 1, no label missing; every feature is
    numeric, boolean or declared categorical. Each violation names its columns and the fix."""
    contract = checks.contract_of(frame, settings.data.target, settings.data.id_column)
    return _contract_violations(contract, settings)


def _contract_violations(contract: checks.Contract, settings: Settings) -> list[Violation]:
    """The contract checks from the data's aggregates (`checks.contract_of`)."""
    out: list[Violation] = []
    target = settings.data.target
    if contract.single and len(contract.labels) >= 2:  # else: "both classes present" says it
        try:
            label_classes(pd.Series(contract.labels), settings.data.positive_class, target)
        except LabelProblem as exc:
            out.append(
                Violation(target, "two classes, positive one named", 1, (exc.message,), fix=exc.fix)
            )
        if contract.missing:
            out.append(
                Violation(
                    target,
                    "no missing label",
                    contract.missing,
                    (),
                    tuple(contract.missing_rows[:SAMPLES]),
                    fix="drop the unlabelled rows or label them, then push a new data version",
                )
            )
    found: dict[str, tuple[str, list[str]]] = {}
    for column, usable, dtype, values in contract.features:
        if not usable:
            found[column] = (dtype, values)
    bad = list(found)
    if bad:
        samples = [
            f"{short(column, 40)}: {found[column][0]} ({', '.join(found[column][1])})"
            for column in bad[:SAMPLES]
        ]
        out.append(
            Violation(
                ", ".join(bad[:20]) + (f", ... ({len(bad)} in all)" if len(bad) > 20 else ""),
                "feature is numeric, boolean or declared categorical",
                len(bad),
                tuple(samples),
                fix="declare a text column categorical in the schema (`dtype: category`, "
                "`coerce: true`; `mlgate init` writes it), drop it from the data, or name an "
                "identifier column in data.id_column; a number stored as text needs "
                "`coerce: true` and a numeric dtype in the schema",
            )
        )
    return out


def check(settings: Settings) -> tuple[pd.DataFrame, DataVersion, Report]:
    """Pull, load and validate; raise ValidationFailed (after reporting) when the data is bad.
    The local engine's: with train.engine: dask the data stays on the workers (`on_workers`,
    `mlgate.pipeline.onworkers`) and nothing calls this."""
    schema = load_schema(settings.path(settings.schema.path))
    version = pull(settings)
    frame = load_frame(settings.path(Path(version.path)), settings.data.max_bytes)
    validated, report = validate_frame(frame, schema, settings, name=version.path)
    publish(settings, report, version.dvc_md5)
    return validated, version, report


def publish(settings: Settings, report: Report, md5: str) -> None:
    """The report as validation.json, text, step summary and outputs; ValidationFailed (exit 3)
    when the data is bad."""
    report_path = settings.path(settings.reports.dir) / "validation.json"
    write_json_atomic(report_path, {**asdict(report), "ok": report.ok, "data_md5": md5})
    print(report.to_text(), flush=True)
    github.write_summary(settings.github, report.to_markdown())
    github.write_outputs(
        settings.github,
        {
            "valid": str(report.ok).lower(),
            "report": github.relative(report_path, Path.cwd()),
            "data-hash": md5,
        },
    )
    if not report.ok:
        for v in report.violations[:10]:
            github.annotate(
                "error", f"{v.column}: {v.check} failed {v.count}x", title="data validation"
            )
        fixes = list(dict.fromkeys(v.fix for v in report.violations if v.fix))
        raise ValidationFailed(
            f"{report.data} breaks the schema or the data contract in "
            f"{len(report.violations)} checks (listed above); nothing was trained",
            fix="; ".join(fixes[:3])
            if fixes
            else f"correct the data and push a new version (`dvc add`, `dvc push`), or update "
            f"{settings.schema.path} if the schema is what changed",
        )


def on_cluster(settings: Settings, cluster_client: Any = None) -> tuple[Report, str]:
    """train.engine: dask: the data version's shards validated on the workers, partition by
    partition, from the DVC remote (no pull); the report and the version's md5."""
    from mlgate.pipeline import cluster, shards

    located = shards.locate(settings)
    path = settings.path(settings.data.path)
    name = (  # as the local engine names it (DataVersion.path)
        path.relative_to(settings.project_dir).as_posix()
        if path.is_relative_to(settings.project_dir)
        else path.as_posix()
    )
    if cluster_client is None:
        with cluster.connect(settings) as client:
            return summarized(client, settings, located, name), located.dvc_md5
    return summarized(cluster_client, settings, located, name), located.dvc_md5


def on_workers(settings: Settings, cluster_client: Any) -> tuple[Report, Any, dict[str, str]]:
    """`on_cluster` for a stage that goes on with the data on the workers (train.engine: dask):
    the report, the version's shards (`shards.Shards`) and each column's dtype as the schema
    coerced it (from the first partition that passed), which the workers apply again."""
    from mlgate.pipeline import shards

    located = shards.locate(settings)
    summaries = _summaries(cluster_client, settings, located)
    report = merge(summaries, settings, name=_name(settings))
    dtypes = next((s.dtypes for s in summaries if s.dtypes), {})
    return report, located, dtypes


def _name(settings: Settings) -> str:
    """data.path as the local engine names the data (DataVersion.path)."""
    path = settings.path(settings.data.path)
    return (
        path.relative_to(settings.project_dir).as_posix()
        if path.is_relative_to(settings.project_dir)
        else path.as_posix()
    )


def summarized(client: Any, settings: Settings, located: Any, name: str) -> Report:
    """Validate the shards of `located` (`shards.Shards`) on the workers; one report."""
    return merge(_summaries(client, settings, located), settings, name=name)


def _summaries(client: Any, settings: Settings, located: Any) -> list[checks.Summary]:
    """Each partition of `located`'s shards validated on the workers, in the version's order."""
    from dask.delayed import delayed

    from mlgate.pipeline import cluster, shards

    path = settings.path(settings.schema.path)
    schema = load_schema(path)
    if schema.unique:
        raise ConfigError(
            f"schema file {path} declares unique: {schema.unique} for the whole frame, which "
            "train.engine: dask cannot check across partitions yet",
            fix="declare `unique: true` on one column instead, or use train.engine: local",
        )
    frame = shards.frame(client, located)
    duplicated: dict[str, list[Any]] = {}
    for column in checks.unique_columns(schema):
        if column in frame.columns:  # reduced on the workers: only values seen twice come back
            counts = frame[column].value_counts(dropna=False)
            duplicated[column] = counts[counts > 1].compute().index.tolist()
    target, id_column = settings.data.target, settings.data.id_column
    text = path.read_text(encoding="utf-8")
    # one task per partition reads it and summarizes it: the partition is dropped as soon as
    # its summary exists, so the workers never hold more than the partitions they work on
    summarize = delayed(checks.summarize, pure=True)
    tasks = [summarize(part, text, target, id_column, duplicated) for part in frame.to_delayed()]
    summaries: list[checks.Summary] = cluster.watched(
        client, lambda: client.gather(client.compute(tasks)), "validation"
    )
    return summaries


def merge(summaries: Sequence[checks.Summary], settings: Settings, *, name: str) -> Report:
    """The partitions' summaries (in the version's order) as the one report the local engine
    gives for the whole frame: counts summed, the first rows and values kept, each row
    numbered in the whole version, the checks that span partitions from their aggregates."""
    offsets = [sum(s.rows for s in summaries[:i]) for i in range(len(summaries))]
    rows = sum(s.rows for s in summaries)
    columns = summaries[0].columns if summaries else []
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for summary, offset in zip(summaries, offsets, strict=True):
        for f in summary.failures:
            group = groups.setdefault(
                (f.column, f.check),
                {"rank": f.rank, "count": 0, "rows": [], "values": [], "general": {}},
            )
            group["count"] += f.count
            group["rows"] += [offset + r for r in f.rows]
            group["values"] += f.values
            group["general"].update(dict.fromkeys(f.general))  # the same case in every partition
    violations = []
    for (column, check), group in sorted(groups.items(), key=lambda item: item[1]["rank"]):
        if group["count"]:
            # a dtype check fails at the rows that keep a column from the dtype (its missing
            # values, for an integer dtype) where there are some, else on the column's dtype:
            # a partition without such rows names the dtype, the whole frame names the rows
            group["general"] = {}
        samples = (list(group["general"]) + group["values"])[:SAMPLES]
        count = group["count"] + len(group["general"])
        violations.append(
            _violation(column, check, count, tuple(samples), tuple(group["rows"][:SAMPLES]))
        )
    errors = [e for s in summaries for e in s.errors if s.rows or not rows]
    if not groups and errors:  # pandera's non-lazy failure (an empty frame)
        violations.append(Violation(DATAFRAME, errors[0], 1, ()))
    failed = bool(violations)

    numeric = [c for c in columns if all(c in s.numeric for s in summaries)]
    infinite: dict[str, tuple[int, list[str], list[int]]] = {}
    for column in numeric:
        count, values, at = 0, list[str](), list[int]()
        for summary, offset in zip(summaries, offsets, strict=True):
            if column in summary.infinite:
                n, v, r = summary.infinite[column]
                count, values, at = count + n, values + v, at + [offset + i for i in r]
        if count:
            infinite[column] = (count, values[:SAMPLES], at[:SAMPLES])
    counts = None
    if summaries and all(s.classes is not None for s in summaries):
        seen: dict[Any, int] = {}
        for summary in summaries:
            for label, n in summary.classes or []:
                seen[label] = seen.get(label, 0) + n
        counts = pd.Series(list(seen.values()), index=pd.Index(list(seen)), dtype="int64")
        counts = counts.sort_values(ascending=False)  # as value_counts orders them
    violations += _training_violations(rows, columns, infinite, counts, settings)

    parts = [
        (s.raw if failed or s.validated is None else s.validated, offset)
        for s, offset in zip(summaries, offsets, strict=True)
    ]
    if parts:
        violations += _contract_violations(_merged_contract(parts), settings)
    return Report(
        schema_version=1,
        data=name,
        rows=rows,
        columns=len(columns),
        violations=tuple(violations),
    )


def _merged_contract(parts: Sequence[tuple[checks.Contract, int]]) -> checks.Contract:
    first = parts[0][0]
    labels = pd.unique(pd.Series([v for c, _ in parts for v in c.labels], dtype=object))
    features: dict[str, list[Any]] = {}
    for contract, _ in parts:
        for column, usable, dtype, values in contract.features:
            entry = features.setdefault(column, [True, "", []])
            if not usable and entry[0]:
                entry[0], entry[1] = False, dtype
            entry[2] = list(dict.fromkeys(entry[2] + values))[:2]
    return checks.Contract(
        single=first.single,
        labels=list(labels),
        missing=sum(c.missing for c, _ in parts),
        missing_rows=[offset + r for c, offset in parts for r in c.missing_rows][:SAMPLES],
        features=[(c, usable, dtype, values) for c, (usable, dtype, values) in features.items()],
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate validate: pull the data named by data.dvc and validate it against the schema."""
    parser = cli.stage_parser("validate", main.__doc__)
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        if settings.train.engine == "dask":  # on the workers: the runner pulls nothing
            publish(settings, *on_cluster(settings))
        else:
            check(settings)
        return 0

    return cli.run(action)
