"""Registry moves that survive crashes and races, on MLflow with PostgreSQL (issue 16).

* The lock: sixteen processes take it from every starting state (no lock, a live lock, an
  expired lock, a holder being SIGKILLed); a file created with O_EXCL inside the lock is the
  oracle: a second holder at the same time fails to create it.
* The moves: `mlgate promote`, `deploy` and `rollback`, each a real subprocess SIGKILLed right
  after each registry call of its move (tracking.fault_point, every point of
  mlgate.faults.FAULT_POINTS), then run again: the registry must be in the state one clean run
  leaves, read back with plain MlflowClient calls.
* The lock's name: a user's models named like the old and the new lock name survive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlgate.faults import FAULT_POINTS
from mlgate.pipeline import deploy, promote, rollback
from mlgate.registry import audit, doctor
from mlgate.registry import moves as registry
from tests.conftest import BIN
from tests.copies import Templates, copy_version
from tests.forkserver import ForkServer, Running
from tests.integration.test_concurrency import NO_LATENCY, model_image
from tests.integration.test_gate import Registry

pytestmark = pytest.mark.docker

# seconds: long enough that no move outlasts it on a busy runner (the kill tests age a dead
# job's ticket instead of waiting its lease out, see kill_then_rerun), and over 4/3 of the
# longest one MLflow request may take with the default tracking bounds (68 s, see
# registry.pointer_lock): the default lease
LEASE = "120"

HOLDERS = 16
LOCKER = """
import os, sys, time
import mlflow
from mlgate.registry import moves as registry
uri, flags = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
client = mlflow.MlflowClient()
for name in sys.argv[3:]:
    lock = registry.PointerLock(client, name, holder=f"locker {os.getpid()}", wait=120, lease=30)
    with lock:
        # The oracle: a second holder at the same time cannot create the same file.
        fd = os.open(os.path.join(flags, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        lock.check("the critical section")
        time.sleep(0.1)
        lock.check("the end of the critical section")
        os.close(fd)
        os.unlink(os.path.join(flags, name))
    print("held", name, flush=True)
"""
KILLED_HOLDER = """
import sys
import mlflow
from mlgate.registry import moves as registry
mlflow.set_tracking_uri(sys.argv[1])
lock = registry.PointerLock(
    mlflow.MlflowClient(), sys.argv[2], holder="a holder being killed", wait=60, lease=5,
    fault_point="lock.after_ticket",
)
lock.__enter__()
"""


@pytest.fixture(scope="module")
def moves_server(mlflow_postgres: str) -> str:
    """The session's MLflow on PostgreSQL (artifacts in S3, four workers), shared with
    test_concurrency: one server start a session, each test on registered models of its own."""
    return mlflow_postgres


def lock_versions(client, name: str) -> list:
    return client.search_model_versions(f"name='{registry.lock_name(name)}'")


def test_one_holder_at_a_time_from_every_starting_state(
    moves_server, mlgate_forks: ForkServer, tmp_path
) -> None:
    import mlflow

    mlflow_postgres = moves_server
    mlflow.set_tracking_uri(mlflow_postgres)
    client = mlflow.MlflowClient()
    stamp = int(time.time() * 1000)
    names = {state: f"lock-{state}-{stamp}" for state in ("killed", "expired", "live", "none")}

    # An expired lock: a dead holder's ticket whose lease is over.
    registry.PointerLock(client, names["expired"], holder="x", wait=0, lease=1).ensure_lock_model()
    client.create_model_version(
        registry.lock_name(names["expired"]),
        source=registry.TICKET_SOURCE,
        tags={
            registry.HOLDER: "a dead holder",
            registry.EXPIRES: str(time.time() - 1),
            registry.MARKER: registry.MARKER_VALUE,
        },
    )
    # A live lock: held here until every locker has started.
    live = registry.PointerLock(client, names["live"], holder="the test", wait=0, lease=60)
    live.__enter__()
    # A holder being killed: it takes the lock and SIGKILLs itself while the lockers start.
    python = str(BIN / "python")
    victim = subprocess.Popen(
        [python, "-c", KILLED_HOLDER, mlflow_postgres, names["killed"]], stderr=subprocess.PIPE
    )
    # The lockers start once its ticket is in the registry: a dead holder's ticket is deleted
    # by the next taker, so a victim slower than all sixteen lockers (a busy runner) would
    # leave it with no taker after it, and the test would prove nothing about it.
    deadline = time.monotonic() + 300
    while not lock_versions(client, names["killed"]):
        if victim.poll() is not None:  # killed at its fault point: its ticket is there
            assert lock_versions(client, names["killed"]), victim.stderr.read()
            break
        assert time.monotonic() < deadline, "the holder being killed never took a ticket"
        time.sleep(0.2)
    flags = tmp_path / "flags"
    flags.mkdir()
    order = list(names.values())

    def locker(i: int) -> tuple[str, list[str], dict[str, str]]:
        # Every locker contends on the killed and the expired lock, half of them on each of
        # the others (the cheap states), in different orders.
        mine = [names["killed"], names["expired"], names["live" if i % 2 else "none"]]
        mine = mine[i % 3 :] + mine[: i % 3]
        return LOCKER, ["locker", mlflow_postgres, str(flags), *mine], dict(os.environ)

    # Sixteen real processes, forked at once from the session's fork server (their imports of
    # mlflow and mlgate done once there, not sixteen times on two cores).
    lockers = mlgate_forks.start_all([locker(i) for i in range(HOLDERS)])
    try:
        assert victim.wait() == -signal.SIGKILL, victim.stderr.read()
        live.__exit__(None, None, None)
    finally:
        done = lockers.wait()
    logs = "\n".join(d.stderr for d in done)
    assert all(d.returncode == 0 for d in done), logs[-4000:]
    held = [line for d in done for line in d.stdout.splitlines() if line.startswith("held")]
    wanted = {names["killed"]: HOLDERS, names["expired"]: HOLDERS}
    wanted |= {names["live"]: HOLDERS // 2, names["none"]: HOLDERS // 2}
    assert sorted(held) == sorted(f"held {n}" for n, k in wanted.items() for _ in range(k))
    assert "waiting for the lock" in logs, "the lockers never contended: the test proves nothing"
    assert "a dead holder" not in logs, "an expired ticket was waited for"
    # No ticket left: released ones deleted by their holders, expired ones by the next taker.
    for name in order:
        assert lock_versions(client, name) == [], name
    assert not list(flags.iterdir())


# A holder and a waiter of one lock, each writing a tag of its own on the model under the lock
# (the oracle: what the registry holds afterwards). The holder takes the lock at once and is
# held at its fault point; the waiter starts once the file GO exists.
LEASED = """
import os, sys, time
import mlflow
from mlgate.registry import moves as registry
role, uri, name, lease, point, go = sys.argv[1:7]
mlflow.set_tracking_uri(uri)
client = mlflow.MlflowClient()
while not os.path.exists(go):
    time.sleep(0.05)
lock = registry.PointerLock(client, name, holder=f"{role} {os.getpid()}", wait=600,
                            lease=float(lease), fault_point=point or None)
with lock:
    lock.check("writing")
    client.set_registered_model_tag(name, f"written.{role}", str(os.getpid()))
print("held", name, flush=True)
"""
# The leases of test_a_live_holder_keeps_its_lock_and_a_stopped_or_killed_one_loses_it: short,
# so the test waits little, and still eight beats a lease (a beat every 1.9 s): the paused
# holder loses its lock only if its heartbeat thread is starved for over 9 s.
SHORT_LEASE = 15


def ticket_of(client, name: str):
    left = registry.tickets_of(lock_versions(client, name))
    return left[0] if left else None


def until(what: str, ready, children, watched: tuple[int, ...], seconds: float = 600) -> None:
    """Wait (bounded, generously: a wait, not a timed assertion) until `ready()` is true; a
    `watched` child that exited meanwhile fails the test at once, with what it said."""
    deadline = time.monotonic() + seconds
    while not ready():
        for i in watched:
            err = children.files[i][2]
            assert children.alive(i), f"child {i} exited: {err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def test_a_live_holder_keeps_its_lock_and_a_stopped_or_killed_one_loses_it(
    moves_server, mlgate_forks: ForkServer, tmp_path
) -> None:
    """The lease is the holder's heartbeat (registry.PointerLock._beat). Two locks, each with
    a holder held at `lock.after_ticket` and a waiter:

    * alive (paused, its threads running): seen holding past the lease first written on its
      ticket, its waiter still waiting; then SIGKILLed, and the waiter takes over once the last
      renewed lease ran out;
    * stopped (SIGSTOP, the whole process, longer than its lease: starved to nothing): its
      waiter takes over after the lease; on SIGCONT the holder finds its lease gone and stops
      before it writes (exit 1 here, `TrackingError`: exit 5 from the CLI), so the model under
      the lock holds the waiter's write only."""
    import mlflow

    mlflow.set_tracking_uri(moves_server)
    client = mlflow.MlflowClient()
    stamp = int(time.time() * 1000)
    alive, stopped_name = f"lease-alive-{stamp}", f"lease-stopped-{stamp}"
    for name in (alive, stopped_name):
        client.create_registered_model(name)
    now, go = tmp_path / "now", tmp_path / "go"
    now.touch()  # the holders start at once, the waiters on `go`
    env, never = dict(os.environ), tmp_path / "never"

    def job(role: str, name: str, point: str, start: Path):
        argv = ["leased", role, moves_server, name, str(SHORT_LEASE), point, str(start)]
        return LEASED, argv, env

    jobs = [
        job("holder", alive, f"pause:lock.after_ticket:{never}", now),
        job("holder", stopped_name, "stop:lock.after_ticket", now),
        job("waiter", alive, "", go),
        job("waiter", stopped_name, "", go),
    ]
    children = mlgate_forks.start_all(jobs)
    try:
        until(
            "the alive holder holds",
            lambda: ticket_of(client, alive) is not None,
            children,
            (0, 1, 2, 3),
        )
        first = ticket_of(client, alive)
        until(
            "the stopped holder is stopped",
            lambda: stopped_pid(children.pids[1]),
            children,
            (0, 1, 2, 3),
        )
        assert ticket_of(client, stopped_name) is not None
        go.touch()

        # Stopped past its lease: its waiter takes over and writes; then the holder runs again.
        assert children.line(3, 0) == f"held {stopped_name}\n"
        os.kill(children.pids[1], signal.SIGCONT)

        # Alive past the lease first written on its ticket: renewed, the waiter still waiting.
        until(
            "the first lease of the alive holder is over",
            lambda: time.time() > first.expires,
            children,
            (0, 2),
        )
        held = ticket_of(client, alive)
        assert held is not None and held.version == first.version and held.expires > time.time()
        assert children.alive(2) and "written.waiter" not in client.get_registered_model(alive).tags
        waiting = children.files[2][2].read_text()
        assert f"held by holder {children.pids[0]}" in waiting, waiting
        # Then it dies: its waiter takes over once the renewed lease runs out.
        os.kill(children.pids[0], signal.SIGKILL)
    except BaseException:
        children.kill()  # what a failure left running
        raise
    finally:
        done = children.wait()
    codes = [d.returncode for d in done]
    assert codes == [-signal.SIGKILL, 1, 0, 0], [d.stderr[-2000:] for d in done]
    assert "ran out before writing" in done[1].stderr, done[1].stderr[-2000:]
    assert "held" not in done[1].stdout
    assert done[2].stdout == f"held {alive}\n" and done[3].stdout == f"held {stopped_name}\n"
    for name in (alive, stopped_name):
        written = {k for k in client.get_registered_model(name).tags if k.startswith("written.")}
        assert written == {"written.waiter"}, (name, written)
        assert lock_versions(client, name) == [], name  # the dead tickets deleted by the waiters


def stopped_pid(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_one_move_reaches_every_registry_fault_point_in_order(moves_server, monkeypatch) -> None:
    """One staging move from a holder to another, in process (seconds): every point of
    FAULT_POINTS is reached, once, in the order the list gives. So the kill tests, which
    enumerate the list (promote) or the points where a mover's own data is written
    (MOVER_POINTS), kill a move where it has those points, and no listed point is dead code."""
    import mlflow

    from mlgate import faults

    client = mlflow.MlflowClient(moves_server)
    name = f"points-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=registry.TICKET_SOURCE)
    client.set_registered_model_alias(name, "staging", "1")
    client.transition_model_version_stage(name, "1", "Staging")
    reached: list[str] = []
    monkeypatch.setattr(faults, "reach", lambda point, setting: reached.append(point))
    # A lease no slow server outlasts: nothing else contends for this lock.
    lock = registry.PointerLock(client, name, holder="points test", wait=60, lease=900)
    with lock:
        registry.converge(client, name, lock=lock)
        registry.move_alias(
            client,
            name,
            "staging",
            "2",
            lock=lock,
            tags={"mlgate.promotion": "staging"},
            previous="1",
            previous_tags={"mlgate.promotion.superseded_by": "2"},
        )
    assert reached == list(faults.FAULT_POINTS)
    assert str(client.get_registered_model(name).aliases["staging"]) == "2"


# --- kill tests of the moves --------------------------------------------------------------


@dataclass
class Site:
    models: Registry
    env: dict[str, str]
    champion: str
    a: str
    b: str
    # The kill tests' processes are forked from it, their imports done (tests/forkserver.py):
    # the session's `mlgate_forks`
    forks: ForkServer

    def versions(self) -> dict[str, object]:
        return {
            str(v.version): v
            for v in self.models.client.search_model_versions(f"name='{self.models.model}'")
        }

    def holder(self, alias: str) -> str | None:
        aliases = self.models.client.get_registered_model(self.models.model).aliases
        return str(aliases[alias]) if alias in aliases else None

    def history(self, alias: str) -> set[str]:
        tags = self.models.client.get_registered_model(self.models.model).tags
        return {k for k in tags if k.startswith(f"mlgate.history.{alias}.")}

    def args(self, *extra: str) -> list[str]:
        return self.models.args(*extra)

    def run(self, command: str, *args: str, fault: str | None = None):
        env = self.env | ({"MLGATE_TRACKING_FAULT_POINT": fault} if fault else {})
        # `mlgate COMMAND ...`, a real process, minus the imports
        return self.forks.mlgate([command, *self.args(), *args], env)

    def doctor(self, *extra: str) -> int:
        return doctor.main([*self.args(), *extra], env=self.env)

    def no_staging(self) -> None:
        """Staging on no version, stages agreeing (doctor --repair archives the old one)."""
        client = self.models.client
        if self.holder("staging"):
            client.delete_registered_model_alias(self.models.model, "staging")
        assert self.doctor("--repair") in (0, 12)
        assert self.doctor() == 0


@pytest.fixture(scope="module")
def site(
    trained_on_postgres: Templates,
    clean_env_module,
    docker_engine,
    container_registry,
    mlgate_forks: ForkServer,
) -> Site:
    """A champion in Production and two better candidates, evaluated against it, each with
    its image pushed and deployed once (so both can be rolled back to). The versions are
    copies of the session's trained templates (tests/copies.py), on a model of this module's
    own: the moves are under test, not the training."""
    templates = trained_on_postgres
    env = (
        clean_env_module
        | container_registry.env()
        | {"MLGATE_TRACKING_LOCK_LEASE": LEASE, "MLGATE_TRACKING_LOCK_WAIT": "60"}
    )
    models = Registry(templates.project, templates.server, env)
    repository = f"{container_registry.host}/mlgate/{models.model}"
    env["MLGATE_DEPLOY_IMAGE"] = repository
    champion, a, b = (
        copy_version(models.client, templates, kind, models.model)
        for kind in ("weak", "better", "better")
    )
    for version in (champion, a, b):
        model_image(docker_engine, models, version, repository, container_registry)
    # The moves are under test, not the models: no latency check (test_concurrency says why).
    assert models.evaluate(champion, *NO_LATENCY) == 0 and models.promote(champion) == 0
    site = Site(models, env, champion, a, b, mlgate_forks)
    for version in (a, b, champion):  # each deployed once; the champion in Production last
        flags = ("--set", "deploy.require_staging=false")
        argv = [*site.args(*flags), "--candidate-version", version, "--approved-by", "alice"]
        assert deploy.main(argv, env=env) == 0
    for version in (a, b):
        assert models.evaluate(version, *NO_LATENCY) == 0  # against the champion in Production
    assert site.holder("production") == champion and site.holder("staging") == champion
    return site


def converged(site: Site, alias: str, target: str, previous: str, history: set[str]) -> dict:
    """The state one clean move of `alias` from `previous` to `target` leaves, read back with
    plain MLflow calls; the tags of the target are returned for the caller's own checks."""
    versions = site.versions()
    stage = {"staging": "Staging", "production": "Production"}[alias]
    assert site.holder(alias) == target
    production, staging = site.holder("production"), site.holder("staging")
    assert versions[target].current_stage == ("Production" if target == production else stage)
    expected_previous = (
        "Production" if previous == production else "Staging" if previous == staging else "Archived"
    )
    assert versions[previous].current_stage == expected_previous
    for active in ("Production", "Staging"):  # one version per stage
        assert len([v for v in versions.values() if v.current_stage == active]) <= 1, active
    new = site.history(alias) - history
    assert len(new) == 1 and next(iter(new)).endswith(f".v{target}"), new
    event = json.loads(site.models.client.get_registered_model(site.models.model).tags[new.pop()])
    assert (event["version"], event["previous"]) == (target, previous)
    assert not [k for v in versions.values() for k in v.tags if k.startswith("mlgate.pending.")]
    assert lock_versions(site.models.client, site.models.model) == [], "a ticket is left"
    return versions


def kill_then_rerun(site: Site, command: str, args: list[str], point: str):
    killed = site.run(command, *args, fault=point)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-3000:])
    assert f"fault injection: SIGKILL at {point}" in killed.stderr
    left = lock_versions(site.models.client, site.models.model)
    assert len(left) == 1, "the dead job's ticket is left, as a real kill leaves it"
    # Its lease then runs out: the expiry written on the ticket is moved into the past, as the
    # clock would move past it after LEASE s. The re-run reads that ticket as it would read
    # one that aged (registry.tickets_of compares the tag with the time), so what it does next
    # is the same; that a waiter really waits out a dead holder's live lease is proven by
    # test_one_holder_at_a_time_from_every_starting_state (a SIGKILLed holder, 16 lockers).
    (ticket,) = registry.tickets_of(left)
    lock = registry.lock_name(site.models.model)
    past = str(time.time() - 1)
    site.models.client.set_model_version_tag(lock, str(ticket.version), registry.EXPIRES, past)
    return killed


# Nine kills, each a process forked from `mlgate_forks`, and in-process re-runs (the dead job's lease is
# aged, not waited).
@pytest.mark.timeout(2400)
def test_promote_killed_after_each_registry_call_converges(site: Site, capsys) -> None:
    models = site.models
    # The lock's old name and its new one, taken by a user's models, are never touched.
    old = f"{models.model}.mlgate-lock"
    models.client.create_registered_model(old)
    for _ in range(2):
        models.client.create_model_version(old, source=registry.TICKET_SOURCE)
    for point in FAULT_POINTS:
        previous = site.holder("staging")
        target = site.a if previous != site.a else site.b
        history = site.history("staging")
        args = ["--candidate-version", target]
        if "mlgate.promotion.superseded_by" in site.versions()[previous].tags:
            # From an earlier round of a <-> b: the move would find it already written.
            models.client.delete_model_version_tag(
                models.model, previous, "mlgate.promotion.superseded_by"
            )
        kill_then_rerun(site, "promote", args, point)
        assert promote.main([*site.args(), *args], env=site.env) == 0, capsys.readouterr().err
        versions = converged(site, "staging", target, previous, history)
        tags = versions[target].tags
        assert tags["mlgate.promotion"] == "staging", point
        assert tags["mlgate.promotion.replaced"] == previous, point
        assert versions[previous].tags["mlgate.promotion.superseded_by"] == target, point
    assert len(models.client.search_model_versions(f"name='{old}'")) == 2

    # A model named like the new lock, without mlgate's marker: refused, never used or deleted.
    lock = registry.lock_name(models.model)
    models.client.rename_registered_model(lock, lock + ".kept")
    try:
        models.client.create_registered_model(lock, tags={"owner": "data team"})
        models.client.create_model_version(lock, source=registry.TICKET_SOURCE)
        target = site.a if site.holder("staging") != site.a else site.b
        assert promote.main([*site.args(), "--candidate-version", target], env=site.env) == 2
        err = capsys.readouterr().err
        assert f"rename the registered model '{lock}'" in err
        assert site.holder("staging") != target
        assert len(models.client.search_model_versions(f"name='{lock}'")) == 1
        models.client.delete_registered_model(lock)
    finally:
        models.client.rename_registered_model(lock + ".kept", lock)


# Promote, deploy and rollback move a pointer through the same registry code (PointerLock,
# registry.move_alias, registry.converge): the lock's ticket, the stage set and archived, the
# history event, the pending record cleared are the same calls whoever moves. Promote is killed
# after every one of them (FAULT_POINTS, above). Deploy and rollback differ only in what their
# move carries: their own pending record (what the re-run finishes), the commit point (where
# doctor sees the split pointers), and their own tags on the new and the previous holder. They
# are killed there; each kill is a forked process, each re-run runs in the test's interpreter.
MOVER_POINTS: tuple[str, ...] = (
    "move.after_pending",
    "move.after_alias",
    "finish.after_tag",
    "finish.after_previous_tag",
)
assert set(MOVER_POINTS) < set(FAULT_POINTS)


# Four kills (forked processes) and re-runs.
@pytest.mark.timeout(2400)
def test_deploy_killed_after_each_registry_call_converges(site: Site, capsys) -> None:
    """Deploy killed at each point where its move differs from promote's (MOVER_POINTS), then
    re-run: the state one clean deploy leaves, its own tags on both versions."""
    site.no_staging()
    flags = ["--set", "deploy.require_staging=false", "--approved-by", "bob"]
    for point in MOVER_POINTS:
        previous = site.holder("production")
        target = site.a if previous != site.a else site.b
        history = site.history("production")
        args = ["--candidate-version", target, *flags]
        kill_then_rerun(site, "deploy", args, point)
        assert deploy.main([*site.args(), *args], env=site.env) == 0, capsys.readouterr().err
        versions = converged(site, "production", target, previous, history)
        tags = versions[target].tags
        assert tags["mlgate.production.previous"] == previous, point
        assert tags["mlgate.production.approved_by"] == "bob", point
        assert tags["mlgate.production.image"] == tags["mlgate.image.ref"], point
        assert versions[previous].tags["mlgate.production.replaced_by"] == target, point


# Four kills (forked processes) and re-runs.
@pytest.mark.timeout(2400)
def test_rollback_killed_after_each_registry_call_converges(site: Site, capsys) -> None:
    """Rollback killed at each point where its move differs from promote's (MOVER_POINTS),
    doctor's view of the split pointers at the commit point included, then re-run."""
    site.no_staging()
    for point in MOVER_POINTS:
        previous = site.holder("production")
        target = site.a if previous != site.a else site.b
        history = site.history("production")
        args = ["--to", target, "--reason", f"killed at {point}", "--approved-by", "carol"]
        kill_then_rerun(site, "rollback", args, point)
        if point == "move.after_alias":
            # doctor sees the split pointers, repairs them as the re-run would, then agrees.
            assert site.doctor() == 12
            out = capsys.readouterr().out
            assert f"version {target} holds 'production' but its stage is" in out
            assert site.doctor("--repair") == 12
            assert "found and repaired" in capsys.readouterr().err
            assert site.doctor() == 0
        assert rollback.main([*site.args(), *args], env=site.env) == 0, capsys.readouterr().err
        versions = converged(site, "production", target, previous, history)
        tags = versions[target].tags
        assert tags["mlgate.rollback.from"] == previous, point
        assert tags["mlgate.rollback.reason"] == f"killed at {point}", point
        withdrawn = versions[previous].tags
        assert withdrawn["mlgate.rollback.rolled_back"] == "true", point
        assert withdrawn["mlgate.production.replaced_by"] == target, point


def test_a_bad_fault_point_is_a_usage_error(site: Site) -> None:
    done = site.run("rollback", "--reason", "x", "--approved-by", "x", fault="move.nowhere")
    assert done.returncode == 2 and "is not a fault point" in done.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([str(Path(__file__)), *sys.argv[1:]]))


