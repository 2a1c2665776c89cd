"""The compiled trees (tl2cgen, the machine's C compiler, ctypes) score like the booster to 1e-6,
on rows at every split threshold and with missing values; a failed compile or parity check
writes nothing; a bundle's compiled library is checked like its booster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlgate.errors import ConfigError, ModelError
from mlgate.serving.bundle import LIBRARY, META_FILE, load_bundle, write_bundle
from mlgate.serving.trees import BoosterTrees, CompiledTrees, compile_trees, parity_rows


@pytest.fixture(scope="module")
def model() -> tuple[bytes, list[str]]:
    """An 85-feature model shaped like the benchmark's, fewer trees: depth 6, NaNs in training."""
    import xgboost as xgb

    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 85))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) + x[:, 1] ** 2 > 0.8).astype(int)
    names = [f"x{i}" for i in range(85)]
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 6, "nthread": 1},
        xgb.DMatrix(x, label=y, feature_names=names),
        num_boost_round=60,
    )
    return bytes(booster.save_raw("ubj")), names


@pytest.fixture(scope="module")
def built(model, tmp_path_factory) -> Path:
    """The model's bundle, its trees compiled once for the module (the compile record is the
    bundle's): the tests read it, or damage a copy of it."""
    raw, names = model
    out = tmp_path_factory.mktemp("compiled") / "b"
    meta = {"name": "m", "version": "1", "run_id": "r", "features": names, "threshold": 0.5}
    write_bundle(out, raw, **meta)
    return out


@pytest.fixture(scope="module")
def compiled(built) -> tuple[dict, CompiledTrees]:
    record = json.loads((built / META_FILE).read_text())["compiled"]
    return record, CompiledTrees(built / LIBRARY, 85, threads=2)


def test_compiled_trees_equal_the_booster_at_every_threshold_and_with_missing_values(
    model, compiled
) -> None:
    record, trees = compiled
    booster = BoosterTrees.from_bytes(model[0])
    rows = parity_rows(booster.booster, seed=1)
    assert len(rows) >= 4000 and np.isnan(rows).any()
    np.testing.assert_allclose(trees.predict(rows), booster.predict(rows), rtol=0, atol=1e-6)
    assert record["parity"]["rows"] >= 4000
    assert 0 <= record["parity"]["max_abs_diff"] <= record["parity"]["tolerance"] == 1e-6
    assert record["generator"] == "mlgate-tables/1" and "tl2cgen" not in record
    assert trees.json_numbers is not None  # serving/fastjson.py's routine, compiled alongside
    assert record["compiler"] and len(record["sha256"]) == 64


def test_a_large_request_is_split_across_threads_with_the_same_answer(model, compiled) -> None:
    _, trees = compiled
    rows = np.random.default_rng(2).normal(size=(5001, 85))
    rows[::9, 4] = np.nan
    single = np.concatenate([trees.predict(rows[i : i + 100]) for i in range(0, 5001, 100)])
    np.testing.assert_array_equal(trees.predict(rows), single)
    np.testing.assert_array_equal(trees.predict(np.asfortranarray(rows)), single)
    with pytest.raises(ValueError, match="rows of 85 values"):
        trees.predict(rows[:, :3])


def test_a_failed_parity_check_writes_nothing(tmp_path: Path) -> None:
    # any model fails a negative tolerance: a small one compiles in a fraction of the time
    with pytest.raises(ModelError, match="disagree with the booster") as caught:
        compile_trees(_trained("binary:logistic", rounds=3), tmp_path / "out", tolerance=-1.0)
    assert "nothing was written" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_no_compiler_is_a_config_error_that_says_what_to_install(model, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "kept").write_text("the bundle that was there")
    with pytest.raises(ConfigError, match="no C compiler 'no-such-cc'") as caught:
        write_bundle(bundle, model[0], compiler="no-such-cc", name="m", features=model[1])
    assert "apt-get install gcc" in caught.value.fix
    assert (bundle / "kept").read_text() == "the bundle that was there"


