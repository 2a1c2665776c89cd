"""The tests' fork server (tests/forkserver.py) on a bare interpreter (no imports: under a
second): one batch at a time, and what a failed test left running SIGKILLed and reaped, so the
session's one server (`mlgate_forks`) forks the next test's batch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.forkserver import fork_server

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"


def test_a_second_batch_waits_for_the_first_and_a_left_batch_is_reaped(tmp_path: Path) -> None:
    with fork_server(tmp_path, ()) as server:
        running = server.start_all([(SLEEPER, ["sleeper"], dict(os.environ))])
        assert running.line(0, 0) == "up\n"
        # Forking more now would read the first batch's exit statuses as the new pids.
        with pytest.raises(AssertionError, match="still runs"):
            server.start_all([("pass", ["x"], {})])
        server.reap()  # as after a test that failed before it waited
        assert running.wait()[0].returncode == -signal.SIGKILL
        assert not running.alive(0)
        server.reap()  # nothing left: nothing to do
        done = server.run("import sys\nprint(sys.argv[1])\n", ["echo", "next"], {})
        assert (done.returncode, done.stdout) == (0, "next\n")
