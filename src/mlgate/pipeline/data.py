"""Stage 1a: get the data version named by data.dvc, through DVC's own Python API.

`pull` reads data.dvc, pulls from the configured remote (local directory by default, S3 by
configuration) and returns the `DataVersion` that lineage records: the data.dvc md5, the data
file's own md5 and its object URL in the remote. Every DVC failure becomes a `DataError` that
says which of the usual causes it is and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlgate.errors import ConfigError, DataError, did_you_mean
from mlgate.settings import Settings, short


@dataclass(frozen=True)
class DvcOutput:
    """The single `outs:` entry of a .dvc file."""

    md5: str
    path: str
    is_dir: bool
    hash_name: str | None = None  # "md5" (DVC 3); absent in DVC 2's files (md5-dos2unix)


@dataclass(frozen=True)
class DataVersion:
    dvc_file: str  # relative to the project
    dvc_md5: str  # the md5 written in data.dvc ("….dir" for a tracked directory)
    path: str  # the data file, relative to the project
    file_md5: str  # md5 of the data file itself: its object name in the DVC remote
    remote: str
    remote_url: str

    @property
    def object_url(self) -> str:
        """Where the data file's object lives in the remote (DVC 3 layout)."""
        base = self.remote_url.rstrip("/")
        return f"{base}/files/md5/{self.file_md5[:2]}/{self.file_md5[2:]}"


def read_dvc_file(path: Path) -> DvcOutput:
    """Parse a .dvc file, failing with the fix for each way it can be wrong."""
    fix = "restore it with `git checkout -- {0}`, or recreate it with `dvc add {1}`"
    if not path.is_file():
        raise DataError(
            f"{path.name} not found at {path}",
            fix=fix.format(path.name, "<data dir>") + "; or set data.dvc_file",
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path.name} is not valid YAML: {exc}", fix=fix.format(path.name, "<data dir>")
        ) from exc
    outs = doc.get("outs") if isinstance(doc, dict) else None
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise DataError(
            f"{path.name} must have exactly one entry under 'outs:'",
            fix=fix.format(path.name, "<data dir>"),
        )
    out = outs[0]
    md5, out_path = out.get("md5"), out.get("path")
    if not isinstance(out_path, str) or not out_path:
        raise DataError(
            f"{path.name} has no 'path' under 'outs:'", fix=fix.format(path.name, "<data dir>")
        )
    if not isinstance(md5, str) or len(md5.removesuffix(".dir")) != 32:
        raise DataError(
            f"{path.name} has no valid md5 for '{out_path}'", fix=fix.format(path.name, out_path)
        )
    hash_name = out.get("hash")
    return DvcOutput(
        md5=md5,
        path=out_path,
        is_dir=md5.endswith(".dir"),
        hash_name=hash_name if isinstance(hash_name, str) else None,
    )


def workspace_digests(project_dir: Path, out_root: Path, out: DvcOutput) -> dict[Path, str] | None:
    """The md5 of every file of the tracked output when the workspace holds exactly the data
    version the .dvc file names, proven by digest; else None (and DVC decides). Computed as
    DVC 3 computes it: a file's md5 is the md5 of its bytes; a directory's is the md5 of the
    JSON list of its files (`[{"md5": ..., "relpath": ...}]`, sorted by path, keys sorted)
    plus ".dir" (dvc_data's Tree.digest). DVC 2's md5-dos2unix files and projects with
    .dvcignore rules are left to DVC; so is anything that does not match: this only ever
    skips work DVC would have found nothing to do for."""
    if out.hash_name != "md5" or _has_dvcignore_rules(project_dir, out_root):
        return None
    if not out.is_dir:
        if not out_root.is_file():
            return None
        digest = file_md5(out_root)
        return {out_root: digest} if digest == out.md5 else None
    if not out_root.is_dir():
        return None
    digests: dict[Path, str] = {}
    for path in out_root.rglob("*"):
        if path.is_symlink():
            return None  # a link (DVC's symlink cache type): DVC's own rules apply
        if path.is_dir():
            continue
        if not path.is_file():
            return None
        digests[path] = file_md5(path)
    listing = sorted(
        (
            {"md5": digest, "relpath": PurePosixPath(path.relative_to(out_root)).as_posix()}
            for path, digest in digests.items()
        ),
        key=lambda entry: entry["relpath"],
    )
    tree = hashlib.md5(json.dumps(listing, sort_keys=True).encode(), usedforsecurity=False)
    return digests if f"{tree.hexdigest()}.dir" == out.md5 else None