# --- mixed races -----------------------------------------------------------------------------

RACER = """
import contextlib, io, json, os, sys, time
from mlgate.pipeline import deploy, promote, rollback
barrier, plan = sys.argv[1], json.loads(sys.argv[2])
mains = {"promote": promote.main, "deploy": deploy.main, "rollback": rollback.main}
for round_, (command, argv) in enumerate(plan):
    while not os.path.exists(f"{barrier}.{round_}"):
        time.sleep(0.05)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = mains[command](argv)
    print(json.dumps({"round": round_, "command": command, "code": code, "err": err.getvalue()}),
          flush=True)
"""
RACERS = 16
ROUNDS = 3  # issue 16: three rounds


# Sixteen processes and 48 serialised moves: minutes on a loaded machine.
@pytest.mark.timeout(2400)
def test_sixteen_mixed_racers_three_rounds(site: Site, tmp_path) -> None:
    """Promotions, deploys and rollbacks of the same model race, 16 processes at once, three
    rounds. Each round starts from the champion in Production, so the promotions (evaluated
    against it) are valid only until a deploy or rollback lands: those that queue behind one are
    refused as stale (exit 6), naming the version that won Production.

    In every round the racers' kinds ((i + round) % 3) give each of promote, deploy and rollback
    five or six racers, so every pairing of movers contends in each round, and over the three
    rounds every racer has been each kind once; rounds two and three are the second path (a
    reset after a race, and interpreters that already ran a move running another)."""
    site.no_staging()
    env = site.env | {"MLGATE_TRACKING_LOCK_WAIT": "600"}
    deploy_flags = ["--set", "deploy.require_staging=false", "--approved-by", "dave"]

    def plan(i: int) -> list:
        out = []
        for r in range(ROUNDS):
            target = (site.a, site.b)[(i + r) % 2]
            kind = ("promote", "deploy", "rollback")[(i + r) % 3]
            args = [*site.args(), "--candidate-version", target]
            if kind == "deploy":
                args += deploy_flags
            if kind == "rollback":
                args = [*site.args(), "--to", target, "--reason", f"race {r}", "--approved-by", "e"]
            out.append((kind, args))
        return out

    barrier = tmp_path / "round"
    # Sixteen real processes, each living through the three rounds, forked from the session's
    # fork server (their imports done once, not sixteen times on two cores); reaped before the
    # test ends, killed first if it fails (and by `forked_children_reaped` if even that fails).
    racers = site.forks.start_all(
        [(RACER, ["racer", str(barrier), json.dumps(plan(i))], env) for i in range(RACERS)]
    )
    try:
        for r in range(ROUNDS):
            # Each round starts from the champion in Production, no staging.
            back = [*site.args(), "--to", site.champion, "--reason", "reset", "--approved-by", "t"]
            if site.holder("production") != site.champion:
                assert rollback.main(back, env=env) == 0
            site.no_staging()
            (tmp_path / f"round.{r}").touch()
            results = [json.loads(racers.line(i, r)) for i in range(RACERS)]
            assert all(x["round"] == r for x in results)
            for x in results:
                assert x["code"] in (0, 6), x  # success, or a stale decision refused
                assert "Traceback" not in x["err"], x["err"]
                if x["code"] == 6:  # names the version that took the champion's place
                    assert x["command"] == "promote" and "the champion changed" in x["err"], x
                    winner = re.search(r"was (\d+), now (\d+|none)", x["err"])
                    assert winner and winner[1] == site.champion != winner[2], x["err"]
            codes = [x["code"] for x in results]
            assert 0 in codes, results
            # Exactly one holder per alias, its stage agreeing; nothing half done, no ticket.
            versions = site.versions()
            production, staging = site.holder("production"), site.holder("staging")
            assert versions[production].current_stage == "Production"
            if staging and staging != production:
                assert versions[staging].current_stage == "Staging"
            for active in ("Production", "Staging"):
                assert len([v for v in versions.values() if v.current_stage == active]) <= 1
            assert not [
                k for v in versions.values() for k in v.tags if k.startswith("mlgate.pending.")
            ]
            assert lock_versions(site.models.client, site.models.model) == []
            assert site.doctor() == 0
    finally:
        racers.kill()  # those still waiting for a round, after a failure
        done = racers.wait()
    assert [d.returncode for d in done] == [0] * RACERS, [d.stderr[-2000:] for d in done]


