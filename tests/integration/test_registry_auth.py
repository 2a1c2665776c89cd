"""Registry rights follow the approval, proved with MLflow's own authentication (issue 17).

`mlflow server --app-name basic-auth` (started once a session) keeps the users and the
permissions per registered model. An admin sets up what docs/production-registry.md tells a
team to set up: the model, its production model (model.production_name) and their lock models,
the "pipeline" user (train, evaluate, promote, PR gates) with MANAGE on the model and its lock
and the default READ elsewhere, the "environment" user (the deploy job's, behind the
Environment's approval) with MANAGE on the production model and its lock.

The oracle is MLflow itself: what each user may write is decided by the server, and what was
written is read back with the admin's plain MlflowClient calls. Credentials reach mlgate the
standard MLflow way (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), in real `mlgate`
processes. No Docker: the pipeline's deploy is refused before anything is built, and the
Environment's move is the registry half of `mlgate deploy` (the image half is test_deploy's).

Cost: one tiny training (about 10-20 s on an idle machine), a promotion, and the auth server's
start once a session. Every `mlgate` process and every mover is a real process forked from the
session's interpreter that did their imports (`mlgate_forks`, tests/forkserver.py): no import
of mlflow and mlgate (8 CPU seconds; 30 with evaluate's evidently and matplotlib) per process.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from mlgate.faults import COPY_FAULT_POINTS
from mlgate.pipeline import deploy
from mlgate.registry import audit
from mlgate.registry import moves as registry
from mlgate.settings import load_settings
from tests.conftest import AuthMlflow, make_project
from tests.forkserver import ForkServer
from tests.integration.test_gate import WEAK
from tests.integration.test_train import train_args, unique

# The registry half of `mlgate deploy` with the Environment's credential: the rights check,
# the lock on the production model, the copy (found again by its source on a re-run), the
# move of `production` onto it. A real process, killed for real at a fault point.
MOVER = """
import sys
import mlflow
from mlgate.pipeline import deploy
from mlgate.registry import moves as registry
uri, name, production, version, point, lease = sys.argv[1:7]
mlflow.set_tracking_uri(uri)
client = mlflow.MlflowClient()
sha256 = deploy.model_digest(client, name, version).sha256
lock = registry.PointerLock(
    client, production, holder="test mover", wait=300, lease=float(lease),
    fault_point=point or None, denied=registry.denied_fix(production),
)
with lock:
    registry.ensure_production_model(client, name, production, lock)
    copy = registry.ensure_copy(client, name, version, sha256, production, lock)
    current = registry.production_of(client, name, production)
    if current is None or current.holder.name != production or current.version != version:
        deploy.move_production(
            client, production, str(copy.version),
            {"mlgate.production.approved_by": "alice", "mlgate.copy.of": f"{name}/{version}",
             "mlgate.production.previous": current.version if current else "none"},
            None if current is None or current.holder.name != production
            else str(current.holder.version),
            lock,
            {"mlgate.production.replaced_by": version},
        )
