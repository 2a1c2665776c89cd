"""train.engine: dask against a scheduler that requires TLS (issue 21): a real `dask scheduler
--protocol tls` and one TLS worker, certificates made in the test (tests/tls.py); the client's
material given as the workflows give it, PEM text in DASK_TLS_CA / DASK_TLS_CERT / DASK_TLS_KEY."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from mlgate.pipeline import train
from tests.conftest import make_project
from tests.integration.test_dask import QUICK
from tests.integration.test_train import assert_nothing_left, client, train_args, unique
from tests.tls import TlsCluster, authority, issue, tls_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[TlsCluster]:
    """Started after the S3 stand-in, whose credentials the worker inherits (as test_dask)."""
    with tls_cluster(tmp_path_factory.mktemp("dask-tls")) as running:
        yield running


def _env(clean_env: dict[str, str], cluster: TlsCluster, **secrets: str) -> dict[str, str]:
    return {
        **clean_env,
        "MLGATE_TRAIN_ENGINE": "dask",
        "MLGATE_DASK_SCHEDULER": cluster.address,
        **cluster.secrets(),
        **secrets,
    }


def test_train_on_a_tls_cluster_with_the_secrets_as_the_workflow_gives_them(
    cluster, mlflow_server, tmp_path, clean_env, capsys
):
    """The three secrets in the step's environment, the address from the workflow input: the
    workers train (the dask engine's lineage: the objects they read), and no PEM is printed."""
    project = make_project(tmp_path / "project")
    model = unique("dask-tls")
    args = [*train_args(project, mlflow_server, model), *QUICK]
    assert train.main(args, env=_env(clean_env, cluster)) == 0
    version = client(mlflow_server).get_model_version(model, "1")
    assert version.tags["mlgate.data.objects"] == "1"  # read by the workers, not the runner
    said = capsys.readouterr()
    for pem in cluster.secrets().values():
        assert pem.splitlines()[1] not in said.out + said.err


def test_tls_refused_at_connect_is_exit_14_naming_tls(
    cluster, mlflow_server, tmp_path, clean_env, capsys
):
    """A CA that did not sign the scheduler's certificate, an expired client certificate, a
    client certificate of another CA: each is a ClusterError (exit 14) that says TLS and what
    to change, at once (no wait for a timeout), before any run."""
    project = make_project(tmp_path / "project")
    model = unique("dask-tls-refused")
    args = [*train_args(project, mlflow_server, model), *QUICK]
    other = authority("another CA")
    expired = issue(cluster.ca, "old runner", expired=True)
    stranger = issue(other, "stranger")
    cases = [
        ({"DASK_TLS_CA": other.cert}, "is not signed by the CA given"),
        (
            {"DASK_TLS_CERT": expired.cert, "DASK_TLS_KEY": expired.key},
            "the client certificate from the secrets .* expired at",
        ),
        (
            {"DASK_TLS_CERT": stranger.cert, "DASK_TLS_KEY": stranger.key},
            "did not accept the client certificate",
        ),
    ]
    for secrets, message in cases:
        capsys.readouterr()
        assert train.main(args, env=_env(clean_env, cluster, **secrets)) == 14, message
        said = capsys.readouterr().err
        assert "TLS: " in said, said
        assert re.search(message, said), said
        assert "fix:" in said
    assert_nothing_left(mlflow_server, model)


def test_bad_or_missing_material_is_exit_2_before_any_run(
    cluster, mlflow_server, tmp_path, clean_env, capsys
):
    """A path pasted instead of the PEM, and a tls:// address whose secrets arrived empty (a
    fork's pull request): exit 2 with error/fix, never a plain tcp:// attempt, no run."""
    project = make_project(tmp_path / "project")
    model = unique("dask-tls-bad")
    args = [*train_args(project, mlflow_server, model), *QUICK]
    empty = {"DASK_TLS_CA": "", "DASK_TLS_CERT": "", "DASK_TLS_KEY": ""}
    for secrets, message in (
        ({"DASK_TLS_KEY": "/home/runner/.dask/client-key.pem"}, "DASK_TLS_KEY looks like a file"),
        (empty, "no TLS material arrived"),
    ):
        capsys.readouterr()
        assert train.main(args, env=_env(clean_env, cluster, **secrets)) == 2, message
        said = capsys.readouterr().err
        assert message in said and "fix:" in said, said
    assert_nothing_left(mlflow_server, model)
