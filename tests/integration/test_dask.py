"""train.engine: dask (issue 21) against a real Dask cluster: a `dask scheduler` and two
`dask worker` processes started once for this module, and the session's MLflow server."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlgate.errors import ClusterError, DataError
from mlgate.pipeline import cluster, evaluate, promote, shards, train, validate
from mlgate.pipeline.split import split_frame
from mlgate.settings import load_settings
from tests.conftest import free_port, git, make_project
from tests.daskprocs import dask_processes
from tests.integration.test_train import assert_nothing_left, client, train_args, unique

pytestmark = pytest.mark.integration
# Decisions compared between the engines without evidently's reports and the latency check
# (which compiles both models' trees with the C compiler for each decision): neither depends on
# where the models were scored; both are proven by tests/integration/test_gate.py.
QUICK = ("--set", "reports.quality=false", "--set", "gate.max_latency_ms=null")


def _wait_workers(address: str, count: int, process: subprocess.Popen, log: Path) -> None:
    from distributed import Client

    # joined whatever their status (`Client.wait_for_workers` counts running ones only: a
    # worker paused for memory as soon as it joined would never count)
    with Client(address, timeout=30) as c:
        deadline = time.monotonic() + 60
        while len(cluster.workers(c)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} Dask workers did not join:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)


@contextlib.contextmanager
def running_cluster(root: Path, workers: int = 2, **env: str) -> Iterator[str]:
    """A real scheduler and `workers` workers (CLI, 1 thread, 600 MB each) on free loopback
    ports, logging into `root`, stopped on exit; `env`: more of the processes' environment.
    Started after the S3 stand-in: the workers read shards from it with the credentials of
    their own environment (s3_server sets them), as workers of a real cluster do."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with dask_processes(**env) as processes:
        processes.scheduler(port, root / "scheduler.log")
        for n in range(workers):
            worker = processes.worker(address, root / f"worker{n}.log")
        _wait_workers(address, workers, worker, root / f"worker{workers - 1}.log")
        yield address


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[str]:
    """The module's cluster: two 600 MB workers, shared by its tests."""
    with running_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address


@pytest.fixture
def fresh_dask_cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[str]:
    """Two 600 MB workers of the test's own, nothing run on them before: what is measured
    against their memory limit is not what earlier tests left in the module's workers."""
    with running_cluster(tmp_path_factory.mktemp("dask-fresh")) as address:
        yield address


def _dask(address: str) -> tuple[str, ...]:
    return ("--set", "train.engine=dask", "--set", f"dask.scheduler={address}")


def _decision(project: Path, model: str, version: str) -> dict:
    return json.loads((project / "reports" / model / f"v{version}" / "decision.json").read_text())


def test_the_split_on_partitions_is_the_split_of_the_rows(dask_cluster, tmp_path, breast_cancer):
    """Rows read from three CSV shards by the workers land in the parts the local engine puts
    them in (the oracle: `split_frame` on the whole frame)."""
    from distributed import Client

    shards = tmp_path / "shards"
    shards.mkdir()
    bounds = [0, 100, 333, len(breast_cancer)]
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        breast_cancer.iloc[a:b].to_csv(shards / f"part-{n}.csv", index=False)
    settings = load_settings(
        env={}, overrides=["data.target=diagnosis", "split.holdout_fraction=0.25"], cwd=tmp_path
    )
    with Client(dask_cluster) as c:
        frame = cluster.read(shards, breast_cancer.dtypes.to_dict())
        assert frame.npartitions == 3
        parts = c.compute(cluster.split_parts(frame, settings)).result()
    local = split_frame(
        breast_cancer, target="diagnosis", seed=42, validation_fraction=0.2, holdout_fraction=0.25
    )
    features = [c for c in breast_cancer.columns if c != "diagnosis"]

    def rows(part: pd.DataFrame) -> list[tuple]:
        return sorted(map(tuple, part[features].to_numpy().tolist()))

    for code, expected in (
        (cluster.TRAIN, local.train),
        (cluster.VALIDATION, local.validation),
        (cluster.HOLDOUT, local.holdout),
    ):
        assert rows(parts[parts[cluster.PART] == code]) == rows(expected)


def _sharded_on_s3(project: Path, s3_server: str, frame: pd.DataFrame, bounds: list[int]) -> str:
    """`frame` as Parquet shards in data/ (the project's CSV removed), `dvc add data` and
    `dvc push` to a fresh bucket made the default remote; the bucket's name."""
    import boto3
    from dvc.repo import Repo

    bucket = f"shards-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    data = project / "data"
    data.mkdir(exist_ok=True)  # the project holds data.dvc, not the data
    for old in data.glob("*"):
        old.unlink()
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        frame.iloc[a:b].to_parquet(data / f"part-{n}.parquet", index=False)
    with Repo(str(project)) as repo:
        with repo.config.edit() as conf:
            conf["remote"]["s3"] = {"url": f"s3://{bucket}/dvc", "endpointurl": s3_server}
            conf["core"]["remote"] = "s3"
    with Repo(str(project)) as repo:
        repo.add([str(data)])
        repo.push(remote="s3")
    return bucket


def _object_url(bucket: str, path: Path) -> str:
    """Where DVC 3 keeps a file in an S3 remote: the oracle, from the file's own bytes."""
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    return f"s3://{bucket}/dvc/files/md5/{md5[:2]}/{md5[2:]}"


def test_the_workers_read_the_versions_shards_from_the_s3_remote_and_check_them(
    dask_cluster, s3_server, tmp_path, breast_cancer
):
    """The manifest is read from the DVC remote (no pull: the runner's cache stays empty); the
    workers read each shard's object from S3 and refuse a damaged or missing one by name."""
    import boto3
    from distributed import Client

    project = make_project(tmp_path / "project")
    bucket = _sharded_on_s3(project, s3_server, breast_cancer, [0, 100, 333, len(breast_cancer)])
    files = sorted((project / "data").glob("*.parquet"))
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    settings = load_settings(
        env={}, overrides=["data.target=diagnosis", "data.path=data"], cwd=project
    )
    located = shards.locate(settings)
    assert not (project / ".dvc" / "cache").exists()  # nothing was pulled
    assert [s.relpath for s in located.shards] == [f.name for f in files]
    assert located.urls == [_object_url(bucket, f) for f in files]
    assert located.kind == "parquet"
    assert located.storage_options == {"endpoint_url": s3_server}  # never a credential
    assert located.remote_url == f"s3://{bucket}/dvc"
    manifest = located.manifest()
    assert manifest["objects_sha256"] == located.lineage()["mlgate.data.objects_sha256"]

    with Client(dask_cluster) as c:
        frame = shards.frame(c, located)
        assert frame.npartitions == 3
        read = c.compute(frame).result()
        pd.testing.assert_frame_equal(read.reset_index(drop=True), breast_cancer)

        s3 = boto3.client("s3", endpoint_url=s3_server)
        damaged, missing = located.shards[1], located.shards[2]
        key = damaged.url.removeprefix(f"s3://{bucket}/")
        s3.put_object(Bucket=bucket, Key=key, Body=files[0].read_bytes())  # another shard
        with pytest.raises(DataError, match=f"shard {damaged.relpath} read from .* has md5"):
            c.compute(shards.frame(c, located)).result()
        s3.delete_object(Bucket=bucket, Key=missing.url.removeprefix(f"s3://{bucket}/"))
        with pytest.raises(DataError, match=f"shard {missing.relpath} .* is missing from"):
            c.compute(shards.frame(c, located).partitions[2]).result()