def _has_dvcignore_rules(project_dir: Path, out_root: Path) -> bool:
    """A .dvcignore with a rule at the project's root or inside the tracked output."""
    places = [project_dir / ".dvcignore"]
    if out_root.is_dir():
        places += list(out_root.rglob(".dvcignore"))
    for place in places:
        if place.is_file():
            text = place.read_text(encoding="utf-8", errors="replace")
            if any(
                line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()
            ):
                return True
    return False


# DVC's user and system configuration (platformdirs' places on Linux and macOS). When one
# exists it may define or override remotes: the remote is then left to DVC itself.
DVC_OUTER_CONFIGS = (
    Path.home() / ".config" / "dvc" / "config",
    Path.home() / "Library" / "Application Support" / "dvc" / "config",
    Path("/etc/xdg/dvc/config"),
    Path("/Library/Application Support/dvc/config"),
)


def _configured_remote_name_and_url(settings: Settings, dvc_dir: Path) -> tuple[str, str] | None:
    """The name and URL of the DVC remote configured for the repository at `dvc_dir` (its
    .dvc/config, then .dvc/config.local; dvc.remote, else core.remote), read as DVC reads it
    (configobj; a relative local URL is relative to the .dvc folder), without importing DVC
    (`dvc.config` alone imports its filesystems, about 3 s). None when DVC's answer could
    differ (a user or system configuration exists, or the remote is not defined here): the
    caller then asks DVC."""
    import configobj  # type: ignore[import-untyped]  # DVC's own reader of its config

    if any(place.is_file() for place in DVC_OUTER_CONFIGS):
        return None
    merged: dict[str, dict[str, str]] = {}
    for name in ("config", "config.local"):
        path = dvc_dir / ".dvc" / name
        if not path.is_file():
            continue
        try:
            parsed = configobj.ConfigObj(str(path), encoding="utf-8", interpolation=False)
        except configobj.ConfigObjError:
            return None  # DVC reports it
        for section, values in parsed.items():
            if isinstance(values, dict):
                merged.setdefault(section, {}).update({k: str(v) for k, v in values.items()})
    remote = settings.dvc.remote or merged.get("core", {}).get("remote")
    url = merged.get(f'remote "{remote}"', {}).get("url") if remote else None
    if not remote or not url:
        return None
    if not re.match(r"\w+://", url) and not Path(url).is_absolute():
        url = os.path.abspath(os.path.join(dvc_dir / ".dvc", os.path.expanduser(url)))
    return remote, _portable(url, settings.project_dir)


def _check_remote(remote: str | None, remotes: Any) -> None:
    if not remote:
        raise DataError(
            "no DVC remote is configured",
            fix="add one with `dvc remote add -d NAME URL`, or set dvc.remote",
        )
    if remote not in remotes:
        raise DataError(
            f"DVC remote '{remote}' is not configured",
            fix=f"use one of: {', '.join(remotes) or '(none)'}; or `dvc remote add`",
        )