# --- approvals racing: two gated deploys, a deploy and a rollback ---------------------------

# One mover of a race: it starts once the file `start` exists (none: at once) and runs
# `mlgate COMMAND ARGV` in-process (a real process forked from the session's fork server).
RACING = """
import json, os, sys, time
from mlgate.pipeline import deploy, promote, rollback
start, command, argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
while start and not os.path.exists(start):
    time.sleep(0.05)
sys.exit({"promote": promote.main, "deploy": deploy.main, "rollback": rollback.main}[command](argv))
"""


def refusals(site: Site) -> list[dict]:
    """The history's refused moves (`registry.record_refusal`), oldest first."""
    tags = site.models.client.get_registered_model(site.models.model).tags
    keys = sorted(k for k in tags if k.startswith(f"{registry.HISTORY}{registry.REFUSED}."))
    return [json.loads(tags[k]) for k in keys]


# Two races of five real processes, each held at known points: minutes on a loaded machine.
@pytest.mark.timeout(2400)
def test_racing_approvals_one_wins_whole_and_the_history_says_what_happened_to_both(
    site: Site, tmp_path, capsys
) -> None:
    """1. Two gated deploys of different versions, both approved and past their checks, wait
    for the lock while a promotion moves staging between them: the deploy of the version
    staging left is refused (exit 6), the other deploys; whichever takes the lock first.
    2. A gated deploy waits for the lock while a rollback moves Production: the deploy's
    decision is stale (exit 6), as is a second rollback `--from` the version withdrawn.
    At the end alias, stage, image record and history agree, and the history holds a refusal
    event for each loser beside the winners' moves. The oracle: MLflow's own reads."""
    client, model = site.models.client, site.models.model
    env = site.env | {"MLGATE_TRACKING_LOCK_WAIT": "600"}  # held as long as the test needs
    back = [*site.args(), "--to", site.champion, "--reason", "reset", "--approved-by", "t"]
    if site.holder("production") != site.champion:
        assert rollback.main(back, env=env) == 0
    site.no_staging()
    before = len(refusals(site))

    def job(start: Path | None, command: str, args: list[str], fault: str = "") -> tuple:
        point = {"MLGATE_TRACKING_FAULT_POINT": fault} if fault else {}
        argv = [*site.args(), *args]
        return RACING, ["racing", str(start or ""), command, json.dumps(argv)], env | point

    def until_said(running: Running, i: int, words: str) -> None:
        until(words, lambda: words in running.files[i][2].read_text(), running, (i,))

    approved = ["--approved-by", "alice"]
    # 1. Staging on a, both deploys approved: a waits for the lock, b starts once staging is b.
    assert site.models.promote(site.a) == 0 and site.holder("staging") == site.a
    go = {name: tmp_path / name for name in ("deploy-a", "release", "deploy-b")}
    racers = site.forks.start_all(
        [
            job(
                None,
                "promote",
                ["--candidate-version", site.b],
                f"pause:lock.after_ticket:{go['release']}",
            ),
            job(go["deploy-a"], "deploy", ["--candidate-version", site.a, *approved]),
            job(go["deploy-b"], "deploy", ["--candidate-version", site.b, *approved]),
        ]
    )
    try:
        until_said(racers, 0, "fault injection: paused at lock.after_ticket")
        go["deploy-a"].touch()
        until_said(racers, 1, "waiting for the lock")  # past its checks: staging was a
        go["release"].touch()
        until("the promotion of b", lambda: site.holder("staging") == site.b, racers, ())
        go["deploy-b"].touch()
    except BaseException:
        racers.kill()  # reaped below; the test fails with what they said
        raise
    finally:
        promoted, deploy_a, deploy_b = racers.wait()
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert deploy_b.returncode == 0, deploy_b.stderr[-3000:]
    assert deploy_a.returncode == 6, deploy_a.stderr[-3000:]
    assert f"version {site.a} does not hold 'staging' (staging is {site.b})" in deploy_a.stderr
    assert "Traceback" not in deploy_a.stderr + deploy_b.stderr
    assert site.holder("production") == site.b

    # 2. b in Production; a evaluated against it and staged. A rollback --from b to the
    # champion holds the lock while the deploy of a and a second rollback --from b (to a)
    # queue.
    assert site.models.evaluate(site.a, *NO_LATENCY) == 0 and site.models.promote(site.a) == 0
    go = {name: tmp_path / name for name in ("queue", "release-2")}
    withdraw = ["--from", site.b, "--reason", "bad b", "--approved-by", "carol"]
    racers = site.forks.start_all(
        [
            job(
                None,
                "rollback",
                ["--to", site.champion, *withdraw],
                f"pause:lock.after_ticket:{go['release-2']}",
            ),
            job(go["queue"], "deploy", ["--candidate-version", site.a, *approved]),
            # --to A: not a re-run of the first (--to the champion would find it done)
            job(go["queue"], "rollback", ["--to", site.a, *withdraw]),
        ]
    )
    try:
        until_said(racers, 0, "fault injection: paused at lock.after_ticket")
        go["queue"].touch()
        until_said(racers, 1, "waiting for the lock")  # past its checks: b was in Production
        go["release-2"].touch()
    except BaseException:
        racers.kill()
        raise
    finally:
        rolled, deploy_a, second = racers.wait()
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    assert deploy_a.returncode == 6, deploy_a.stderr[-3000:]
    assert (
        f"version {site.a} was evaluated against version {site.b}, but version "
        f"{site.champion} is in Production now: the comparison is stale" in deploy_a.stderr
    )
    assert second.returncode == 6, second.stderr[-3000:]
    assert f"Production holds version {site.champion} now, not version {site.b}" in second.stderr

    # One holder, its stage, its verified image record; the history says what happened.
    versions = site.versions()
    assert site.holder("production") == site.champion
    assert [n for n, v in versions.items() if v.current_stage == "Production"] == [site.champion]
    held = versions[site.champion].tags
    assert held["mlgate.production.image"] == held["mlgate.image.ref"]
    assert held["mlgate.rollback.from"] == site.b
    assert versions[site.b].tags["mlgate.rollback.rolled_back"] == "true"
    assert "mlgate.production.approved_by" in versions[site.b].tags  # its deploy, recorded
    assert not [k for v in versions.values() for k in v.tags if k.startswith("mlgate.pending.")]
    assert lock_versions(client, model) == [] and site.doctor() == 0
    moves = [
        json.loads(v)
        for k, v in client.get_registered_model(model).tags.items()
        if k.startswith("mlgate.history.production.")
    ]
    last = sorted(moves, key=lambda e: e["at"])[-2:]
    assert [(e["version"], e["previous"]) for e in last] == [
        (site.b, site.champion),
        (site.champion, site.b),
    ]
    refused = [
        (e["version"], e["tags"]["mlgate.refused.command"], e["tags"]["mlgate.refused.reason"])
        for e in refusals(site)[before:]
    ]
    assert len(refused) == 3, refused
    assert refused[0][:2] == (site.a, "deploy") and f"staging is {site.b}" in refused[0][2]
    assert sorted(r[:2] for r in refused[1:]) == sorted([(site.a, "deploy"), (site.b, "rollback")])
    assert all(
        f"version {site.champion} is in Production now" in r[2]
        or f"Production holds version {site.champion} now" in r[2]
        for r in refused[1:]
    )
    # `mlgate lineage A --json`: both of its refused deploys are in its history.
    capsys.readouterr()
    assert audit.main([*site.args(), str(site.a), "--json"], env=env) == 0
    record = json.loads(capsys.readouterr().out)
    assert [e.get("outcome") for e in record["history"]].count(registry.REFUSED) >= 2