def test_a_missing_manifest_or_a_bad_endpoint_is_a_data_error(s3_server, tmp_path, breast_cancer):
    import boto3

    project = make_project(tmp_path / "project")
    bucket = _sharded_on_s3(project, s3_server, breast_cancer, [0, 300, len(breast_cancer)])
    overrides = ["data.target=diagnosis", "data.path=data"]
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DataError, match="cannot read the manifest") as caught:
        shards.locate(
            load_settings(env={}, overrides=[*overrides, f"dvc.endpoint_url={nobody}"], cwd=project)
        )
    assert caught.value.exit_code == 3
    settings = load_settings(env={}, overrides=overrides, cwd=project)
    md5 = settings.path(Path("data.dvc")).read_text().split("md5: ")[1].split()[0]
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.delete_object(Bucket=bucket, Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}")
    with pytest.raises(DataError, match=f"manifest of data version {md5} is missing") as caught:
        shards.locate(settings)
    assert "dvc push" in str(caught.value.fix)


def _holdout_oracle(frame: pd.DataFrame, **rule) -> tuple[pd.DataFrame, str]:
    """The local engine's holdout of `frame` and the digest the manifest's kind names: sha256
    over the column names (JSON) and the sorted 64-bit row hashes (docs/dask.md)."""
    import numpy as np

    part = split_frame(frame, target="diagnosis", **rule).holdout
    hashes = np.sort(pd.util.hash_pandas_object(part, index=False).to_numpy()).astype("<u8")
    names = json.dumps([str(c) for c in frame.columns]).encode()
    return part, hashlib.sha256(names + b"\n" + hashes.tobytes()).hexdigest()


def test_mlgate_train_on_a_sharded_version_in_s3_reads_it_on_the_workers(
    dask_cluster, mlflow_server, s3_server, tmp_path, breast_cancer, clean_env, capsys
):
    """`mlgate train` of a directory of Parquet shards pushed to the S3 stand-in: the workers
    read the object the manifest names and the model version records it. The runner pulls
    nothing (the DVC cache stays absent): the split manifest holds the rule and the holdout's
    digest (the oracle: the local engine's holdout, hashed here), and the holdout metrics
    logged are the registered booster's on that holdout (scikit-learn's AUC). One shard:
    training on several partitions hung in xgboost.dask on this two-worker test cluster (seen
    once under a load average of 30; the reading of several shards is the test above)."""
    import mlflow
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    project = make_project(tmp_path / "project")
    bucket = _sharded_on_s3(project, s3_server, breast_cancer, [0, len(breast_cancer)])
    urls = [_object_url(bucket, f) for f in sorted((project / "data").glob("*.parquet"))]
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "sharded data version on S3")
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(project / "data")  # the runner has neither the data nor its cache
    model = unique("dask-shards")
    args = [
        *train_args(project, mlflow_server, model),
        *QUICK,
        *_dask(dask_cluster),
        *("--set", "data.path=data"),
    ]
    assert train.main(args, env=clean_env) == 0
    said = capsys.readouterr()
    assert "training in memory (dask.training: auto)" in said.err
    c = client(mlflow_server)
    version = c.get_model_version(model, "1")
    assert version.tags["mlgate.data.objects"] == "1"
    trained = c.get_run(version.run_id).data.tags
    assert trained["mlgate.dask.training"] == "memory"  # the version fits: in memory
    assert int(trained["mlgate.dask.training_estimate_bytes"]) <= int(
        trained["mlgate.dask.training_room_bytes"]
    )
    assert version.tags["mlgate.data.md5"].endswith(".dir")
    assert version.tags["mlgate.data.remote_url"] == f"s3://{bucket}/dvc"
    read = json.loads(
        Path(c.download_artifacts(version.run_id, "data/objects.json", str(tmp_path))).read_text()
    )
    assert [o["url"] for o in read["objects"]] == urls
    assert not (project / ".dvc" / "cache").exists()  # nothing was pulled
    assert not (project / "data").exists()

    manifest = json.loads(
        Path(c.download_artifacts(version.run_id, "split/holdout.json", str(tmp_path))).read_text()
    )
    assert "holdout" not in manifest  # no key list
    rule = {"seed": 42, "validation_fraction": 0.2, "holdout_fraction": 0.25}
    part, digest = _holdout_oracle(breast_cancer, **rule)
    assert manifest["digest_kind"] == "sha256-of-sorted-row-hashes"
    assert manifest["rule"]["target"] == "diagnosis" and manifest["rule"]["seed"] == 42
    assert manifest["holdout_digest"] == version.tags["mlgate.split.holdout_digest"] == digest
    assert manifest["holdout_rows"] == len(part) == int(version.tags["mlgate.split.holdout_rows"])
    assert version.tags["mlgate.data.rows"] == str(len(breast_cancer))
    booster = mlflow.xgboost.load_model(f"models:/{model}/1")
    proba = booster.predict(xgb.DMatrix(part.drop(columns=["diagnosis"])))
    logged = c.get_run(version.run_id).data.metrics
    assert logged["holdout_auc"] == pytest.approx(roc_auc_score(part["diagnosis"], proba), abs=1e-9)
    large = (part["mean_radius"] >= 15).to_numpy()
    assert logged["slice_large_masses_rows"] == large.sum()
    assert logged["slice_large_masses_auc"] == pytest.approx(
        roc_auc_score(part["diagnosis"][large], proba[large]), abs=1e-9
    )

    # evaluate rebuilds the holdout on the workers from the rule: still nothing on the runner
    gate = [*args, "--fail-on-gate", "false"]
    assert evaluate.main([*gate, "--candidate-version", "1"], env=clean_env) == 0
    assert not (project / ".dvc" / "cache").exists() and not (project / "data").exists()
    decision = _decision(project, model, "1")
    assert decision["holdout_digest"] == digest and decision["holdout_rows"] == len(part)
    overall = decision["metrics"]["candidate"]["overall"]
    assert overall["auc"] == pytest.approx(roc_auc_score(part["diagnosis"], proba), abs=1e-9)
    assert decision["metrics"]["candidate"]["slices"]["large_masses"]["rows"] == large.sum()

    # a re-run splits the same rows into the same holdout, here forced into external memory:
    # the same holdout, a model as good (not the same booster: external memory's quantile
    # sketch is built batch by batch, so its bins, and the trees, differ a little)
    assert train.main([*args, "--set", "dask.training=external"], env=clean_env) == 0
    again = c.get_model_version(model, "2")
    assert again.tags["mlgate.split.holdout_digest"] == digest
    assert c.get_run(again.run_id).data.tags["mlgate.dask.training"] == "external"
    assert c.get_run(again.run_id).data.tags["mlgate.dask.training_rule"] == "forced"
    external = mlflow.xgboost.load_model(f"models:/{model}/2")
    auc = roc_auc_score(part["diagnosis"], proba)
    auc_external = roc_auc_score(
        part["diagnosis"], external.predict(xgb.DMatrix(part.drop(columns=["diagnosis"])))
    )
    assert auc_external == pytest.approx(auc, abs=0.02), (auc_external, auc)
    assert c.get_run(again.run_id).data.metrics["holdout_auc"] == pytest.approx(
        auc_external, abs=1e-9
    )

    # the model's lineage naming another data version (three of its holdout rows gone): the
    # rebuilt holdout's digest differs, exit 3, and nothing is recorded
    _sharded_on_s3(project, s3_server, breast_cancer.drop(index=part.index[:3]), [0, 500, 566])
    other = (project / "data.dvc").read_text().split("md5: ")[1].split()[0]
    c.set_model_version_tag(model, "2", "mlgate.data.md5", other)
    capsys.readouterr()
    assert evaluate.main([*gate, "--candidate-version", "2"], env=clean_env) == 3
    said = capsys.readouterr()
    assert "does not match the digest logged at training" in said.out + said.err
    assert "mlgate.decision.verdict" not in c.get_model_version(model, "2").tags
    assert not (project / "reports" / model / "v2").exists()