def pull(settings: Settings) -> DataVersion:
    """Pull the data that data.dvc names and describe the version that was pulled."""
    dvc_file = settings.path(settings.data.dvc_file)
    out = read_dvc_file(dvc_file)
    data_path = settings.path(settings.data.path)
    out_root = (dvc_file.parent / out.path).resolve()
    if data_path.resolve() != out_root and out_root not in data_path.resolve().parents:
        raise DataError(
            f"data.path {settings.data.path} is not inside '{out.path}', which "
            f"{dvc_file.name} tracks",
            fix=f"set data.path to a file under {out.path}/ or point data.dvc_file at its .dvc file",
        )

    # The workspace already holds the version data.dvc names (checked by digest): nothing for
    # DVC to pull or check out, and DVC's repository (seconds of imports) is not opened.
    present = workspace_digests(settings.project_dir, out_root, out)
    configured = (
        _configured_remote_name_and_url(settings, dvc_file.parent) if present is not None else None
    )
    if present is not None and configured is not None and data_path.is_file():
        remote, remote_url = configured
        return DataVersion(
            dvc_file=str(PurePosixPath(dvc_file.relative_to(settings.project_dir))),
            dvc_md5=out.md5,
            path=str(PurePosixPath(data_path.relative_to(settings.project_dir))),
            file_md5=present.get(data_path.resolve()) or file_md5(data_path),
            remote=remote,
            remote_url=remote_url,
        )

    from dvc.exceptions import CheckoutError, DvcException

    with remote_of(settings, dvc_file) as (repo, remote, remote_url), _dvc_messages() as messages:
        try:
            if settings.dvc.pull:
                repo.pull(targets=[str(dvc_file)], remote=remote)
            elif repo.status(targets=[str(dvc_file)]):
                raise DataError(
                    f"the workspace data differs from {dvc_file.name} and dvc.pull is off",
                    fix=f"run `dvc checkout {dvc_file.name}` or turn dvc.pull back on",
                )
        except CheckoutError as exc:
            raise DataError(
                f"the data version {out.md5} is missing from DVC remote '{remote}' "
                f"({remote_url}){_details(messages)}",
                fix="push it from the commit that changed data.dvc: `dvc push` "
                f"(to remote '{remote}'), then re-run",
            ) from exc
        except DvcException as exc:
            raise DataError(
                f"could not pull from DVC remote '{remote}' ({remote_url}): "
                f"{exc}{_details(messages)}",
                fix="check that the remote is reachable and its credentials are set "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3, dvc.endpoint_url for "
                "S3-compatible stores)",
            ) from exc

    # A sharded version (docs/dask.md): data.path is the tracked directory itself, whose
    # object in the remote is the manifest data.dvc names.
    sharded = out.is_dir and data_path.resolve() == out_root and data_path.is_dir()
    if not data_path.is_file() and not sharded:
        raise DataError(
            f"{settings.data.path} is not in the pulled data '{out.path}'"
            f"{files_present(out_root, data_path)}",
            fix=f"set data.path (default data/data.csv) to one of the files under {out.path}/, "
            f"or to {out.path} itself for a directory of shards",
        )
    return DataVersion(
        dvc_file=str(PurePosixPath(dvc_file.relative_to(settings.project_dir))),
        dvc_md5=out.md5,
        path=str(PurePosixPath(data_path.relative_to(settings.project_dir))),
        file_md5=out.md5 if sharded else file_md5(data_path),
        remote=remote,
        remote_url=remote_url,
    )


