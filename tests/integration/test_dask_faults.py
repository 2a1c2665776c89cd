"""A Dask worker SIGKILLed in the middle of the version's validation (train.engine: dask).

The kill must land inside a validation task on any runner, quick or busy, so the test does not
race a task of milliseconds against a poll: it starts a cluster of its own (a scheduler and one
worker under its nanny; the module cluster of test_dask is left alone), whose worker loads
KILLER at start. KILLER's plugin SIGKILLs its own worker process (a real SIGKILL: no handler,
no goodbye to the scheduler) when the first partition's summary (`checks.summarize`) starts
executing on it, once: it writes the flag file first, with its pid, so the worker the nanny
starts in its place runs the task again. The verdict: Dask retries the task, and the report is
the one the local engine writes for the whole frame (the same oracle as test_dask's validation
test); or the stage fails with a ClusterError (exit 14), nothing written. Never a half-written
report, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgate.settings import load_settings
from tests.conftest import free_port, make_project
from tests.daskprocs import dask_processes
from tests.integration.test_dask import _dask, _sharded_on_s3, _spoiled, _wait_workers

KILLER = """
import os
import signal

from distributed.diagnostics.plugin import WorkerPlugin


class KillOnFirstSummary(WorkerPlugin):
    def transition(self, key, start, finish, **kwargs):
        flag = os.environ["MLGATE_TEST_KILL_FLAG"]
        name = key[0] if isinstance(key, tuple) else key
        if finish == "executing" and str(name).startswith("summarize") and not os.path.exists(flag):
            with open(flag, "x") as handle:
                handle.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


async def dask_setup(worker):
    await worker.plugin_add(plugin=KillOnFirstSummary(), name="mlgate-test-kill")
"""


@pytest.fixture
def killing_cluster(tmp_path: Path, s3_server: str) -> Iterator[tuple[str, Path]]:
    """A scheduler and one worker (with its nanny) that SIGKILLs itself at the first summary."""
    root = tmp_path / "cluster"
    root.mkdir()
    (root / "killer.py").write_text(KILLER)
    flag = root / "killed"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with dask_processes(MLGATE_TEST_KILL_FLAG=str(flag)) as processes:
        processes.scheduler(port, root / "scheduler.log")
        worker = processes.worker(
            address, root / "worker.log", "--preload", str(root / "killer.py")
        )
        _wait_workers(address, 1, worker, root / "worker.log")
        yield address, flag


def test_a_worker_killed_mid_validation_is_retried_and_the_report_is_the_same(
    killing_cluster, s3_server, tmp_path, breast_cancer, clean_env
) -> None:
    from distributed import Client

    from mlgate.pipeline import validate

    address, flag = killing_cluster
    bad = _spoiled(breast_cancer)
    project = make_project(tmp_path / "project")
    _sharded_on_s3(project, s3_server, bad, [0, 200, 400, len(bad)])
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    report = project / "reports" / "validation.json"
    args = ["--params", str(project / "params.yaml"), *_dask(address), "--set", "data.path=data"]
    code = validate.main(args, env=clean_env)

    # The kill happened, inside a summary, to a real worker process now gone.
    killed = int(flag.read_text())
    assert not Path(f"/proc/{killed}").exists()
    with Client(address) as c:
        assert killed not in c.run(os.getpid).values()  # the nanny's new worker
    assert code in (4, 14), code  # the verdict on the data, or the cluster's failure
    if code == 14:  # ClusterError: nothing written
        assert not report.exists()
        return
    # Retried by Dask: the report the local engine writes for the whole frame.
    found = json.loads(report.read_text())
    settings = load_settings(env={}, params_file=project / "params.yaml")
    schema = validate.load_schema(project / "schema" / "breast_cancer.yaml")
    whole = bad.reset_index(drop=True)
    _, local = validate.validate_frame(whole, schema, settings, name="data")
    expected = json.loads(json.dumps({**dataclasses.asdict(local), "ok": False}))
    assert {k: v for k, v in found.items() if k != "data_md5"} == expected
    assert found["rows"] == len(whole)
    assert not list(report.parent.glob(".validation.json.*")), "a temporary report is left"
