"""The shards of a data version, read by Dask workers straight from the DVC remote (issue 21).

With `train.engine: dask` the runner does not `dvc pull`. `locate` reads only the version's
manifest from the DVC remote, through DVC's own remote object (`repo.cloud.get_remote_odb`, the
filesystem `dvc push` writes with): for a directory tracked by DVC (`md5: ....dir` in data.dvc)
the `.dir` object, a JSON list of `{md5, relpath}`, checked against its own md5; for a file, the
file's object itself. Each shard is then an object URL in the remote's DVC 3 layout
(`s3://bucket/prefix/files/md5/ab/cdef...`, or a path on storage the workers share).

`frame` builds a dask DataFrame with one partition per shard. The worker that reads a shard
checks its md5 against the manifest (`read_shard`) and fails with a `DataError` naming the shard:
nothing read back from a shared store is trusted.

Credentials never travel in the task graph: the workers' own environment gives them
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, an instance role, ...), as it does for s3fs anywhere.
Only the endpoint (dvc.endpoint_url, or the remote's `endpointurl`) is handed to the workers.

This module imports numpy and pandas only (DVC and dask inside the functions that need them):
the workers import it to read their shards.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from mlgate.errors import DataError
from mlgate.pipeline.data import SHARD_SUFFIXES

KINDS = SHARD_SUFFIXES  # a shard's format by its suffix
LISTED = 20  # files named in an error about a data.path that names no shard


@dataclass(frozen=True)
class Shard:
    relpath: str  # inside the tracked directory
    md5: str  # from the manifest: the object's name and its content's digest
    url: str  # where the workers read it


@dataclass(frozen=True)
class Shards:
    """The shards of the data version named by data.dvc, as the workers will read them."""

    dvc_md5: str
    remote: str
    remote_url: str
    kind: str  # csv | parquet
    shards: tuple[Shard, ...]
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.shards]

    @property
    def digest(self) -> str:
        """sha256 of the shards' `relpath md5` lines, in manifest order: names the set of
        objects read as data.dvc's md5 names the version."""
        lines = "".join(f"{s.relpath} {s.md5}\n" for s in self.shards)
        return hashlib.sha256(lines.encode()).hexdigest()

    def lineage(self) -> dict[str, object]:
        """The tags added to the training run's lineage (the full list is an artifact)."""
        return {
            "mlgate.data.objects": len(self.shards),
            "mlgate.data.objects_sha256": self.digest,
        }

    def manifest(self) -> dict[str, object]:
        """What `data/objects.json` holds in the training run: every object read."""
        return {
            "schema_version": 1,
            "data_md5": self.dvc_md5,
            "remote": self.remote,
            "remote_url": self.remote_url,
            "kind": self.kind,
            "objects_sha256": self.digest,
            "objects": [{"relpath": s.relpath, "md5": s.md5, "url": s.url} for s in self.shards],
        }


def locate(settings: Any, md5: str | None = None) -> Shards:  # settings: mlgate.settings.Settings
    """The shards of the data version named by data.dvc under data.path, read from the DVC
    remote's manifest (no pull). Raises DataError for an unreachable remote, a manifest that is
    missing or unreadable, or a data.path that names no shard. `md5`: another version of the
    same output (a model's `mlgate.data.md5`: evaluation reads the version the model was
    trained on, whatever data.dvc names now)."""
    from dataclasses import replace

    from mlgate.pipeline import data

    dvc_file = settings.path(settings.data.dvc_file)
    out = data.read_dvc_file(dvc_file)
    if md5 is not None and md5 != out.md5:
        out = replace(out, md5=md5, is_dir=md5.endswith(".dir"))
    prefix = _prefix(settings, dvc_file, out.path)
    with data.remote_of(settings, dvc_file) as (repo, remote, remote_url):
        odb = _odb(repo, remote, remote_url)
        fs = odb.fs
        if out.is_dir:
            raw = _read_object(fs, odb.oid_to_path(out.md5), out.md5, remote, remote_url)
            entries = _entries(raw, out.md5, remote)
        else:
            entries = [(PurePosixPath(out.path).name, out.md5)]
        shards = [
            Shard(relpath, md5, str(fs.unstrip_protocol(odb.oid_to_path(md5))))
            for relpath, md5 in entries
            if _under(relpath, prefix) and PurePosixPath(relpath).suffix in KINDS
        ]
        endpoint = repo.config["remote"][remote].get("endpointurl")
    if not shards:
        names = ", ".join(r for r, _ in entries[:LISTED]) or "none"
        raise DataError(
            f"data.path {settings.data.path} names no .csv or .parquet shard of the data "
            f"version {out.md5}; its files: {names}",
            fix=f"set data.path to the tracked directory '{out.path}' (or a file or "
            "sub-directory of it) holding the shards",
        )
    kinds = {KINDS[PurePosixPath(s.relpath).suffix] for s in shards}
    if len(kinds) != 1:
        raise DataError(
            f"the data version {out.md5} under {settings.data.path} mixes CSV and Parquet shards",
            fix="keep the data version's shards in one format (or point data.path at a "
            "sub-directory holding one kind)",
        )
    options = {"endpoint_url": endpoint} if endpoint and "://" in remote_url else {}
    return Shards(
        dvc_md5=out.md5,
        remote=remote,
        remote_url=remote_url,
        kind=kinds.pop(),
        shards=tuple(shards),
        storage_options=options,
    )