def _spoiled(frame: pd.DataFrame) -> pd.DataFrame:
    """Several kinds of violation, with one each side of the shard boundaries 200 and 400."""
    bad = frame.drop(columns=["mean_area"]).assign(extra=1.0)
    for row in (3, 199, 200, 400):
        bad.loc[row, "mean_radius"] = -1.0
    bad.loc[7, "worst_area"] = float("nan")
    bad.loc[399, "worst_area"] = float("inf")
    bad["diagnosis"] = bad["diagnosis"].astype(float)
    bad.loc[401, "diagnosis"] = float("nan")
    bad.loc[10, "diagnosis"] = 2.0
    return bad


def test_validation_on_the_workers_reports_what_the_local_engine_reports(
    dask_cluster, s3_server, tmp_path, breast_cancer, clean_env
):
    """`mlgate validate` with the dask engine validates each shard of the version on the
    workers (the runner pulls nothing) and writes the report the local engine writes for the
    whole frame (the oracle, with counts taken here with pandas); good data passes."""

    bad = _spoiled(breast_cancer)
    project = make_project(tmp_path / "project")
    _sharded_on_s3(project, s3_server, bad, [0, 200, 400, len(bad)])
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    args = ["--params", str(project / "params.yaml"), *_dask(dask_cluster)]
    args += ["--set", "data.path=data"]
    assert validate.main(args, env=clean_env) == 4  # ValidationFailed, as the local engine
    assert not (project / ".dvc" / "cache").exists()  # nothing was pulled
    found = json.loads((project / "reports" / "validation.json").read_text())

    settings = load_settings(env={}, params_file=project / "params.yaml")
    schema = validate.load_schema(project / "schema" / "breast_cancer.yaml")
    whole = bad.reset_index(drop=True)  # the shards read back, in order, are this frame
    _, local = validate.validate_frame(whole, schema, settings, name="data")
    expected = json.loads(json.dumps({**dataclasses.asdict(local), "ok": False}))
    assert {k: v for k, v in found.items() if k != "data_md5"} == expected
    by_check = {(v["column"], v["check"]): v for v in found["violations"]}
    radius = by_check[("mean_radius", "greater_than_or_equal_to(0)")]
    negative = whole.index[whole["mean_radius"] < 0].tolist()
    assert radius["count"] == len(negative) == 4 and radius["rows"] == negative
    assert by_check[("worst_area", "not_nullable")]["rows"] == [7]
    assert by_check[("worst_area", "finite values")]["rows"] == [399]
    missing = whole.index[whole["diagnosis"].isna()].tolist()
    assert by_check[("diagnosis", "no missing label")]["rows"] == missing == [401]
    assert by_check[("diagnosis", "isin([0, 1])")]["rows"] == [10]
    assert ("mean_area", "required column missing") in by_check
    assert ("extra", "unexpected column (schema is strict)") in by_check
    assert found["rows"] == len(whole) and found["columns"] == whole.shape[1]

    good = make_project(tmp_path / "good")
    _sharded_on_s3(good, s3_server, breast_cancer, [0, 200, 400, len(breast_cancer)])
    args = ["--params", str(good / "params.yaml"), *_dask(dask_cluster), "--set", "data.path=data"]
    assert validate.main(args, env=clean_env) == 0
    report = json.loads((good / "reports" / "validation.json").read_text())
    assert report["ok"] and report["rows"] == len(breast_cancer) and not report["violations"]


def test_partitions_scored_on_the_workers_are_the_boosters_predictions(dask_cluster, breast_cancer):
    """`cluster.predict` scores every partition where it lies with both boosters at once and
    returns one float32 array in the frame's order (the label's row last); `cluster.score` of
    a pandas frame (float64 columns sent as float32) predicts the same. The oracle: each
    booster's own `inplace_predict` on the runner, equal bit for bit."""
    import dask.dataframe as dd
    import numpy as np
    import xgboost as xgb
    from distributed import Client

    x = breast_cancer.drop(columns=["diagnosis"])
    y = breast_cancer["diagnosis"].to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}
    strong = xgb.train(params, xgb.DMatrix(x, y), 20)
    weak = xgb.train({**params, "max_depth": 1}, xgb.DMatrix(x, y), 5)
    frame = dd.from_pandas(breast_cancer, npartitions=4, sort=False)
    with Client(dask_cluster) as c:
        both = cluster.predict(c, [strong, weak], frame, "scoring", label="diagnosis")
        alone = cluster.score(c, strong, x, "scoring")
    assert both.dtype == np.float32 and both.shape == (3, len(x))
    assert np.array_equal(both[0], strong.inplace_predict(x))
    assert np.array_equal(both[1], weak.inplace_predict(x))
    assert np.array_equal(both[2], y.astype(np.float32))
    assert alone.dtype == np.float32 and np.array_equal(alone, both[0])


