"""The split manifest of a dask-trained model: the rule and an order-free holdout digest
(mlgate.pipeline.holdout). Oracles: `split.split_frame` for the rows, hashlib over the sorted
row hashes for the digest."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from mlgate.errors import DataError
from mlgate.pipeline import holdout
from mlgate.pipeline.split import split_frame
from mlgate.settings import load_settings


def _frame(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.integers(0, 5, size=rows),
            "c": pd.Categorical(rng.choice(["x", "y", "z"], size=rows)),
            "y": rng.integers(0, 2, size=rows),
        }
    )


def _oracle(frame: pd.DataFrame) -> str:
    hashes = np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy()).astype("<u8")
    names = json.dumps([str(c) for c in frame.columns]).encode()
    return hashlib.sha256(names + b"\n" + hashes.tobytes()).hexdigest()


def test_the_digest_is_the_sorted_hashes_whatever_the_order_and_partitioning():
    frame = _frame()
    whole = holdout.digest(frame.columns, holdout.row_hashes(frame))
    assert whole == _oracle(frame)
    shuffled = frame.sample(frac=1.0, random_state=1)
    parts = [shuffled.iloc[:100], shuffled.iloc[100:101], shuffled.iloc[101:]]
    pieces = np.concatenate([holdout.row_hashes(p) for p in parts])
    assert holdout.digest(frame.columns, pieces) == whole
    assert holdout.digest(["a", "b", "c", "label"], pieces) != whole  # the names count
    changed = frame.copy()
    changed.loc[7, "a"] += 1e-9
    assert holdout.digest(frame.columns, holdout.row_hashes(changed)) != whole


def _manifest(frame: pd.DataFrame, settings) -> tuple[dict, pd.DataFrame]:
    rule = holdout.Rule.of(settings, {c: str(t) for c, t in frame.dtypes.items()})
    expected = split_frame(
        frame, target="y", seed=7, validation_fraction=0.2, holdout_fraction=0.3
    ).holdout
    manifest = holdout.manifest(
        rule, data_md5="m", data_path="d", rows=len(expected), holdout_digest=_oracle(expected)
    )
    return json.loads(json.dumps(manifest)), expected  # as logged: JSON


def test_the_rule_rebuilds_the_local_engines_holdout_and_checks_its_digest():
    settings = load_settings(
        env={}, overrides=["data.target=y", "split.seed=7", "split.holdout_fraction=0.3"]
    )
    frame = _frame()
    manifest, expected = _manifest(frame, settings)
    assert "holdout" not in manifest and manifest["digest_kind"] == holdout.DIGEST_KIND
    assert holdout.is_rule(manifest) and not holdout.is_rule({"holdout": [1, 2]})
    # read back as the file holds it (the category and int columns as read), typed by the rule
    raw = frame.astype({"c": "object", "b": "int64"})
    rebuilt = holdout.from_rule(raw, manifest, digest_tag=manifest["holdout_digest"])
    pd.testing.assert_frame_equal(rebuilt, expected)

    other = frame.drop(index=expected.index[:1])
    with pytest.raises(DataError, match="does not match the digest logged at training") as caught:
        holdout.from_rule(other, manifest, digest_tag=manifest["holdout_digest"])
    assert caught.value.exit_code == 3 and "mlgate.data.md5" in str(caught.value.fix)
    with pytest.raises(DataError, match="does not match"):  # the tag and the manifest disagree
        holdout.from_rule(frame, manifest, digest_tag="0" * 64)


def test_a_rule_this_version_cannot_apply_is_refused():
    settings = load_settings(env={}, overrides=["data.target=y"])
    manifest, _ = _manifest(_frame(), settings)
    manifest["rule"]["hash_version"] = 2
    with pytest.raises(DataError, match="hash version 2"):
        holdout.Rule.from_manifest(manifest)
    with pytest.raises(DataError, match="no usable rule"):
        holdout.Rule.from_manifest({"digest_kind": holdout.DIGEST_KIND})


def test_the_key_list_digest_from_row_hashes_is_frame_digest():
    """`split.rows_digest` (the workers' row hashes, digested on the runner in the key list's
    order) is `split.frame_digest` of the holdout `holdout_from_keys` rebuilds; the oracle:
    hashlib over pandas' hashes of the rebuilt frame."""
    from mlgate.pipeline.split import frame_digest, holdout_from_keys, rows_digest

    frame = _frame()
    keys = [int(k) for k in np.random.default_rng(4).permutation(len(frame))[:90]]
    expected = hashlib.sha256(
        ",".join(frame.columns).encode()
        + pd.util.hash_pandas_object(frame.loc[keys], index=True).to_numpy().tobytes()
    ).hexdigest()
    rebuilt = holdout_from_keys(frame, keys, id_column=None, digest=expected)
    assert frame_digest(rebuilt) == expected
    hashed = [pd.util.hash_pandas_object(frame.loc[[k]], index=True).to_numpy()[0] for k in keys]
    assert rows_digest(frame.columns, np.array(hashed, dtype=np.uint64)) == expected
