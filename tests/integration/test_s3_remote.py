"""The DVC remote on a real S3 endpoint (moto's server): push, pull, and its failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3

from mlgate.pipeline import train
from tests.conftest import free_port
from tests.integration.test_train import assert_nothing_left, client, train_args, unique


def forget_local_data(project: Path) -> None:
    """Drop the workspace data and DVC cache, so the only copy is in the bucket."""
    shutil.rmtree(project / "data", ignore_errors=True)
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(project / "dvc-remote")


def test_train_pulls_from_s3_and_records_the_remote(
    project, s3_remote, mlflow_server, clean_env
) -> None:
    forget_local_data(project)
    model = unique("s3")
    assert train.main(train_args(project, mlflow_server, model), env=clean_env) == 0
    version = client(mlflow_server).get_model_version(model, "1")
    assert version.tags["mlgate.data.remote"] == "s3"
    assert version.tags["mlgate.data.remote_url"] == f"s3://{s3_remote}/dvc"
    md5 = version.tags["mlgate.data.file_md5"]
    assert version.tags["mlgate.data.object_url"] == (
        f"s3://{s3_remote}/dvc/files/md5/{md5[:2]}/{md5[2:]}"
    )
    boto3.client("s3", endpoint_url=client_endpoint(project)).head_object(
        Bucket=s3_remote, Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}"
    )


def client_endpoint(project: Path) -> str:
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return repo.config["remote"]["s3"]["endpointurl"]


def test_s3_unreachable_exits_3_and_leaves_nothing(
    project, s3_remote, mlflow_server, clean_env, capsys, monkeypatch
) -> None:
    """One attempt: botocore's own retries of a refused connection (its default five, with
    backoff) are botocore's, not mlgate's, and cost this test 33 s of waiting (34.6 s of call
    time against 1.2 s, measured side by side); the exit code, the message and its fix are the
    same after one attempt as after five. DVC's S3 client runs in this process and reads its
    configuration from the process environment."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    forget_local_data(project)
    model = unique("s3-down")
    dead = f"http://127.0.0.1:{free_port()}"
    code = train.main(
        train_args(project, mlflow_server, model, "--set", f"dvc.endpoint_url={dead}"),
        env=clean_env,
    )
    err = capsys.readouterr().err
    assert code == 3
    assert f"could not pull from DVC remote 's3' (s3://{s3_remote}/dvc)" in err
    assert "Could not connect to the endpoint URL" in err
    assert "AWS_ACCESS_KEY_ID" in err  # the fix names what to check
    assert_nothing_left(mlflow_server, model)


def test_object_missing_from_s3_exits_3_and_leaves_nothing(
    project, s3_remote, mlflow_server, clean_env, capsys
) -> None:
    forget_local_data(project)
    s3 = boto3.resource("s3", endpoint_url=client_endpoint(project))
    s3.Bucket(s3_remote).objects.all().delete()
    model = unique("s3-missing")
    assert train.main(train_args(project, mlflow_server, model), env=clean_env) == 3
    err = capsys.readouterr().err
    assert "is missing from DVC remote 's3'" in err and "dvc push" in err
    assert_nothing_left(mlflow_server, model)