def test_train_evaluate_promote_on_the_cluster_match_the_local_engine(
    dask_cluster, mlflow_server, tmp_path, clean_env
):
    project = make_project(tmp_path / "project")
    model = unique("dask")
    args = [*train_args(project, mlflow_server, model), *QUICK]
    c = client(mlflow_server)

    assert train.main(args, env=clean_env) == 0  # v1: the local engine, the champion
    local_v1 = c.get_model_version(model, "1")  # as training left it (before the gate's tags)
    assert evaluate.main([*args, "--candidate-version", "1"], env=clean_env) == 0
    assert promote.main([*args, "--candidate-version", "1"], env=clean_env) == 0

    assert train.main([*args, *_dask(dask_cluster)], env=clean_env) == 0  # v2 on the cluster
    dask_v2 = c.get_model_version(model, "2")
    assert c.get_run(dask_v2.run_id).data.tags["mlgate.dask.training"] == "memory"
    # the same lineage records and tags, the same booster type; and the objects the workers
    # read from the DVC remote (here the data file itself, its object in the remote)
    objects = {"mlgate.data.objects", "mlgate.data.objects_sha256"}
    assert set(dask_v2.tags) == set(local_v1.tags) | objects
    assert dask_v2.tags["mlgate.data.objects"] == "1"
    read = json.loads(
        Path(c.download_artifacts(dask_v2.run_id, "data/objects.json", str(tmp_path))).read_text()
    )
    assert read["objects_sha256"] == dask_v2.tags["mlgate.data.objects_sha256"]
    assert [o["relpath"] for o in read["objects"]] == ["breast_cancer.csv"]
    assert read["objects"][0]["url"].endswith("/" + local_v1.tags["mlgate.data.object_url"])
    for key in ("mlgate.model.class", "mlgate.data.md5", "mlgate.split.holdout_rows"):
        assert dask_v2.tags[key] == local_v1.tags[key]
    assert dask_v2.tags["mlgate.model.class"] == "xgboost.core.Booster"

    rc_dask = evaluate.main(
        [*args, *_dask(dask_cluster), "--candidate-version", "2", "--fail-on-gate", "false"],
        env=clean_env,
    )
    on_cluster = _decision(project, model, "2")
    rc_local = evaluate.main(
        [*args, "--candidate-version", "2", "--fail-on-gate", "false"], env=clean_env
    )
    on_runner = _decision(project, model, "2")
    assert rc_dask == rc_local == 0
    assert on_cluster["verdict"] == on_runner["verdict"]
    assert on_cluster["champion"]["version"] == "1"
    for role in ("candidate", "champion"):
        for key, value in on_runner["metrics"][role]["overall"].items():
            assert on_cluster["metrics"][role]["overall"][key] == pytest.approx(value, abs=1e-9)
    for key, value in on_runner["significance"].items():
        if isinstance(value, float):
            assert on_cluster["significance"][key] == pytest.approx(value, abs=1e-9)
    if on_cluster["verdict"] == "pass":
        assert promote.main([*args, "--candidate-version", "2"], env=clean_env) == 0
        assert str(c.get_model_version_by_alias(model, "staging").version) == "2"


def test_an_unreachable_scheduler_fails_before_any_run(mlflow_server, tmp_path, clean_env):
    project = make_project(tmp_path / "project")
    model = unique("dask-down")
    nobody = f"tcp://127.0.0.1:{free_port()}"
    args = [*train_args(project, mlflow_server, model), *_dask(nobody)]
    assert train.main([*args, "--set", "dask.connect_timeout=2"], env=clean_env) == 14
    assert_nothing_left(mlflow_server, model)
    assert ClusterError.exit_code == 14


def test_work_that_fails_after_a_worker_died_is_a_lost_worker(dask_cluster, monkeypatch):
    """The other order of a worker's death (seen in CI): the collective fails first, with
    xgboost.dask's "Invalid worker address ... Resilience is not yet supported", before the
    watchdog's poll has seen the loss. The stage still says which worker was lost (exit 14),
    never a traceback. The poll is put out of reach so only the error path can answer."""
    from distributed import Client

    monkeypatch.setattr(cluster, "POLL_SECONDS", 3600)
    with Client(dask_cluster) as c:
        pids = c.run(os.getpid)
        victim = sorted(pids)[0]

        def work() -> None:
            os.kill(pids[victim], signal.SIGKILL)
            for _ in range(600):  # until the scheduler has removed it (bounded: 60 s)
                if victim not in cluster.workers(c):
                    break
                time.sleep(0.1)
            raise ValueError(
                f"Invalid worker address: {victim}. This is likely caused by one of the "
                "workers died and Dask re-scheduled a different one."
            )

        with pytest.raises(ClusterError, match=f"{victim} was lost during training") as caught:
            cluster.watched(c, work, "training")
        assert caught.value.exit_code == 14
        for _ in range(600):  # the nanny's new worker, for the tests after this one
            if len(cluster.workers(c)) == len(pids):
                break
            time.sleep(0.1)
        assert len(cluster.workers(c)) == len(pids), "the killed worker was not replaced"


# A small launcher between pytest and the measured process: Linux carries the pre-exec image's
# high-water RSS into the exec'd process's ru_maxrss, so a child forked by pytest directly (which
# holds the large frame) would report pytest's memory, not its own.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def _peak_rss_mb(args: list[str], env: dict[str, str], log: Path) -> float:
    """`mlgate train` in a fresh process; its peak RSS (ru_maxrss from wait4), in MB."""
    out = log.with_suffix(".rss")
    with log.open("w") as handle:
        subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(out), sys.executable, "-m", "mlgate", "train"]
            + args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
        )
    code, kilobytes = out.read_text().split()
    assert code == "0", log.read_text()[-3000:]
    return int(kilobytes) / 1024