# --- the database stopped mid-move ----------------------------------------------------------

MOVER = """
import sys
import mlflow
from mlgate.registry import moves as registry
uri, name, version, fault = sys.argv[1:5]
mlflow.set_tracking_uri(uri)
client = mlflow.MlflowClient()
lock = registry.PointerLock(client, name, holder="mover", wait=60, lease=30,
                            fault_point=fault or None)
with lock:
    registry.converge(client, name, lock=lock)
    holder = client.get_registered_model(name).aliases.get("staging")
    if str(holder) != version:
        registry.move_alias(client, name, "staging", version, lock=lock,
                            tags={"mlgate.promotion": "staging"},
                            previous=str(holder) if holder else None,
                            previous_tags={"mlgate.promotion.superseded_by": version})
print("moved", flush=True)
"""


class Cluster:
    """A PostgreSQL cluster of this test's own (the session one is shared), to stop and start."""

    def __init__(self) -> None:
        import tempfile

        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        assert bins, "install PostgreSQL (apt-get install postgresql)"
        self.bindir = bins[-1].parent
        self.root = Path(tempfile.mkdtemp(prefix="mlgate-pg-stop-"))
        self.owner: list[str] = []
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.root, "postgres", "postgres")
            self.owner = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        from tests.conftest import free_port

        self.port = free_port()
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "mlgate"]
        subprocess.run([*self.owner, *initdb, "--auth=trust"], check=True, capture_output=True)
        self.start()
        subprocess.run(
            [*self.owner, str(self.bindir / "createdb"), "-h", "127.0.0.1"]
            + ["-p", str(self.port), "-U", "mlgate", "mlflow"],
            check=True,
            capture_output=True,
        )

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://mlgate@127.0.0.1:{self.port}/mlflow"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.pg_ctl("-w", "-o", options, "-l", str(self.root / "log"), "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")


