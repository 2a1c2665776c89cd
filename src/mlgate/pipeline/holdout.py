"""The holdout of a model trained with `train.engine: dask`, logged as its rule and a digest
(issue 21): the split manifest `split/holdout.json` then holds no key list, so it does not grow
with the data, and evaluation rebuilds the holdout from the rule and checks the digest.

The rule is the split's own (`frames.row_hash` seeded by `split.seed`, modulo `frames.BUCKETS`,
the holdout below `holdout_fraction`) applied to the data as training typed it: the manifest
records each column's dtype after the schema's coercion, and the rebuild applies the same ones.

The digest (`DIGEST_KIND`) does not depend on the partitioning nor on the rows' order: sha256
over the column names (JSON) and the holdout rows' 64-bit value hashes
(`pandas.util.hash_pandas_object(index=False)`, the label included), sorted. The workers hash
their holdout rows and send back 8 bytes a row; the runner sorts and digests.

A manifest without `digest_kind` is the local engine's: the holdout's key list, and
`split.frame_digest` over its rows and positions (`split.holdout_from_keys` rebuilds it).

This module imports numpy and pandas only (the workers import it to hash their rows).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlgate.errors import DataError
from mlgate.pipeline.frames import BUCKETS

DIGEST_KIND = "sha256-of-sorted-row-hashes"  # manifest["digest_kind"] of a rule manifest
HASH_VERSION = 1  # frames.row_hash as of this version: a changed hash must not match silently
METHOD = "seeded hash of the row key (id column, else feature values)"
FIX = "evaluate against the data version the model was trained on (mlgate.data.md5)"


@dataclass(frozen=True)
class Rule:
    """What puts a row in the holdout, as the manifest records it."""

    target: str
    seed: int
    validation_fraction: float
    holdout_fraction: float
    id_column: str | None
    dtypes: Mapping[str, str] = field(default_factory=dict)  # after the schema's coercion
    buckets: int = BUCKETS
    hash_version: int = HASH_VERSION

    @classmethod
    def of(cls, settings: Any, dtypes: Mapping[str, str]) -> Rule:
        return cls(
            target=settings.data.target,
            seed=settings.split.seed,
            validation_fraction=settings.split.validation_fraction,
            holdout_fraction=settings.split.holdout_fraction,
            id_column=settings.data.id_column,
            dtypes=dict(dtypes),
        )

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Rule:
        """The rule a manifest records; a rule this mlgate cannot apply is refused."""
        try:
            rule = cls(**manifest["rule"])
        except (KeyError, TypeError) as exc:
            raise DataError(
                f"the logged split manifest holds no usable rule: {exc}",
                fix="re-train the model with this mlgate version",
            ) from exc
        if rule.buckets != BUCKETS or rule.hash_version != HASH_VERSION:
            raise DataError(
                f"the holdout was split with hash version {rule.hash_version} over "
                f"{rule.buckets} buckets; this mlgate applies version {HASH_VERSION} over "
                f"{BUCKETS}",
                fix="evaluate with the mlgate version that trained the model, or re-train it",
            )
        return rule

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` (as read) with the dtypes training split it with."""
        wanted = {k: v for k, v in self.dtypes.items() if k in frame.columns}
        return frame.astype(wanted) if wanted else frame

    def parts(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's part (cluster.TRAIN / VALIDATION / HOLDOUT) of a typed frame."""
        from mlgate.pipeline.cluster import part_of

        series = part_of(
            frame,
            target=self.target,
            seed=self.seed,
            validation_fraction=self.validation_fraction,
            holdout_fraction=self.holdout_fraction,
            id_column=self.id_column,
        )
        parts: np.ndarray = series.to_numpy()
        return parts


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """Each row's 64-bit hash of its values (the label included; not its position)."""
    hashed: np.ndarray = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    return hashed


def digest(columns: Sequence[Any], hashes: np.ndarray) -> str:
    """DIGEST_KIND: sha256 over the column names and the sorted row hashes."""
    names = json.dumps([str(c) for c in columns]).encode()
    ordered = np.sort(np.asarray(hashes, dtype=np.uint64)).astype("<u8")
    return hashlib.sha256(names + b"\n" + ordered.tobytes()).hexdigest()


def manifest(
    rule: Rule, *, data_md5: str, data_path: str, rows: int, holdout_digest: str
) -> dict[str, Any]:
    """split/holdout.json of a model trained with train.engine: dask."""
    return {
        "schema_version": 2,
        "data_md5": data_md5,
        "data_path": data_path,
        "method": METHOD,
        "seed": rule.seed,
        "validation_fraction": rule.validation_fraction,
        "holdout_fraction": rule.holdout_fraction,
        "key": rule.id_column or "row values",
        "rule": asdict(rule),
        "holdout_rows": rows,
        "digest_kind": DIGEST_KIND,
        "holdout_digest": holdout_digest,
    }


def is_rule(manifest: Mapping[str, Any]) -> bool:
    return manifest.get("digest_kind") == DIGEST_KIND


def from_rule(frame: pd.DataFrame, manifest: Mapping[str, Any], *, digest_tag: str) -> pd.DataFrame:
    """The holdout rebuilt on the runner from a rule manifest (a dask-trained model evaluated
    by the local engine): the rule applied to the pulled frame, checked against the digest."""
    rule = Rule.from_manifest(manifest)
    typed = rule.typed(frame)
    holdout = typed[rule.parts(typed) == 2]  # cluster.HOLDOUT
    check(list(typed.columns), row_hashes(holdout), manifest, digest_tag)
    return holdout


def check(
    columns: Sequence[Any], hashes: np.ndarray, manifest: Mapping[str, Any], digest_tag: str
) -> None:
    """Refuse a rebuilt holdout whose digest is not the one logged at training (the manifest's
    and the version's tag must agree too)."""
    found = digest(columns, hashes)
    if manifest.get("holdout_digest") != digest_tag or found != digest_tag:
        raise DataError(
            f"the rebuilt holdout ({len(hashes)} rows, digest {found[:12]}) does not match the "
            f"digest logged at training ({str(digest_tag)[:12]}, "
            f"{manifest.get('holdout_rows')} rows)",
            fix=FIX,
        )
