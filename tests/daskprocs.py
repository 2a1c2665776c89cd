"""The Dask processes a test starts (`dask scheduler`, `dask worker` from the venv's CLI), each
in a process group of its own with its log, and stopped together: SIGTERM to each group (a
worker's nanny and the worker with it), then SIGKILL of a group that does not end."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import BIN

WORKER = ["--nworkers", "1", "--nthreads", "1", "--memory-limit", "600MB"]  # the tests' workers


class DaskProcesses:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        with log.open("w") as handle:
            process = subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=self.env
            )
        self.started.append(process)
        return process

    def scheduler(self, port: int, log: Path, *extra: str) -> subprocess.Popen:
        """A scheduler on 127.0.0.1:`port` (`extra`: e.g. `--protocol tls` and its files)."""
        return self.spawn(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--dashboard-address", ":0", *extra],
            log,
        )

    def worker(self, address: str, log: Path, *extra: str) -> subprocess.Popen:
        """One worker process (1 thread, 600 MB) of the scheduler at `address`, on loopback."""
        return self.spawn(
            [str(BIN / "dask"), "worker", address, *WORKER]
            + ["--host", "127.0.0.1", "--dashboard-address", ":0", *extra],
            log,
        )

    def stop(self) -> None:
        for process in reversed(self.started):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def dask_processes(**env: str) -> Iterator[DaskProcesses]:
    """Dask processes started in the block, all stopped when it ends; `env`: more of their
    environment (worker processes may start processes of their own: not daemons)."""
    processes = DaskProcesses({**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", **env})
    try:
        yield processes
    finally:
        processes.stop()