def _prefix(settings: Any, dvc_file: Path, tracked: str) -> str:
    """data.path relative to the tracked output ('' for the output itself)."""
    root = (dvc_file.parent / tracked).resolve()
    wanted = settings.path(settings.data.path).resolve()
    if wanted == root:
        return ""
    if root not in wanted.parents:
        raise DataError(
            f"data.path {settings.data.path} is not inside '{tracked}', which "
            f"{dvc_file.name} tracks",
            fix=f"set data.path to '{tracked}' or a file or directory under it",
        )
    return str(PurePosixPath(*wanted.relative_to(root).parts))


def _under(relpath: str, prefix: str) -> bool:
    return not prefix or relpath == prefix or relpath.startswith(prefix + "/")


def _odb(repo: Any, remote: str, remote_url: str) -> Any:
    from dvc.exceptions import DvcException

    try:
        return repo.cloud.get_remote_odb(remote, "train")
    except DvcException as exc:
        raise DataError(
            f"cannot open DVC remote '{remote}' ({remote_url}): {exc}",
            fix="check the remote's configuration (`dvc remote list`) and dvc.endpoint_url",
        ) from exc


def _read_object(fs: Any, path: str, md5: str, remote: str, remote_url: str) -> bytes:
    try:
        raw: bytes = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise DataError(
            f"the manifest of data version {md5} is missing from DVC remote '{remote}' "
            f"({remote_url})",
            fix=f"push it from the commit that changed data.dvc: `dvc push` (to remote "
            f"'{remote}'), then re-run",
        ) from exc
    except Exception as exc:  # s3fs / botocore raise many kinds for a bad endpoint or key
        raise DataError(
            f"cannot read the manifest of data version {md5} from DVC remote '{remote}' "
            f"({remote_url}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fix="check that the remote is reachable and its credentials are set "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3, dvc.endpoint_url for "
            "S3-compatible stores)",
        ) from exc
    if _md5(raw) != md5.removesuffix(".dir"):
        raise DataError(
            f"the manifest of data version {md5} read from DVC remote '{remote}' has md5 "
            f"{_md5(raw)}: the remote's copy is damaged",
            fix="push the version again from a clean checkout (`dvc push --force`)",
        )
    return raw