def test_a_bundle_serves_its_compiled_trees_and_refuses_a_changed_library(
    model, built, tmp_path: Path
) -> None:
    raw, names = model
    meta = {"name": "m", "version": "1", "run_id": "r", "features": names, "threshold": 0.5}
    shutil.copytree(built, tmp_path / "b")  # the module's bundle, compiled once; a copy to damage
    bundle = load_bundle(tmp_path / "b")
    assert bundle.trees.engine == "compiled" and bundle.describe()["engine"] == "compiled"
    # Replaced, not rewritten in place: this process has the library mapped, and a file
    # truncated under a mapping ends the process with SIGBUS when it unloads.
    (tmp_path / "b" / LIBRARY).unlink()
    (tmp_path / "b" / LIBRARY).write_bytes(b"\x7fELF not really")
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_bundle(tmp_path / "b")

    write_bundle(tmp_path / "old", raw, compile=False, **meta)  # as bundles were before
    assert not (tmp_path / "old" / LIBRARY).exists()
    assert "compiled" not in (tmp_path / "old" / META_FILE).read_text()
    assert load_bundle(tmp_path / "old").trees.engine == "xgboost"


def _trained(objective: str, rounds: int = 30) -> bytes:
    import xgboost as xgb

    rng = np.random.default_rng(11)
    x = rng.normal(size=(2000, 12))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 3]) * 2 + rng.normal(size=2000)
    if objective != "reg:squarederror":
        y = (y > 0).astype(float)
    params = {"objective": objective, "max_depth": 5, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=rounds)
    return bytes(booster.save_raw("ubj"))


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:logistic", "reg:squarederror"])
def test_the_node_tables_score_like_the_booster_for_each_objective_they_cover(
    objective, tmp_path: Path
) -> None:
    raw = _trained(objective)
    record = compile_trees(raw, tmp_path)
    assert record["generator"] == "mlgate-tables/1"
    trees = CompiledTrees(tmp_path / LIBRARY, 12, threads=2)
    booster = BoosterTrees.from_bytes(raw)
    rows = np.vstack([parity_rows(booster.booster, seed=3), np.full((1, 12), np.nan)])
    rows[:7, 2] = [np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 5e-324]
    # every block size, and a block cut short at the end
    for n in (1, 2, 63, 64, 65, len(rows)):
        np.testing.assert_allclose(
            trees.predict(rows[:n]), booster.predict(rows[:n]), rtol=0, atol=1e-6
        )


def test_trees_compiled_without_the_json_reader_score_the_same(tmp_path: Path) -> None:
    """The gate's latency check compiles the trees without the server's JSON reader (its own
    translation unit): the library has no reader, and the trees score as the full build's."""
    raw = _trained("binary:logistic", rounds=5)
    compile_trees(raw, tmp_path / "full")
    compile_trees(raw, tmp_path / "lean", json_numbers=False)
    full = CompiledTrees(tmp_path / "full" / LIBRARY, 12, threads=1)
    lean = CompiledTrees(tmp_path / "lean" / LIBRARY, 12, threads=1)
    assert full.json_numbers is not None and lean.json_numbers is None
    rows = parity_rows(BoosterTrees.from_bytes(raw).booster, seed=5)
    assert np.array_equal(lean.predict(rows), full.predict(rows))


def test_a_model_the_tables_do_not_cover_is_compiled_by_tl2cgen(tmp_path: Path) -> None:
    """binary:hinge is not in the tables' list: tl2cgen compiles it, through the same parity
    check, and the record says why."""
    raw = _trained("binary:hinge", rounds=5)
    record = compile_trees(raw, tmp_path)
    assert record["generator"] == "tl2cgen" and record["tl2cgen"]
    assert record["fallback_reason"] == "objective binary:hinge"
    trees = CompiledTrees(tmp_path / LIBRARY, 12)
    booster = BoosterTrees.from_bytes(raw)
    rows = parity_rows(booster.booster, seed=4)
    np.testing.assert_allclose(trees.predict(rows), booster.predict(rows), rtol=0, atol=1e-6)