def stopped(process: subprocess.Popen) -> bool:
    state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "T"


class Stoppable:
    """An MLflow server (two workers) on a PostgreSQL cluster, both of this module's own, for the
    tests that take the database or the server away mid-move: the session's are shared."""

    def __init__(self, root: Path) -> None:
        from tests.conftest import free_port

        self.cluster, self.root = Cluster(), root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start the server (again, on the same port and store: a restarted server)."""
        from tests.conftest import PATIENT_WORKERS, start

        self.server = start(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--backend-store-uri", self.cluster.uri]
            + ["--artifacts-destination", str(self.root / "a")]
            + ["--workers", "2", *PATIENT_WORKERS],
            f"{self.uri}/health",
            self.root / "server.log",
            seconds=240,
        )

    def signal(self, signum: int) -> None:
        """`signum` to the whole server: uvicorn's supervisor and its workers (its group)."""
        assert self.server is not None
        os.killpg(self.server.pid, signum)
        if signum == signal.SIGKILL:
            self.server.wait()
            self.server = None


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory) -> Iterator[Stoppable]:
    import shutil

    from tests.conftest import stop

    own = Stoppable(tmp_path_factory.mktemp("stoppable"))
    try:
        yield own
    finally:
        if own.server is not None:
            os.killpg(own.server.pid, signal.SIGCONT)  # a test that failed while it was stopped
            stop(own.server)
        own.cluster.stop()
        shutil.rmtree(own.cluster.root, ignore_errors=True)


