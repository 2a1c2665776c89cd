"""Two test sessions on one machine, each with a Docker engine: neither stops the other's.

A session uses the engine that answers where the environment points (DOCKER_HOST, else the
default socket) and never stops it; when none answers it starts one of its own with
`scripts/start-docker.sh --own-engine` (tests/conftest.py `docker_engine`), whose socket, pid
file and data are its own. Here a second engine is started that way while the session's runs,
as a second session would, and stopped: the session's engine answers throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, stop_group

pytestmark = pytest.mark.docker


def test_an_engine_of_its_own_is_started_and_stopped_beside_the_sessions(docker_engine) -> None:
    import docker

    ours = docker_engine.info()
    state = Path(tempfile.mkdtemp(prefix="mlgate-own-"))  # short: a socket path has 107 bytes
    script = subprocess.Popen(
        [str(REPO / "scripts" / "start-docker.sh"), "--own-engine", "--no-registry"],
        env=os.environ | {"STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # dockerd and its containerd stay in its group
    )
    try:
        said, _ = script.communicate(timeout=300)
        log = (
            (state / "dockerd.log").read_text()[-3000:] if (state / "dockerd.log").exists() else ""
        )
        assert script.returncode == 0, said + log
        host = f"unix://{state}/docker.sock"
        assert f"DOCKER_HOST={host}" in said and "already running" not in said, said
        second = docker.DockerClient(base_url=host)
        theirs = second.info()
        # Another engine: its own daemon (its pid file), its own data. (The engine ID cannot
        # tell them apart: dockerd keeps it in /etc/docker, shared.)
        pid = int((state / "docker.pid").read_text())
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
        assert theirs["DockerRootDir"] == str(state / "data")
        assert theirs["DockerRootDir"] != ours["DockerRootDir"]
        second.close()
    finally:
        stop_group(script.pid)  # what the second session does at its end
        shutil.rmtree(state, ignore_errors=True)
    assert docker_engine.ping()  # the session's engine still answers
    assert docker_engine.info()["DockerRootDir"] == ours["DockerRootDir"]
    assert not Path(f"/proc/{pid}").exists(), "the second engine outlived its stop"