def test_the_runners_peak_memory_does_not_grow_with_the_data(
    dask_cluster, mlflow_server, s3_server, tmp_path, breast_cancer, clean_env
):
    """The runner only submits work: `mlgate train` with the dask engine on 200 times the rows
    (113,800 x 31: 28 MB as one float64 frame, what one copy on the runner would add; the
    local engine holds several) peaks within 20 MB of the same run on the 569 rows (seen at
    400 times the rows: 333.7 and 335.9 MB). Memory, not time: a fair assertion on a
    shared machine. Rows made distinct (a factor 0.9-1.1 per value) so the split spreads them."""
    import numpy as np

    rng = np.random.default_rng(5)
    many = pd.concat([breast_cancer] * 200, ignore_index=True)
    features = [c for c in many.columns if c != "diagnosis"]
    many[features] = many[features] * rng.uniform(0.9, 1.1, size=(len(many), len(features)))
    peaks = {}
    for name, frame, bounds in (
        ("small", breast_cancer, [0, len(breast_cancer)]),
        ("large", many, [0, len(many) // 2, len(many)]),
    ):
        project = make_project(tmp_path / name)
        _sharded_on_s3(project, s3_server, frame, bounds)
        shutil.rmtree(project / "data")
        shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
        args = [
            *train_args(project, mlflow_server, unique(f"dask-rss-{name}")),
            *QUICK,
            *_dask(dask_cluster),
            *("--set", "data.path=data", "--set", "train.num_boost_round=20"),
        ]
        peaks[name] = _peak_rss_mb(args, clean_env, tmp_path / f"{name}.log")
    print(f"runner peak RSS: {peaks}")
    assert peaks["large"] <= peaks["small"] + 20, peaks


def test_the_survey_of_the_partitions_is_what_the_local_engine_takes_of_the_whole(dask_cluster):
    """What training gathers from the workers instead of the data: each part's rows and
    classes, the categorical feature's categories, each part's schema sample and the holdout's
    digest. The oracles: `split_frame`, `train.categories_of` and `train.schema_sample` on the
    whole frame, and hashlib over its holdout (`_holdout_oracle`). Three uneven partitions, a
    categorical feature, a missing value late in one column."""
    import dask.dataframe as dd
    import numpy as np
    from distributed import Client

    from mlgate.pipeline import holdout

    rng = np.random.default_rng(2)
    rows = 3000
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "kind": pd.Categorical(rng.choice(["p", "q", "r", "s"], size=rows)),
            "diagnosis": rng.integers(0, 2, size=rows),
        }
    )
    frame.loc[2500, "a"] = np.nan
    split = ["split.seed=42", "split.validation_fraction=0.2", "split.holdout_fraction=0.2"]
    settings = load_settings(env={}, overrides=["data.target=diagnosis", *split])
    rule = holdout.Rule.of(settings, {c: str(t) for c, t in frame.dtypes.items()})
    local = split_frame(
        frame, target="diagnosis", seed=42, validation_fraction=0.2, holdout_fraction=0.2
    )
    _, digest = _holdout_oracle(frame, seed=42, validation_fraction=0.2, holdout_fraction=0.2)
    parts = dd.from_pandas(frame, npartitions=3, sort=False)
    with Client(dask_cluster) as c:
        data = parts.assign(
            **{
                cluster.PART: parts.map_partitions(
                    cluster._rule_part, rule, meta=(cluster.PART, "int8")
                )
            }
        ).persist()
        surveyed = cluster.survey(c, data, "diagnosis", ["kind"])
        pieces = [data.get_partition(n).compute() for n in range(data.npartitions)]
    assert surveyed.categories == train.categories_of(frame, settings) == {"kind": list("pqrs")}
    for code, part in ((0, local.train), (1, local.validation), (2, local.holdout)):
        assert surveyed.rows[code] == len(part)
        assert surveyed.classes[code] == part["diagnosis"].value_counts().to_dict()
        expected = train.schema_sample(part)
        found = train.schema_sample(surveyed.samples[code])
        pd.testing.assert_frame_equal(
            found.reset_index(drop=True).astype(object),
            expected.reset_index(drop=True).astype(object),
        )
    assert holdout.digest(surveyed.columns, surveyed.hashes) == digest
    # the sizes `plan_training` weighs: per partition, as pandas holds it, the whole partition
    # and its train and validation rows (the oracle: the same partitions, cut here)
    assert surveyed.sizes == tuple(
        int(p.drop(columns=[cluster.PART]).memory_usage(deep=True).sum()) for p in pieces
    )
    assert surveyed.held == tuple(
        sum(
            int(
                p[p[cluster.PART] == code]
                .drop(columns=[cluster.PART])
                .memory_usage(deep=True)
                .sum()
            )
            for code in (0, 1)
        )
        for p in pieces
    )
    footprint = surveyed.footprint(2)
    assert footprint.rows == len(local.train) + len(local.validation)
    assert footprint.largest == max(surveyed.sizes) and footprint.features == 2