@contextmanager
def remote_of(settings: Settings, dvc_file: Path) -> Iterator[tuple[Any, str, str]]:
    """The DVC repository holding `dvc_file` (opened with dvc.endpoint_url applied), the name
    of the remote to use (dvc.remote, else the default) and its URL as lineage records it."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    config: dict[str, Any] = {}
    try:
        # Jobs sharing a checkout (six evaluations at once) take turns on DVC's repository
        # lock, as `dvc --wait-for-lock` does, instead of failing after 3 s. The lock is an
        # fcntl lock: a killed holder frees it; the job's timeout bounds a stuck one.
        repo = Repo(str(dvc_file.parent), _wait_for_lock=True)
    except NotDvcRepoError as exc:
        raise DataError(
            f"{dvc_file.parent} is not a DVC repository", fix="run `dvc init` and commit .dvc/"
        ) from exc
    remote = settings.dvc.remote or repo.config["core"].get("remote")
    _check_remote(remote, repo.config["remote"])
    assert remote is not None
    if settings.dvc.endpoint_url:
        config = {"remote": {remote: {"endpointurl": settings.dvc.endpoint_url}}}
        repo.close()
        repo = Repo(str(dvc_file.parent), config=config, _wait_for_lock=True)
    remote_url = _portable(str(repo.config["remote"][remote]["url"]), settings.project_dir)

    with repo:
        yield repo, remote, remote_url


def _portable(url: str, project_dir: Path) -> str:
    """A local remote inside the project is recorded relative to it, not as a machine path."""
    if "://" in url:
        return url
    try:
        return str(PurePosixPath(Path(url).resolve().relative_to(project_dir.resolve())))
    except ValueError:
        return url


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_frame(path: Path, max_bytes: int | None = None) -> pd.DataFrame:
    """Read the data file (CSV, or Parquet by extension) with errors that name the fix. A file
    over `max_bytes` is refused before reading: a runner out of memory says nothing useful.
    A directory is a sharded version: its shards (one format), in name order, one frame."""
    if path.is_dir():
        return _load_shards(path, max_bytes)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise DataError(
                f"data file {path} is {size / 1e6:,.1f} MB, over data.max_bytes "
                f"({max_bytes / 1e6:,.1f} MB)",
                fix="raise data.max_bytes if the runner has the memory for it, or train on a "
                "sample of the data",
            )
        if path.suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path, encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(
            f"data file {path} does not exist{files_present(path.parent, path)}",
            fix="run `dvc pull` or correct data.path (default data/data.csv)",
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"data file {path} is empty", fix="push a data version with a header row and rows"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            fix="re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
        ) from exc
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataError(
            f"cannot parse data file {path}: {exc}",
            fix="write it as a CSV with one header row and a fixed number of columns",
        ) from exc


SHARD_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _load_shards(folder: Path, max_bytes: int | None) -> pd.DataFrame:
    shards = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in SHARD_SUFFIXES and not p.name.startswith(".")
    )
    kinds = {SHARD_SUFFIXES[p.suffix] for p in shards}
    if len(kinds) != 1:
        raise DataError(
            f"data directory {folder} must hold shards of one format (.csv or .parquet), "
            f"found {', '.join(sorted(kinds)) or 'none'}",
            fix="keep a data version's shards in one format, then `dvc add` and `dvc push` it",
        )
    size = sum(p.stat().st_size for p in shards)
    if max_bytes is not None and size > max_bytes:
        raise DataError(
            f"the shards in {folder} are {size / 1e6:,.1f} MB, over data.max_bytes "
            f"({max_bytes / 1e6:,.1f} MB)",
            fix="raise data.max_bytes if the runner has the memory for it",
        )
    frames = [load_frame(p) for p in shards]
    return pd.concat(frames, ignore_index=True)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f" - {record.exc_info[1]}"  # as DVC's own console formatter shows it
        self.messages.append(message)


@contextmanager
def _dvc_messages() -> Iterator[list[str]]:
    """Collect what DVC logs during a pull: its exceptions carry only a summary."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _details(messages: list[str]) -> str:
    lines = [line.strip() for message in messages for line in message.splitlines() if line.strip()]
    return (":\n    " + "\n    ".join(lines[:10])) if lines else ""


def check_id_column(frame: pd.DataFrame, id_column: str | None) -> None:
    """data.id_column, when set, must be a column of the data (it keys the split)."""
    if id_column is None or id_column in frame.columns:
        return
    columns = [str(c) for c in frame.columns]
    listed = ", ".join(short(c, 40) for c in columns[:20])
    if len(columns) > 20:
        listed += f", ... ({len(columns)} in all)"
    raise ConfigError(
        f"data.id_column {short(id_column)} is not a column of the data"
        f"{did_you_mean(str(id_column), columns)}; its columns: {listed}",
        fix="set data.id_column to the column that identifies a row, or remove it to key "
        "rows by their feature values",
    )


# ---- Bring your own data (issue 19): where the file is, and which class is positive ----

LISTED = 20