def test_the_database_stopped_mid_move_then_back_converges(stoppable: Stoppable) -> None:
    import mlflow

    cluster, uri = stoppable.cluster, stoppable.uri
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    name = "db-stop"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=registry.TICKET_SOURCE)
    python, env = str(BIN / "python"), dict(os.environ)
    assert subprocess.run([python, "-c", MOVER, uri, name, "1", ""], env=env).returncode == 0

    # The move of staging to version 2 stops right after its alias; the database goes away.
    mover = subprocess.Popen(
        [python, "-c", MOVER, uri, name, "2", "stop:move.after_alias"],
        env=env | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"},  # fail soon once it is gone
        stderr=subprocess.PIPE,
        text=True,
    )
    while not stopped(mover):
        assert mover.poll() is None, mover.stderr.read()
        time.sleep(0.1)
    cluster.stop()
    mover.send_signal(signal.SIGCONT)
    _, err = mover.communicate()
    assert mover.returncode != 0 and "Traceback" in err  # the next registry call failed
    cluster.start()

    # Split, as the database left it: alias on 2, stage on 1, the move pending.
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    assert str(client.get_registered_model(name).aliases["staging"]) == "2"
    assert versions["1"].current_stage == "Staging" and versions["2"].current_stage == "None"
    assert "mlgate.pending.staging" in versions["2"].tags

    # The re-run (after the dead mover's lease) converges.
    done = subprocess.run(
        [python, "-c", MOVER, uri, name, "2", ""], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    assert versions["2"].current_stage == "Staging"
    assert versions["1"].current_stage == "Archived"
    assert versions["2"].tags["mlgate.promotion"] == "staging"
    assert versions["1"].tags["mlgate.promotion.superseded_by"] == "2"
    assert not [k for v in versions.values() for k in v.tags if k.startswith("mlgate.pending")]
    history = [k for k in client.get_registered_model(name).tags if k.endswith(".v2")]
    assert len(history) == 1


# --- the MLflow server gone mid-move ------------------------------------------------------

# A move of `staging` as mlgate makes one: its settings (tracking bounds from MLGATE_TRACKING_*,
# the lock), tracking.connect, and errors reported by cli.run as every stage reports them.
SERVED_MOVER = """
import logging, os, sys
from pathlib import Path
# urllib3's own record of each retry ("Retrying (Retry(...)) after connection broken by ..."),
# on stderr: the test's proof that a request was retried
logging.getLogger("urllib3.connectionpool").addHandler(logging.StreamHandler())
from mlgate import cli
from mlgate.registry import moves as registry
from mlgate.registry import tracking
from mlgate.settings import load_settings
version, cwd = sys.argv[1:3]

def action():
    settings = load_settings(env=os.environ, cwd=Path(cwd))
    client = tracking.connect(settings, experiment=False)
    name = settings.model.name
    with registry.pointer_lock(client, settings, "a move of staging") as lock:
        registry.converge(client, name, lock=lock)
        with tracking.errors(f"reading {name}"):
            holder = client.get_registered_model(name).aliases.get("staging")
        if str(holder) != version:
            registry.move_alias(client, name, "staging", version, lock=lock,
                                tags={"mlgate.promotion": "staging"},
                                previous=str(holder) if holder else None,
                                previous_tags={"mlgate.promotion.superseded_by": version})
    print("moved", flush=True)

sys.exit(cli.run(action))
"""


def test_the_mlflow_server_gone_mid_move_is_retried_then_refused_and_the_rerun_converges(
    stoppable: Stoppable, mlgate_forks: ForkServer, clean_env, tmp_path
) -> None:
    """The server itself goes away between two registry calls of a move (not its database):

    1. stopped (SIGSTOP of its supervisor and workers: connections hang) for longer than a
       request's timeout, then back: MLflow's bounded retries carry the move through;
    2. SIGKILLed and not back: the move stops with exit 5 and a clear error, in bounded time;
       the server restarted on the same store, the re-run completes the move from its pending
       record. The oracle: MLflow's own reads of aliases, stages, tags and history."""
    import mlflow

    name = "server-gone"
    client = mlflow.MlflowClient(stoppable.uri)
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, source=registry.TICKET_SOURCE)
    env = clean_env | {
        "MLGATE_TRACKING_URI": stoppable.uri,
        "MLGATE_MODEL_NAME": name,
        # 4 attempts of 3 s, sleeps 0-4 s: at most 22 s a request (tracking.request_budget)
        "MLGATE_TRACKING_TIMEOUT": "3",
        "MLGATE_TRACKING_RETRIES": "3",
        "MLGATE_TRACKING_LOCK_LEASE": "60",
    }

    def move(version: str, fault: str = "", **extra: str) -> Running:
        point = {"MLGATE_TRACKING_FAULT_POINT": fault} if fault else {}
        return mlgate_forks.start_all(
            [(SERVED_MOVER, ["mover", version, str(tmp_path)], env | point | extra)]
        )

    def until_stopped(mover: Running) -> None:
        stat = Path(f"/proc/{mover.pids[0]}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
            assert mover.alive(0), mover.files[0][2].read_text()[-3000:]
            time.sleep(0.1)

    def state() -> tuple[dict, dict, dict]:
        model = client.get_registered_model(name)
        versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
        return {k: str(v) for k, v in model.aliases.items()}, versions, dict(model.tags)

    (first,) = move("1").wait()
    assert first.returncode == 0, first.stderr[-3000:]

    # 1. The mover stopped right after its pending record; the server stopped; the mover goes
    # on into a server that accepts connections and answers none, for longer than a timeout.
    mover = move("2", "stop:move.after_pending")
    until_stopped(mover)
    stoppable.signal(signal.SIGSTOP)
    try:
        os.kill(mover.pids[0], signal.SIGCONT)
        time.sleep(8)  # over two timeouts: the mover's request times out and is retried
    finally:
        stoppable.signal(signal.SIGCONT)
    (done,) = mover.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Retrying" in done.stderr, "no request was retried: the test proved nothing"
    aliases, versions, tags = state()
    assert aliases["staging"] == "2" and versions["2"].current_stage == "Staging"
    assert versions["1"].current_stage == "Archived"
    assert not [k for v in versions.values() for k in v.tags if k.startswith("mlgate.pending")]
    assert len([k for k in tags if k.endswith(".v2")]) == 1

    # 2. Stopped right after the alias (the commit point); the server SIGKILLed, not back.
    # One retry: the server is gone for good, so more would only wait longer.
    mover = move("3", "stop:move.after_alias", MLGATE_TRACKING_RETRIES="1")
    until_stopped(mover)
    stoppable.signal(signal.SIGKILL)
    os.kill(mover.pids[0], signal.SIGCONT)
    (failed,) = mover.wait()
    assert failed.returncode == 5, failed.stderr[-3000:]
    assert "error: MLflow failed while reading the pointers of server-gone" in failed.stderr
    assert "fix: start the server" in failed.stderr and "Traceback" not in failed.stderr
    stoppable.start()  # the same store, the same port
    aliases, versions, tags = state()
    # As the crash left it: the alias moved, the rest pending on version 3; the dead mover's
    # ticket left (its release failed too). Its lease runs out (aged, as kill_then_rerun does).
    assert aliases["staging"] == "3" and versions["3"].current_stage == "None"
    assert versions["2"].current_stage == "Staging"
    assert "mlgate.pending.staging" in versions["3"].tags
    (ticket,) = registry.tickets_of(lock_versions(client, name))
    client.set_model_version_tag(
        registry.lock_name(name), str(ticket.version), registry.EXPIRES, str(time.time() - 1)
    )
    (rerun,) = move("3").wait()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    aliases, versions, tags = state()
    assert aliases["staging"] == "3" and versions["3"].current_stage == "Staging"
    assert versions["2"].current_stage == "Archived"
    assert versions["3"].tags["mlgate.promotion"] == "staging"
    assert versions["2"].tags["mlgate.promotion.superseded_by"] == "3"
    assert not [k for v in versions.values() for k in v.tags if k.startswith("mlgate.pending")]
    assert len([k for k in tags if k.endswith(".v3")]) == 1
    assert lock_versions(client, name) == []