@pytest.mark.parametrize("training", ["auto", "external"])
def test_a_worker_killed_mid_training_fails_the_stage_and_registers_nothing(
    dask_cluster, mlflow_server, tmp_path, clean_env, training
):
    """SIGKILL of a real worker process while it trains (the training task seen inside
    XGBoost's boosting loop on it), in each path: in memory (auto, xgboost.dask: this version
    fits) and in external memory: the stage exits 14 and no model version exists. The
    worker's nanny starts a new worker process behind it."""
    from distributed import Client

    project = make_project(tmp_path / "project")
    model = unique("dask-kill")
    args = [
        *train_args(project, mlflow_server, model),
        *_dask(dask_cluster),
        *("--set", f"dask.training={training}"),
        *("--set", "train.num_boost_round=1000000", "--set", "train.early_stopping_rounds=1000000"),
    ]
    log = tmp_path / "train.log"
    with log.open("w") as handle:
        stage = subprocess.Popen(
            [sys.executable, "-m", "mlgate", "train", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=clean_env,
        )
    try:
        with Client(dask_cluster) as c:
            pids = c.run(os.getpid)
            victim = None
            while victim is None and stage.poll() is None:  # bounded by the stage itself
                # a worker whose running task is inside XGBoost's boosting loop
                for worker, tasks in c.call_stack().items():
                    if any("XGBoosterUpdateOneIter" in "".join(f) for f in tasks.values()):
                        victim = worker
                        break
                else:
                    time.sleep(0.5)
            assert victim is not None, log.read_text()[-3000:]
            os.kill(pids[victim], signal.SIGKILL)
        assert stage.wait(timeout=300) == 14, log.read_text()[-3000:]
    finally:
        if stage.poll() is None:
            stage.kill()
            stage.wait()
    output = log.read_text()
    path = "in memory" if training == "auto" else "in external memory"
    assert f"training {path} (dask.training" in output  # the path the test means to kill
    assert "during training" in output  # the worker seen lost, or the task failing with it
    assert client(mlflow_server).search_model_versions(f"name='{model}'") == []
    experiment = client(mlflow_server).get_experiment_by_name(model)
    runs = client(mlflow_server).search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def _local_shards(folder: Path, frames: dict[str, pd.DataFrame]) -> shards.Shards:
    """CSV shards in `folder` as a data version's manifest names them (its md5s), read by the
    workers from a path they share (no DVC remote needed to read them)."""
    folder.mkdir()
    listed = []
    for name, part in frames.items():
        path = folder / name
        part.to_csv(path, index=False)
        md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        listed.append(shards.Shard(name, md5, str(path)))
    return shards.Shards(
        "0" * 32 + ".dir",
        "local",
        str(folder),
        "csv",
        tuple(sorted(listed, key=lambda s: s.relpath)),
    )


def test_training_in_memory_holds_nothing_after_it_and_learns_what_external_memory_learns(
    dask_cluster, tmp_path, breast_cancer
):
    """`cluster.fit_memory` from the lazy prepared frame of three shards (one of them of one
    row, so some partitions hold no validation row): afterwards the workers hold no key of it
    (nothing persisted longer than training), and its booster scores the holdout as well as
    the external-memory booster of the same shards (AUC within 0.02; not the same trees:
    external memory's quantiles are sketched batch by batch). The oracle: scikit-learn's AUC on
    the local engine's holdout."""
    import xgboost as xgb
    from distributed import Client
    from sklearn.metrics import roc_auc_score

    from mlgate.pipeline import holdout

    frame = breast_cancer.reset_index(drop=True)
    located = _local_shards(
        tmp_path / "data",
        {"a.csv": frame.iloc[:300], "b.csv": frame.iloc[300:301], "c.csv": frame.iloc[301:]},
    )
    split = ["split.seed=42", "split.validation_fraction=0.2", "split.holdout_fraction=0.25"]
    settings = load_settings(
        env={},
        overrides=["data.target=diagnosis", "train.num_boost_round=40", *split],
        cwd=tmp_path,
    )
    rule = holdout.Rule.of(settings, {c: str(t) for c, t in frame.dtypes.items()})
    part, _ = _holdout_oracle(frame, seed=42, validation_fraction=0.2, holdout_fraction=0.25)
    with Client(dask_cluster) as c:
        data = cluster.prepared(c, located, rule)
        sample = frame.iloc[:5]
        before = {k for keys in c.has_what().values() for k in keys}
        in_memory, _ = cluster.fit_memory(c, settings, {}, sample, data)
        # nothing of training stays held: the client releases its futures as training ends,
        # and the scheduler then has the workers drop them (a message away: polled, bounded)
        for _ in range(300):
            after = {k for keys in c.has_what().values() for k in keys}
            if after <= before:
                break
            time.sleep(0.1)
        assert after <= before, after - before
        external, _ = cluster.fit_external(c, settings, {}, sample, located, rule)
    x = xgb.DMatrix(part.drop(columns=["diagnosis"]))
    auc = {
        name: roc_auc_score(part["diagnosis"], booster.predict(x))
        for name, booster in (("memory", in_memory), ("external", external))
    }
    assert auc["memory"] > 0.95 and auc["memory"] == pytest.approx(auc["external"], abs=0.02), auc


def test_a_key_list_holdout_rebuilt_on_the_workers_is_the_runners(dask_cluster, tmp_path):
    """A local-engine model's holdout (its key list) rebuilt on the workers: the version as
    `data.load_frame` reads it (the shards in its order, one shard's integer column widened
    by another's missing value, an empty shard, text), the rows the keys name in the key
    list's order, and `split.frame_digest`'s digest. The oracle: the runner's
    `load_frame` and `holdout_from_keys`, by row position and by id column, the keys in a
    shuffled order. Then the drift sample: the same rows whatever the partitioning, and the
    ones with the smallest seeded hash of the whole frame (hashes sorted here, by numpy)."""
    import dask
    import dask.dataframe as dd
    import numpy as np
    from distributed import Client

    from mlgate.pipeline import frames, onworkers
    from mlgate.pipeline.data import load_frame
    from mlgate.pipeline.split import frame_digest, holdout_from_keys, row_keys

    rng = np.random.default_rng(21)
    rows = 600
    whole = pd.DataFrame(
        {
            "id": [f"r{n:04d}" for n in rng.permutation(rows)],
            "mean_radius": rng.normal(14, 3, size=rows),
            "count": rng.integers(0, 9, size=rows),
            "kind": rng.choice(["p", "q", "r"], size=rows),
            "diagnosis": rng.integers(0, 2, size=rows),
        }
    )
    parts = {
        "part-0.csv": whole.iloc[:250],
        "part-1.csv": whole.iloc[250:250].copy(),  # header only
        "part-10.csv": whole.iloc[250:400].assign(
            count=lambda f: f["count"].where(f.index != 300)  # float: one missing value
        ),
        "part-2.csv": whole.iloc[400:],
    }
    located = _local_shards(tmp_path / "data", parts)
    runner = load_frame(tmp_path / "data")
    assert runner["count"].dtype == "float64" and len(runner) == rows
    local = split_frame(
        runner, target="diagnosis", seed=42, validation_fraction=0.2, holdout_fraction=0.25
    )
    features = ["mean_radius", "count", "kind"]
    with Client(dask_cluster) as c:
        read, total = cluster.as_read(c, located)
        assert total == rows
        pd.testing.assert_frame_equal(c.compute(read).result(), runner, check_index_type=False)
        for id_column in (None, "id"):
            settings = load_settings(
                env={},
                overrides=["data.target=diagnosis"]
                + ([f"data.id_column={id_column}"] if id_column else []),
                cwd=tmp_path,
            )
            keys = row_keys(local.holdout, id_column)
            keys = [keys[i] for i in rng.permutation(len(keys))]
            oracle = (
                runner.iloc[pd.Index(runner["id"]).get_indexer(keys)]
                if id_column
                else runner.loc[keys]
            )
            digest = frame_digest(oracle)
            assert holdout_from_keys(runner, keys, id_column=id_column, digest=digest) is not None
            remote = onworkers.keyed_remote(settings, c, located, keys, digest)
            assert remote.rows == len(keys)
            assert remote.y.tolist() == oracle["diagnosis"].tolist()
            pd.testing.assert_frame_equal(
                remote.head.reset_index(drop=True), oracle.iloc[:200].reset_index(drop=True)
            )
            with pytest.raises(DataError, match="does not match the digest") as caught:
                onworkers.keyed_remote(settings, c, located, keys[1:], digest)
            assert caught.value.exit_code == 3
            gone = [*keys[:-1], "r9999" if id_column else rows + 5]
            with pytest.raises(DataError, match="missing from the data"):
                onworkers.keyed_remote(settings, c, located, gone, digest)

        sample, seen = cluster.drift_sample(c, read, features, 50, "diagnosis")
        with dask.config.set({"dataframe.convert-string": False}):  # pandas' dtypes, as read
            repartitioned = dd.from_pandas(runner, npartitions=7, sort=False)
        again, _ = cluster.drift_sample(c, repartitioned, features, 50, "diagnosis")
        everything, _ = cluster.drift_sample(c, read, features, rows + 1, "diagnosis")
    assert seen == rows and len(sample) == 50
    pd.testing.assert_frame_equal(sample, again)
    hashed = frames.row_hash(runner[features], target="", seed=cluster.DRIFT_SEED, id_column=None)
    smallest = runner[features].iloc[np.argsort(hashed, kind="stable")[:50]]
    pd.testing.assert_frame_equal(sample, smallest.reset_index(drop=True))
    assert len(everything) == rows


def _push_version(project: Path, frame: pd.DataFrame) -> str:
    """A new version of data/part-0.parquet pushed to the project's DVC remote and committed;
    data.dvc's md5."""
    from dvc.repo import Repo

    frame.to_parquet(project / "data" / "part-0.parquet", index=False)
    with Repo(str(project)) as repo:
        repo.add([str(project / "data")])
        repo.push()
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "data: new version")
    return (project / "data.dvc").read_text().split("md5: ")[1].split()[0]