def files_present(folder: Path, wanted: Path) -> str:
    """'; files present in FOLDER: a.csv, b.parquet' (with a did-you-mean), for an error about
    a data file that is not there."""
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return f"; {folder} does not exist either"
    names = sorted(
        str(PurePosixPath(p.relative_to(folder)))
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not names:
        return f"; {folder} holds no files"
    listed = ", ".join(names[:LISTED])
    if len(names) > LISTED:
        listed += f", ... ({len(names)} in all)"
    return f"{did_you_mean(wanted.name, names)}; files present in {folder}: {listed}"


class LabelProblem(ValueError):
    """The target column cannot be read as two classes; `fix` says what to change."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


def _number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def same_label(value: Any, positive: str) -> bool:
    """Whether a value of the target is the class `positive` names (data.positive_class, text).
    Compared as text, as numbers (1 = 1.0) and, for YAML's booleans (an unquoted Yes in
    params.yaml reads as True), as YAML booleans (Yes, yes, true, on)."""
    if str(value) == positive:
        return True
    a, b = _number(value), _number(positive)
    if a is not None and b is not None:
        return a == b
    if positive in {"True", "False"} and isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return False
        return isinstance(parsed, bool) and str(parsed) == positive
    return False


def label_classes(labels: pd.Series, positive: str | None, target: str) -> tuple[Any, Any]:
    """The target's (negative, positive) values. Exactly two classes; the positive one is
    data.positive_class, else the target must hold 0 and 1 (or False and True)."""
    values = sorted(labels.dropna().unique().tolist(), key=str)
    shown = ", ".join(short(v, 40) for v in values[:5]) + (
        f", ... ({len(values)} in all)" if len(values) > 5 else ""
    )
    if len(values) != 2:
        raise LabelProblem(
            f"the target '{target}' holds {len(values)} classes ({shown or 'none'}); "
            "mlgate trains binary classifiers",
            fix="keep two classes in data.target (map the others to one of them), or point "
            "data.target at the two-class label column",
        )
    if positive is None:
        numbers = [_number(v) for v in values]
        if sorted(n for n in numbers if n is not None) == [0.0, 1.0] and None not in numbers:
            return (values[0], values[1]) if numbers[0] == 0.0 else (values[1], values[0])
        raise LabelProblem(
            f"the target '{target}' holds {shown}, not 0 and 1, and data.positive_class is not set",
            fix=f"name the class to predict in params.yaml: data: positive_class: "
            f'"{values[1]}" (or "{values[0]}")',
        )
    matches = [v for v in values if same_label(v, positive)]
    if len(matches) != 1:
        same = [str(v) for v in values if str(v).casefold() == positive.casefold()]
        hint = (
            f' (did you mean "{same[0]}"?)'
            if same
            else did_you_mean(positive, [str(v) for v in values])
        )
        raise LabelProblem(
            f"data.positive_class {positive!r} is not one of the classes of '{target}' "
            f"({shown}){hint}",
            fix=f'set data.positive_class to "{values[0]}" or "{values[1]}", as written in the '
            "data",
        )
    (negative,) = [v for v in values if v is not matches[0] and v != matches[0]]
    return negative, matches[0]


def part_labels(labels: pd.Series, positive: str | None, target: str) -> np.ndarray:
    """`binary_labels` of a part of a version (a partition, or one part of the split in it),
    which may hold one of the two classes or no row at all: the version as a whole was checked
    to hold two (validation, the survey), so a lone class is the positive one when it is
    data.positive_class (else when it is 1 or True) and the negative one otherwise."""
    values = labels.dropna().unique().tolist()
    if len(values) >= 2:
        return binary_labels(labels, positive, target)  # two classes, or refused as before
    _refuse_missing(labels, target)
    if positive is None:
        numbers = [_number(v) for v in values]
        if any(n not in (0.0, 1.0) for n in numbers):
            raise DataError(
                f"the target '{target}' holds {short(values[0], 40)}, not 0 and 1, and "
                "data.positive_class is not set",
                fix="name the class to predict in params.yaml: data: positive_class: ...",
            )
        hits = [v for v, n in zip(values, numbers, strict=True) if n == 1.0]
    else:
        hits = [v for v in values if same_label(v, positive)]
    codes: np.ndarray = labels.isin(hits).to_numpy(dtype=np.int64)
    return codes


def binary_labels(labels: pd.Series, positive: str | None, target: str) -> np.ndarray:
    """The target as 0/1 (int64): 1 for the positive class. Raises DataError when the target
    is not two classes without missing values (validate reports it first)."""
    try:
        _, pos = label_classes(labels, positive, target)
    except LabelProblem as exc:
        raise DataError(exc.message, fix=exc.fix) from exc
    _refuse_missing(labels, target)
    codes: np.ndarray = (labels == pos).to_numpy(dtype=np.int64)
    return codes


def _refuse_missing(labels: pd.Series, target: str) -> None:
    if labels.isna().any():
        raise DataError(
            f"the target '{target}' has {int(labels.isna().sum())} missing values",
            fix="drop the unlabelled rows or label them",
        )