print("moved", copy.version, flush=True)
"""


@dataclass
class Team:
    server: AuthMlflow
    project: Path
    model: str
    production: str
    env: dict[str, str]
    forks: ForkServer

    def admin(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.server.uri)

    def mlgate(self, user: str, *argv: str) -> subprocess.CompletedProcess:
        """`mlgate ARGV[0] ... ARGV[1:]` as `user`: a real process, forked after the imports."""
        args = train_args(self.project, self.server.uri, self.model)
        return self.forks.mlgate(
            [argv[0], *args, *argv[1:]],
            self.env
            | self.server.env(user)
            | {
                "MLGATE_MODEL_PRODUCTION_NAME": self.production,
                # a loaded machine makes each authenticated request slow: a lease of minutes,
                # over 4/3 of the longest request these bounds allow (618 s: pointer_lock)
                "MLGATE_TRACKING_LOCK_LEASE": "900",
                "MLGATE_TRACKING_TIMEOUT": "120",  # a retried create would register twice
            },
        )

    def move(
        self, user: str, version: str, point: str = "", lease: float = 40
    ) -> subprocess.CompletedProcess:
        """The MOVER, a process of its own, forked after its imports."""
        argv = ["mover", self.server.uri, self.model, self.production, version, point]
        return self.forks.run(MOVER, [*argv, str(lease)], self.env | self.server.env(user))

    def versions(self, name: str) -> list:
        with self.server.as_user(AuthMlflow.ADMIN):
            return self.admin().search_model_versions(f"name='{name}'")

    def aliases(self, name: str) -> dict[str, str]:
        with self.server.as_user(AuthMlflow.ADMIN):
            return {k: str(v) for k, v in self.admin().get_registered_model(name).aliases.items()}


@pytest.fixture(scope="module")
def team(
    tmp_path_factory, mlflow_auth_server: AuthMlflow, clean_env_module, mlgate_forks: ForkServer
) -> Team:
    """The one-time setup of docs/production-registry.md, done by the admin."""
    server = mlflow_auth_server
    model = unique("auth")
    production = f"{model}-production"
    for user in ("pipeline", "environment"):
        if user not in server.passwords:
            server.create_user(user)
    with server.as_user(AuthMlflow.ADMIN):
        admin = mlflow.MlflowClient(server.uri)
        admin.create_registered_model(model)
        admin.create_registered_model(production, tags={registry.PRODUCTION_OF: model})
        for lock in (registry.lock_name(model), registry.lock_name(production)):
            admin.create_registered_model(lock, tags={registry.MARKER: registry.MARKER_VALUE})
    server.grant("pipeline", model, "MANAGE")
    server.grant("pipeline", registry.lock_name(model), "MANAGE")
    server.grant("environment", production, "MANAGE")
    server.grant("environment", registry.lock_name(production), "MANAGE")
    project = make_project(tmp_path_factory.mktemp("auth") / "project")
    return Team(server, project, model, production, clean_env_module, mlgate_forks)


@pytest.fixture(scope="module")
def version(team: Team) -> str:
    """One tiny model, trained with the pipeline's credential."""
    done = team.mlgate("pipeline", "train", *WEAK)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(max(int(v.version) for v in team.versions(team.model)))


@pytest.mark.timeout(1800)
def test_only_the_environment_credential_moves_production(team: Team, version: str) -> None:
    # The pipeline's credential trains, evaluates and promotes: all on the model it may write.
    for stage in ("evaluate", "promote"):
        done = team.mlgate("pipeline", stage, "--candidate-version", version)
        assert done.returncode == 0, (stage, done.stderr[-3000:])
    assert team.aliases(team.model) == {"staging": version}

    # The same credential deploying: refused by MLflow at the rights check, before any build
    # (no Docker is configured here), with the permission and the fix named; nothing done.
    done = team.mlgate(
        "pipeline", "deploy", "--candidate-version", version, "--approved-by", "alice"
    )
    assert done.returncode == 13, done.stderr[-3000:]
    assert "PERMISSION_DENIED" in done.stderr
    assert f"MANAGE on the registered models '{team.production}'" in done.stderr
    assert "MLFLOW_PRODUCTION_TRACKING_PASSWORD" in done.stderr
    assert "docs/production-registry.md" in done.stderr
    assert team.versions(team.production) == []
    assert team.aliases(team.production) == {}
    assert team.versions(registry.lock_name(team.production)) == [], "no ticket left"
    assert not any(
        key.startswith(("mlgate.production.", "mlgate.image.", "mlgate.pending."))
        for key in team.versions(team.model)[0].tags
    )

    # Nor can it go around mlgate: MLflow refuses the alias, a version, a ticket, a tag.
    with team.server.as_user("pipeline"):
        client = mlflow.MlflowClient(team.server.uri)
        for write in (
            lambda: client.copy_model_version(f"models:/{team.model}/{version}", team.production),
            lambda: client.create_model_version(
                registry.lock_name(team.production), source=registry.TICKET_SOURCE
            ),
            lambda: client.set_registered_model_tag(team.production, "x", "y"),
        ):
            with pytest.raises(MlflowException) as refused:
                write()
            cause = refused.value.__cause__  # copy_model_version wraps the refusal
            assert "PERMISSION_DENIED" in (
                refused.value.error_code,
                getattr(cause, "error_code", None),
            )
    assert team.versions(team.production) == []

    # The Environment's credential: the copy, checked against the original's booster, and
    # `production` moved onto it.
    done = team.move("environment", version)
    assert done.returncode == 0, done.stderr[-3000:]
    [copy] = team.versions(team.production)
    assert copy.source == f"models:/{team.model}/{version}"
    assert team.aliases(team.production) == {"production": str(copy.version)}
    assert copy.current_stage == "Production"
    with team.server.as_user(AuthMlflow.ADMIN):
        admin = team.admin()
        sha = deploy.model_digest(admin, team.model, version).sha256
        assert copy.tags[registry.COPY_SHA256] == sha
        assert copy.tags[registry.COPY_OF] == f"{team.model}/{version}"
        assert copy.tags["mlgate.production.approved_by"] == "alice"
        # Every reader finds the original through the one helper; staging is untouched.
        found = registry.production_of(admin, team.model, team.production)
        assert (found.version, found.holder.name) == (version, team.production)
        assert team.aliases(team.model) == {"staging": version}
        settings = load_settings(
            env=team.env
            | {
                "MLGATE_TRACKING_URI": team.server.uri,
                "MLGATE_MODEL_NAME": team.model,
                "MLGATE_MODEL_PRODUCTION_NAME": team.production,
            }
        )
        record = audit.lineage(admin, settings, "production")
        assert record["version"] == version and "production" in record["aliases"]
        assert record["production"]["approved_by"] == "alice"
        assert registry.find_champion(admin, team.model, "999", team.production).version == version

    # A re-run finds the copy by its source: never a second one.
    assert team.move("environment", version).returncode == 0
    assert len(team.versions(team.production)) == 1

    # `mlgate doctor` with the pipeline's credential reads both models and finds them agreeing.
    done = team.mlgate("pipeline", "doctor")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(1800)