def test_a_local_engine_model_is_judged_on_the_workers_as_on_the_runner_with_its_reports(
    dask_cluster, mlflow_server, s3_server, tmp_path, breast_cancer, clean_env, capsys
):
    """v1 (the champion) and v2 trained by the local engine on two versions of a Parquet file
    in the S3 stand-in; v2 evaluated by the local engine (the oracle), then with the dask
    engine on a runner without the data or a DVC cache: the workers rebuild the key-list
    holdout (the same rows as `holdout_from_keys` on the pulled frame) and the decision is the
    runner's to 1e-9. That one evaluation builds evidently's reports: the quality report from
    every holdout row, the drift report from a sample of 200 rows of each version, the
    champion's from its own version's shards: the rows with the smallest seeded hashes of the
    whole frame (the oracle sorts them here). Then the lineage naming another version: exit 3,
    nothing recorded."""
    import numpy as np

    from mlgate.pipeline import frames, holdout
    from mlgate.pipeline.data import load_frame
    from mlgate.pipeline.split import holdout_from_keys

    project = make_project(tmp_path / "project")
    older = breast_cancer.iloc[40:]
    _sharded_on_s3(project, s3_server, older, [0, len(older)])
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "data on S3")
    model = unique("dask-keys")
    path = ("--set", "data.path=data/part-0.parquet")
    args = [*train_args(project, mlflow_server, model), *QUICK, *path]
    assert train.main(args, env=clean_env) == 0  # v1: the champion, on the older version
    c = client(mlflow_server)
    c.set_registered_model_alias(model, "staging", "1")  # what promote moves (tested elsewhere)
    older_md5 = (project / "data.dvc").read_text().split("md5: ")[1].split()[0]
    newer_md5 = _push_version(project, breast_cancer)
    assert train.main(args, env=clean_env) == 0  # v2 on the newer one
    v2 = c.get_model_version(model, "2")
    assert v2.tags["mlgate.data.md5"] == newer_md5
    manifest = json.loads(
        Path(c.download_artifacts(v2.run_id, "split/holdout.json", str(tmp_path))).read_text()
    )
    assert "digest_kind" not in manifest  # the local engine's key list
    frame = load_frame(project / "data" / "part-0.parquet")
    rows = holdout_from_keys(
        frame, manifest["holdout"], id_column=None, digest=v2.tags["mlgate.split.holdout_digest"]
    )
    gate = ["--candidate-version", "2", "--fail-on-gate", "false"]
    rc_local = evaluate.main([*args, *gate], env=clean_env)
    on_runner = _decision(project, model, "2")

    features = [c for c in frame.columns if c != "diagnosis"]

    def drawn(data: pd.DataFrame) -> str:  # the oracle of the drift sample's rows
        hashed = frames.row_hash(data[features], target="", seed=cluster.DRIFT_SEED, id_column=None)
        sample = data[features].iloc[np.argsort(hashed, kind="stable")[:200]]
        sample = sample.reset_index(drop=True)
        return holdout.digest(list(sample.columns), holdout.row_hashes(sample))

    expected = {"current": drawn(frame), "reference": drawn(older.reset_index(drop=True))}
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(project / "data")  # the runner has neither the data nor its cache
    reports = [
        *train_args(project, mlflow_server, model),
        *path,
        *("--set", "gate.max_latency_ms=null", "--set", "reports.drift_sample_rows=200"),
        *_dask(dask_cluster),
    ]
    rc_dask = evaluate.main([*reports, *gate], env=clean_env)
    assert not (project / ".dvc" / "cache").exists() and not (project / "data").exists()
    on_cluster = _decision(project, model, "2")
    assert rc_dask == rc_local == 0
    assert on_cluster["verdict"] == on_runner["verdict"]
    assert on_cluster["holdout_rows"] == on_runner["holdout_rows"] == len(rows)
    assert on_cluster["holdout_digest"] == on_runner["holdout_digest"]
    assert on_cluster["champion"]["version"] == "1"
    for role in ("candidate", "champion"):
        for key, value in on_runner["metrics"][role]["overall"].items():
            assert on_cluster["metrics"][role]["overall"][key] == pytest.approx(value, abs=1e-9)
        slices = on_runner["metrics"][role]["slices"]
        assert on_cluster["metrics"][role]["slices"].keys() == slices.keys()
    for key, value in on_runner["significance"].items():
        if isinstance(value, float):
            assert on_cluster["significance"][key] == pytest.approx(value, abs=1e-9)

    out = project / "reports" / model / "v2"
    names = [
        "curves.png",
        "evidently-quality.html",
        "evidently-drift.html",
        "evidently-inputs.json",
    ]
    logged = {Path(a.path).name for a in c.list_artifacts(v2.run_id, "decision")}
    assert set(names) <= logged
    assert all((out / name).stat().st_size > 0 for name in names)
    about = json.loads((out / "evidently-inputs.json").read_text())
    assert about["quality"]["rows"] == about["quality"]["holdout_rows"] == len(rows)
    drift = about["drift"]
    assert drift["sample_rows"] == 200
    assert drift["current"]["data_md5"] == newer_md5 and drift["reference"]["data_md5"] == older_md5
    assert (drift["current"]["rows"], drift["current"]["of"]) == (200, len(breast_cancer))
    assert (drift["reference"]["rows"], drift["reference"]["of"]) == (200, len(older))
    assert drift["current"]["rows_sha256"] == expected["current"]
    assert drift["reference"]["rows_sha256"] == expected["reference"]
    said = capsys.readouterr()
    assert "a sample of 200 of 569 rows" in said.out

    # the lineage naming the older version: the key list's rows are not all there, exit 3
    recorded = c.get_model_version(model, "2").tags["mlgate.decision.created_at"]
    c.set_model_version_tag(model, "2", "mlgate.data.md5", older_md5)
    assert evaluate.main([*reports, *gate], env=clean_env) == 3
    said = capsys.readouterr()
    assert "holdout rows logged at training are missing from the data" in said.out + said.err
    assert c.get_model_version(model, "2").tags["mlgate.decision.created_at"] == recorded


# ---- A data version several times the workers' memory (issue 21) ----

BIG_SHARDS = 200  # x 12,500 rows x (100 float64 features + the int64 label): 2.02 GB in pandas
BIG_ROWS = 12_500
BIG_FEATURES = 100
BIG_LEVELS = 8  # distinct values per feature: Parquet's dictionary and run-length encodings
WORKER_LIMIT = 600e6  # dask_cluster's --memory-limit 600MB, in bytes