def _entries(raw: bytes, md5: str, remote: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(raw)
        entries = [(str(e["relpath"]), str(e["md5"])) for e in doc]
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(
            f"the manifest of data version {md5} in DVC remote '{remote}' is not a list of "
            f"{{relpath, md5}}: {exc}",
            fix="push the version again with DVC 3 (`dvc add` of the directory, `dvc push`)",
        ) from exc
    for relpath, digest in entries:
        if len(digest) != 32 or PurePosixPath(relpath).is_absolute() or ".." in relpath:
            raise DataError(
                f"the manifest of data version {md5} lists a bad entry: {relpath!r} {digest!r}",
                fix="push the version again with DVC 3 (`dvc add` of the directory, `dvc push`)",
            )
    return sorted(entries)


def _md5(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def release_memory() -> None:
    """Hand the memory of the partitions a worker has finished with back to the system:
    pyarrow's pool (mimalloc or jemalloc keep freed pages) and glibc's free lists
    (`malloc_trim`). Without it a worker's process memory stays at its high-water mark after
    each partition: with 600 MB workers it stayed at 450-470 MiB after the validation of a
    2 GB version (263 MiB once released), above Dask's pause threshold (80 % of the limit)
    with nothing the worker could spill, so both workers paused for good and the stage hung."""
    import ctypes

    try:
        import pyarrow  # type: ignore[import-untyped]

        pyarrow.default_memory_pool().release_unused()
    except ImportError:  # pragma: no cover - pandas reads Parquet with pyarrow here
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator keeps its own policy
        pass


def released(part: Any, function: Any, kwargs: Mapping[str, Any]) -> Any:
    """`function(part, **kwargs)` on a worker, then the memory it freed handed back
    (`release_memory`): what a per-partition task of the version runs."""
    try:
        return function(part, **kwargs)
    finally:
        del part
        release_memory()


def fetch(shard: Shard, storage_options: Mapping[str, Any]) -> bytes:
    """`shard`'s bytes as the DVC remote holds them (not checked: the reader checks the md5);
    a missing object or an unreachable remote is a DataError saying which."""
    import fsspec  # type: ignore[import-untyped]

    try:
        with fsspec.open(shard.url, "rb", **dict(storage_options)) as handle:
            raw: bytes = handle.read()
    except FileNotFoundError as exc:
        raise DataError(
            f"shard {shard.relpath} (md5 {shard.md5}) is missing from the DVC remote: {shard.url}",
            fix="push the data version from the commit that changed data.dvc (`dvc push`), "
            "then re-run",
        ) from exc
    except Exception as exc:  # s3fs / botocore: a bad endpoint, refused credentials
        raise DataError(
            f"cannot read shard {shard.relpath} from {shard.url}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            fix="the workers must reach the DVC remote: check its endpoint (dvc.endpoint_url) "
            "and the workers' credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
        ) from exc
    return raw


def read_shard(shard: Shard, kind: str, storage_options: Mapping[str, Any]) -> pd.DataFrame:
    """One shard as a pandas frame, on the worker that reads it: its bytes are checked against
    the manifest's md5 before they are parsed (the memory of the partitions read before it
    handed back first: `release_memory`)."""
    release_memory()
    raw = fetch(shard, storage_options)
    found = _md5(raw)
    if found != shard.md5:
        raise DataError(
            f"shard {shard.relpath} read from {shard.url} has md5 {found}, the data version's "
            f"manifest says {shard.md5}: the remote's copy is damaged",
            fix="push the version again from a clean checkout (`dvc push --force`)",
        )
    try:
        if kind == "parquet":
            return pd.read_parquet(io.BytesIO(raw))
        return pd.read_csv(io.BytesIO(raw), encoding="utf-8")
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(
            f"cannot parse shard {shard.relpath} ({kind}): {exc}",
            fix=f"write every shard of the version as {kind} with the same columns",
        ) from exc
    finally:
        del raw
        release_memory()  # the bytes and pyarrow's table, now a pandas frame


def frame(client: Any, shards: Shards) -> Any:  # -> dask DataFrame
    """A dask DataFrame with one partition per shard, read on the workers. Its columns and
    dtypes come from the first shard, read (and checked) on a worker: the runner reads none."""
    import dask.dataframe as dd

    first = client.submit(_empty, shards.shards[0], shards.kind, dict(shards.storage_options))
    meta = first.result()
    return dd.from_map(  # type: ignore[no-untyped-call]
        read_shard,
        list(shards.shards),
        kind=shards.kind,
        storage_options=dict(shards.storage_options),
        meta=meta,
        divisions=None,
        label="mlgate-shard",
        enforce_metadata=False,
    )


def _empty(shard: Shard, kind: str, storage_options: Mapping[str, Any]) -> pd.DataFrame:
    return read_shard(shard, kind, storage_options).iloc[:0]