def test_a_copy_killed_at_each_point_is_made_once(team: Team, version: str, tmp_path) -> None:
    """A real process with the Environment's credential, SIGKILLed right after each registry
    call of the copy (mlgate.faults.COPY_FAULT_POINTS), then run again: exactly one copy,
    checked against the original's booster, without what it inherited of the original's past
    (here an image tag the pipeline's credential wrote on the original: never trusted)."""
    source = f"models:/{team.model}/{version}"
    with team.server.as_user("pipeline"):
        mlflow.MlflowClient(team.server.uri).set_model_version_tag(
            team.model, version, "mlgate.image.digest", "sha256:" + "0" * 64
        )
    # Each kill and each re-run is a process of its own, forked after the imports (no thread
    # to lose in the fork): the SIGKILL is real, the six imports of mlflow are none.
    for point in COPY_FAULT_POINTS:
        kill_then_rerun(team, version, point, source)


# The killed mover's lease: the re-run waits out what is left of it (the dead ticket is live
# until then), once per fault point. It was 40 s; a few registry calls reach the last point,
# well inside the 15 s this leaves before the lease's margin. Were it not reached, the mover
# would raise "the lock ... ran out" (exit 1), not die by SIGKILL: the test fails, never passes
# wrongly.
KILLED_LEASE = 20


def kill_then_rerun(team: Team, version: str, point: str, source: str) -> None:
    with team.server.as_user(AuthMlflow.ADMIN):  # each point starts without a copy
        for old in team.versions(team.production):
            team.admin().delete_model_version(team.production, old.version)
    killed = team.move("environment", version, point, KILLED_LEASE)
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
    assert f"fault injection: SIGKILL at {point}" in killed.stderr, killed.stderr[-3000:]
    assert len([v for v in team.versions(team.production) if v.source == source]) == 1
    done = team.move("environment", version)
    assert done.returncode == 0, (point, done.stderr[-3000:])
    [copy] = [v for v in team.versions(team.production) if v.source == source]
    assert copy.tags[registry.COPY_OF] == f"{team.model}/{version}", point
    assert "mlgate.image.digest" not in copy.tags, point
    assert not any(k.startswith("mlgate.pending.") for k in copy.tags), point
    assert team.aliases(team.production)["production"] == str(copy.version), point
    with team.server.as_user(AuthMlflow.ADMIN):
        found = registry.production_of(team.admin(), team.model, team.production)
    assert found.version == version, point