def _big_shard(n: int) -> pd.DataFrame:
    """Shard `n` of the big version: each feature takes one of BIG_LEVELS values in runs of
    16 + j rows (the runs of the columns out of step, so the rows differ), and the label is
    learnable from the first four features plus noise."""
    import numpy as np

    rows = np.arange(n * BIG_ROWS, (n + 1) * BIG_ROWS)
    columns = {}
    informative = np.zeros(BIG_ROWS)
    for j in range(BIG_FEATURES):
        level = (rows // (16 + j) + j) % BIG_LEVELS
        columns[f"f{j:03d}"] = level * (j + 1) / 10.0
        if j < 4:
            informative += level / (BIG_LEVELS - 1) - 0.5
    noise = np.random.default_rng(n).normal(0.0, 0.5, BIG_ROWS)
    columns["y"] = (informative + noise > 0).astype("int64")
    return pd.DataFrame(columns)


BIG_SCHEMA = (
    "schema_type: dataframe\napi: pandas\ncolumns:\n"
    + "".join(f"  f{j:03d}:\n    dtype: float64\n    coerce: true\n" for j in range(BIG_FEATURES))
    + "  y:\n    dtype: int64\n    isin:\n    - 0\n    - 1\nstrict: true\nname: big\n"
)
BIG_PARAMS = """\
model:
  name: big
data:
  dvc_file: data.dvc
  path: data
  target: y
schema:
  path: schema/big.yaml
  min_rows: 100
  min_class_count: 20
split:
  seed: 42
  validation_fraction: 0.2
  holdout_fraction: 0.25
train:
  num_boost_round: 8
  early_stopping_rounds: 3
  params:
    objective: binary:logistic
    eval_metric: logloss
    tree_method: hist
    max_depth: 3
    eta: 0.3
    seed: 42
metrics:
  threshold: 0.5
  slices:
    high_f000: "f000 >= 0.4"
"""


def _big_version_on_s3(project: Path, s3_server: str) -> tuple[str, int]:
    """The big version written straight into a fresh bucket as DVC 3 objects (each shard's
    md5-named object, the `.dir` manifest as `dvc add` serializes it) and data.dvc pointing at
    it, never materialized whole, nor on the runner's disk; the bucket and the version's size
    in pandas (`memory_usage(deep=True)` of each shard as read back from its Parquet bytes)."""
    import io

    import boto3
    from dvc.repo import Repo

    bucket = f"big-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=bucket)

    def put(md5: str, body: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}", Body=body)

    entries, size, in_memory = [], 0, 0
    for n in range(BIG_SHARDS):
        buffer = io.BytesIO()
        _big_shard(n).to_parquet(buffer, index=False, compression="zstd")
        raw = buffer.getvalue()
        md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        put(md5, raw)
        entries.append({"md5": md5, "relpath": f"part-{n:03d}.parquet"})
        size += len(raw)
        in_memory += int(pd.read_parquet(io.BytesIO(raw)).memory_usage(deep=True).sum())
    manifest = json.dumps(entries, sort_keys=True).encode()
    dir_md5 = hashlib.md5(manifest, usedforsecurity=False).hexdigest() + ".dir"
    put(dir_md5, manifest)
    (project / "data.dvc").write_text(
        f"outs:\n- md5: {dir_md5}\n  size: {size}\n  nfiles: {BIG_SHARDS}\n  hash: md5\n"
        "  path: data\n"
    )
    (project / "schema" / "big.yaml").write_text(BIG_SCHEMA)
    (project / "params.yaml").write_text(BIG_PARAMS)
    shutil.rmtree(project / "data", ignore_errors=True)
    with Repo(str(project)) as repo:
        with repo.config.edit() as conf:
            conf["remote"]["s3"] = {"url": f"s3://{bucket}/dvc", "endpointurl": s3_server}
            conf["core"]["remote"] = "s3"
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "data: the big version")
    return bucket, in_memory


def test_validate_train_evaluate_promote_on_a_version_several_times_the_workers_memory(
    fresh_dask_cluster, s3_server, mlflow_server, tmp_path, clean_env
):
    """A version of 2 GB in pandas, over three times one worker's 600 MB and more than both
    together, goes through validate -> train (which validates it on the workers again) ->
    evaluate -> promote on two workers of its own; none of them is restarted, and evaluate
    rebuilds training's holdout (its digest checked against the one training logged, or
    exit 3)."""
    dask_cluster = fresh_dask_cluster
    import dvc.api
    from distributed import Client

    project = make_project(tmp_path / "project")
    _, in_memory = _big_version_on_s3(project, s3_server)
    assert in_memory >= 3 * WORKER_LIMIT and in_memory > 2 * WORKER_LIMIT  # the oracle's size
    # DVC itself reads the hand-written version: the manifest and a shard, from the remote
    with dvc.api.open("data/part-007.parquet", repo=str(project), mode="rb") as handle:
        pd.testing.assert_frame_equal(pd.read_parquet(handle), _big_shard(7))

    model = unique("dask-big")
    args = [*train_args(project, mlflow_server, model), *QUICK, *_dask(dask_cluster)]
    with Client(dask_cluster) as c:
        before = c.run(os.getpid)
    assert validate.main(args, env=clean_env) == 0
    assert train.main(args, env=clean_env) == 0
    c = client(mlflow_server)
    trained = c.get_run(c.get_model_version(model, "1").run_id).data.tags
    assert trained["mlgate.dask.training"] == "external"  # auto: the version does not fit
    assert int(trained["mlgate.dask.training_estimate_bytes"]) > int(
        trained["mlgate.dask.training_room_bytes"]
    )
    assert evaluate.main([*args, "--candidate-version", "1"], env=clean_env) == 0
    decision = _decision(project, model, "1")
    assert decision["verdict"] == "pass"
    assert decision["metrics"]["candidate"]["overall"]["auc"] > 0.7
    assert promote.main([*args, "--candidate-version", "1"], env=clean_env) == 0
    assert str(c.get_model_version_by_alias(model, "staging").version) == "1"
    with Client(dask_cluster) as dc:
        assert dc.run(os.getpid) == before  # the same worker processes: none was restarted


def test_workers_paused_for_lack_of_memory_fail_the_stage_rather_than_hang(
    tmp_path_factory, s3_server, monkeypatch
):
    """A worker whose memory stays above Dask's pause threshold runs no task again: the stage
    watching it (`cluster.watched`, as validation, training and scoring are) fails with a
    ClusterError naming memory once every worker has been paused for `STALLED_SECONDS`
    (shortened here), instead of waiting for ever. The worker is really paused: its pause
    threshold is set below what its process holds at start."""
    from distributed import Client

    from mlgate.errors import ClusterError

    monkeypatch.setattr(cluster, "STALLED_SECONDS", 3.0)
    root = tmp_path_factory.mktemp("dask-paused")
    with (
        running_cluster(root, workers=1, DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE="0.05") as address,
        Client(address) as c,
    ):
        while not cluster._all_paused(cluster._identities(c)):
            time.sleep(0.1)
        with pytest.raises(ClusterError, match="paused for lack of memory") as caught:
            cluster.watched(c, lambda: c.submit(sum, [1, 2], pure=False).result(), "a test")
    assert caught.value.exit_code == 14
    assert "--memory-limit" in caught.value.fix
