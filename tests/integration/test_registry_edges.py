"""Second paths of the registry readers and of rollback, on the session's real MLflow server.

Versions are registered and tagged here with a plain MlflowClient, as a deploy leaves them (the
image, the Production record), then damaged as a person or a reset would: no image or model is
built, so each test costs seconds. The oracle is the registry itself, read through MLflow's own
client by another call than the one under test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from mlgate.pipeline import deploy, rollback
from mlgate.registry import doctor, tracking
from tests.conftest import make_project
from tests.integration.test_train import unique

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def client(mlflow_server: str) -> Any:
    return mlflow.MlflowClient(mlflow_server, mlflow_server)


def register(client: Any, model: str, runs: list[Any]) -> list[str]:
    """One version of `model` per run in `runs` (in order), each tagged with its run as
    mlgate's registration tags it."""
    made = []
    for run in runs:
        version = client.create_model_version(
            model, f"{run.artifact_uri}/model", run.run_id, tags={tracking.MARKER: run.run_id}
        )
        made.append(str(version.version))
    return made


def every_version(client: Any, model: str) -> dict[str, str]:
    """The oracle: each version number asked for by get_model_version, 1 upwards, until the
    registry says there is none (numbers are dense here: nothing was deleted), with its run."""
    found, number = {}, 1
    while True:
        try:
            version = client.get_model_version(model, str(number))
        except MlflowException as exc:
            assert exc.error_code == "RESOURCE_DOES_NOT_EXIST", exc
            return found
        found[str(version.version)] = version.run_id
        number += 1


def test_every_reader_pages_through_all_versions(client) -> None:
    """MLflow answers one page (max_results) and a token: 5 versions in pages of 2 are three
    pages. The helper and the duplicate sweep read all of them; a run's two versions on
    different pages (1 and 5) are found and the later dropped."""
    model = unique("paged")
    experiment = client.create_experiment(unique("paged"))
    run, other = (client.create_run(experiment).info for _ in range(2))
    client.create_registered_model(model)
    versions = register(client, model, [run, other, other, other, run])
    assert versions == ["1", "2", "3", "4", "5"]
    first = client.search_model_versions(f"name='{model}'", max_results=2)
    assert len(first) == 2 and first.token, "the defect: one call sees one page"

    oracle = every_version(client, model)
    assert len(oracle) == 5
    seen = tracking.search_versions(client, model, page_size=2)
    assert sorted((str(v.version), v.run_id) for v in seen) == sorted(oracle.items())
    of_run = tracking.search_versions(client, model, run_id=run.run_id, page_size=1)
    assert sorted(str(v.version) for v in of_run) == ["1", "5"]

    found = tracking.duplicate_versions(client, model, page_size=2)
    assert [(d.run_id, d.kept, d.extra) for d in sorted(found, key=lambda d: d.kept)] == [
        (run.run_id, "1", ("5",)),  # in the order of the kept version, not of the random run ids
        (other.run_id, "2", ("3", "4")),
    ]
    dropped = tracking.drop_duplicate_versions(client, model, page_size=2)
    assert sorted(d.extra for d in dropped) == [("3", "4"), ("5",)]
    left = {n: r for n, r in oracle.items() if n in ("1", "2")}
    assert {
        str(v.version): v.run_id for v in client.search_model_versions(f"name='{model}'")
    } == left
    with pytest.raises(ValueError, match="at least 1"):
        tracking.search_versions(client, model, page_size=0)


def test_a_quote_in_a_searched_name_is_searched_for_as_it_is(
    client, mlflow_server: str, tmp_path: Path
) -> None:
    """MLflow takes a model or run name holding a quote; the searches mlgate builds from such
    a name (`filter_literal`) find what MLflow holds under it, and a name it cannot quote is
    refused, never searched for as another. The oracle: MLflow's own calls by name and id."""
    from mlgate.settings import load_settings

    experiment_name = unique("quoted")
    experiment = client.create_experiment(experiment_name)
    run, other = (client.create_run(experiment).info for _ in range(2))
    model = unique("o'brien")  # a valid MLflow model name; spliced as name='o'brien-...' the
    client.create_registered_model(model)  # search was a parse error
    versions = register(client, model, [run, other])
    assert every_version(client, model) == {"1": run.run_id, "2": other.run_id}
    seen = tracking.search_versions(client, model)
    assert sorted((str(v.version), v.run_id) for v in seen) == [
        ("1", run.run_id),
        ("2", other.run_id),
    ]
    assert [
        str(v.version) for v in tracking.search_versions(client, model, run_id=other.run_id)
    ] == [versions[1]]
    both = unique('it\'s "x"')
    client.create_registered_model(both)  # MLflow takes it; no filter reads it back
    with pytest.raises(ValueError, match="both a single and a double quote"):
        tracking.search_versions(client, both)

    # A killed job's run whose name holds a quote (no lease, started two days ago): ended by the
    # re-run's search, its version deleted; a run of another name, as old, left alone.
    run_name = "train-o'dead"
    name = unique("ghosts")
    two_days_ago = int((time.time() - 2 * 24 * 3600) * 1000)
    dead = client.create_run(experiment, start_time=two_days_ago, run_name=run_name).info
    kept = client.create_run(experiment, start_time=two_days_ago, run_name="train-o").info
    client.create_registered_model(name)
    register(client, name, [dead])
    settings = load_settings(
        env={"MLGATE_TRACKING_URI": mlflow_server},
        overrides=[f"model.name={name}", f"tracking.experiment={experiment_name}"],
        cwd=tmp_path,
    )
    assert tracking.end_abandoned_runs(client, settings, run_name) == [dead.run_id]
    assert client.get_run(dead.run_id).info.status == "KILLED"
    assert client.get_run(kept.run_id).info.status == "RUNNING"
    assert every_version(client, name) == {}


IMAGE_TAGS = ("mlgate.image.repository", "mlgate.image.tag", "mlgate.image.digest")


class Deployed:
    """A model with two versions as two deploys leave them in the layout where Production is
    on the model itself: v1 deployed first, then v2 (replacing v1); v2 holds `production`."""

    def __init__(self, client: Any, tmp_path: Path, server: str) -> None:
        self.client, self.model = client, unique("rolled")
        experiment = client.create_experiment(unique("rolled"))
        runs = [client.create_run(experiment).info for _ in range(2)]
        client.create_registered_model(self.model)
        self.v1, self.v2 = register(client, self.model, runs)
        for version, previous in ((self.v1, "none"), (self.v2, self.v1)):
            for key, value in {
                "mlgate.image.repository": "127.0.0.1:5000/rolled",
                "mlgate.image.tag": f"v{version}-0123456789ab",
                "mlgate.image.digest": DIGEST,
                "mlgate.production.since": "2026-01-10T00:00:00+00:00",
                "mlgate.production.previous": previous,
            }.items():
                client.set_model_version_tag(self.model, version, key, value)
        client.transition_model_version_stage(self.model, self.v1, "Archived")
        client.transition_model_version_stage(self.model, self.v2, "Production")
        client.set_registered_model_alias(self.model, "production", self.v2)
        project = make_project(tmp_path / "project")
        self.args = [
            "--params",
            str(project / "params.yaml"),
            "--tracking-uri",
            server,
            "--model-name",
            self.model,
        ]

    def strip_image(self, version: str) -> None:
        for key in IMAGE_TAGS:
            self.client.delete_model_version_tag(self.model, version, key)

    def state(self) -> tuple[dict[str, str], dict[str, tuple[str, dict[str, str]]]]:
        """The aliases and every version's stage and tags: what 'nothing moved' compares."""
        aliases = dict(self.client.get_registered_model(self.model).aliases)
        versions = {
            n: (v.current_stage, dict(v.tags))
            for n in (self.v1, self.v2)
            for v in [self.client.get_model_version(self.model, n)]
        }
        return aliases, versions


@pytest.fixture
def deployed(client, tmp_path, mlflow_server) -> Deployed:
    return Deployed(client, tmp_path, mlflow_server)


def run(main: Any, args: list[str], env: dict[str, str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args, env=env)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def findings(out: str) -> list[str]:
    """doctor's findings (its notes on the layout aside)."""
    return [line for line in out.splitlines() if line.startswith("- ") and "- note:" not in line]


def test_a_rollback_to_a_version_whose_image_record_is_gone_fails_closed(
    deployed, clean_env, capsys
) -> None:
    """v1's `mlgate.image.*` tags removed by hand: nothing proves what would serve it, so the
    rollback to it is refused (exit 9 as docs/exit-codes.md says, with its fix), nothing
    moved; doctor names v1 (exit 12) and says no repair of its own can help."""
    deployed.strip_image(deployed.v1)
    before = deployed.state()
    args = [*deployed.args, "--reason", "r", "--approved-by", "bob"]
    code, out = run(rollback.main, args, clean_env, capsys)
    assert code == 9, out
    assert f"refusing to roll back {deployed.model} to version {deployed.v1}" in out
    assert "image record (mlgate.image.digest) is gone" in out and "fix:" in out
    assert "Traceback" not in out
    assert deployed.state() == before, "nothing moved"

    code, out = run(doctor.main, deployed.args, clean_env, capsys)
    assert code == 12, out
    assert findings(out) == [
        f"- {deployed.model} version {deployed.v1} was in Production but its image record "
        "(mlgate.image.digest) is gone: a rollback to it is refused"
    ]
    assert "re-deploy each such version" in out
    code, out = run(doctor.main, [*deployed.args, "--repair"], clean_env, capsys)
    assert code == 12 and "still left after the repair" in out, out
    assert deployed.state()[1][deployed.v1] == before[1][deployed.v1], "doctor writes no image"


def test_a_rollback_from_production_whose_image_record_is_gone_fails_closed(
    deployed, clean_env, capsys
) -> None:
    """The version in Production lost its image tags: `rollback --to` itself (a re-run's
    'nothing to do') cannot report what serves, so it fails closed (exit 9, no traceback:
    it once crashed building the report), nothing moved; doctor names it as Production's."""
    deployed.strip_image(deployed.v2)
    before = deployed.state()
    args = [*deployed.args, "--reason", "r", "--approved-by", "bob", "--to", deployed.v2]
    code, out = run(rollback.main, args, clean_env, capsys)
    assert code == 9, out
    assert f"version {deployed.v2} is in Production, but its image record" in out
    assert "Traceback" not in out and "fix:" in out
    assert deployed.state() == before, "nothing moved"
    code, out = run(doctor.main, deployed.args, clean_env, capsys)
    assert code == 12, out
    assert findings(out) == [
        f"- {deployed.model} version {deployed.v2} holds 'production' but its image record "
        "(mlgate.image.digest) is gone: what serves it cannot be proven, and a rollback from it "
        "is refused"
    ]


def test_a_rollback_whose_previous_version_was_deleted_says_so(deployed, clean_env, capsys) -> None:
    """v2 replaced v1, and v1 was deleted since: the bare rollback has no target. It says which
    version is gone and to name another with --to (exit 2), nothing moved."""
    deployed.client.delete_model_version(deployed.model, deployed.v1)
    aliases = dict(deployed.client.get_registered_model(deployed.model).aliases)
    tags = dict(deployed.client.get_model_version(deployed.model, deployed.v2).tags)
    args = [*deployed.args, "--reason", "r", "--approved-by", "bob"]
    code, out = run(rollback.main, args, clean_env, capsys)
    assert code == 2, out
    assert f"version {deployed.v1}, which {deployed.model} version {deployed.v2} replaced" in out
    assert "--to N" in out and "--candidate-version" not in out
    assert dict(deployed.client.get_registered_model(deployed.model).aliases) == aliases
    assert dict(deployed.client.get_model_version(deployed.model, deployed.v2).tags) == tags


def test_a_rollback_from_a_version_no_longer_in_production_moves_nothing(
    deployed, clean_env, capsys
) -> None:
    """The operator saw version 1 in Production and decided to withdraw it; by the time the
    rollback takes the lock a deploy has put v2 there (a bare rollback would now withdraw v2,
    the version just approved, and put v1 back). `--from 1` names what they saw: refused (exit
    6, both versions named), nothing moved. `--from 2 --to 2`, a re-run of a rollback that
    already happened, is a no-op."""
    before = deployed.state()
    base = [*deployed.args, "--reason", "r", "--approved-by", "bob"]
    code, out = run(rollback.main, [*base, "--from", deployed.v1], clean_env, capsys)
    assert code == 6, out
    assert f"Production holds version {deployed.v2} now, not version {deployed.v1}" in out
    assert f"--from {deployed.v2}" in out and "Traceback" not in out
    assert deployed.state() == before, "nothing moved"
    argv = [*base, "--from", deployed.v2, "--to", deployed.v2]
    code, out = run(rollback.main, argv, clean_env, capsys)
    assert code == 0 and "nothing to do" in out, out
    assert deployed.state() == before


def test_a_version_replaced_by_a_registry_reset_is_told_apart(client) -> None:
    """What a deploy checks after its build and again under the lock (`_still_the_version`):
    version 1 read, then the model deleted and re-created and version 1 registered again from
    another run (a reset while the image was built) is another version; the model deleted
    and not re-created is a deleted one; the version untouched is itself."""
    from mlgate.registry import moves as registry

    model = unique("reset")
    experiment = client.create_experiment(unique("reset"))
    first, second = (client.create_run(experiment).info for _ in range(2))
    client.create_registered_model(model)
    [number] = register(client, model, [first])
    seen = client.get_model_version(model, number)
    assert registry.replaced_since(client, model, seen) is None

    client.delete_registered_model(model)
    assert registry.replaced_since(client, model, seen) == (
        f"{model} version 1 was deleted (or the model with it)"
    )
    client.create_registered_model(model)
    assert register(client, model, [second]) == ["1"]
    now = client.get_model_version(model, "1")
    assert now.run_id == second.run_id != seen.run_id
    why = registry.replaced_since(client, model, seen)
    assert why is not None and why.startswith(f"{model} version 1 is another version now (run ")
    assert "the model was deleted and re-created" in why


def test_a_registry_reset_under_a_champion_and_a_lock_fails_closed(
    deployed, clean_env, capsys
) -> None:
    """The registry's database emptied (a reset store) while v2 held `production` and a
    deploy held the lock: the model, its versions, its aliases and the lock's tickets are gone.
    A rollback (bare, or `--to` the old champion) must fail closed, saying what is missing,
    and never record a champion it cannot find: afterwards the model still does not exist.
    Then the model re-created with a version 1 of another run (never deployed): `--to 1` is
    refused (nothing in Production) and nothing moves. Each refusal is exit 2 with its fix."""
    from mlgate.registry import moves as registry

    held = registry.PointerLock(
        deployed.client, deployed.model, holder="deploy by run 7", wait=0, lease=600
    )
    held.__enter__()
    held.stop_renewing()  # its job is gone with the store
    for name in (registry.lock_name(deployed.model), deployed.model):
        deployed.client.delete_registered_model(name)

    def gone() -> bool:
        try:
            deployed.client.get_registered_model(deployed.model)
        except MlflowException as exc:
            return exc.error_code == "RESOURCE_DOES_NOT_EXIST"
        return False

    base = [*deployed.args, "--reason", "r", "--approved-by", "bob"]
    for extra in ([], ["--to", deployed.v2], ["--to", deployed.v1]):
        code, out = run(rollback.main, [*base, *extra], clean_env, capsys)
        assert code == 2 and "Traceback" not in out, (extra, out)
        said = f"error: the registered model '{deployed.model}' does not exist in this registry"
        assert said in out and "if the registry was reset" in out, (extra, out)
        assert "fix:" in out, (extra, out)
        assert gone(), f"a rollback {extra} re-created {deployed.model}"
    # The lock's model was made again (empty), and no ticket is left behind.
    lock = registry.lock_name(deployed.model)
    assert deployed.client.search_model_versions(f"name='{lock}'") == []

    deployed.client.create_registered_model(deployed.model)
    experiment = deployed.client.create_experiment(unique("reset"))
    [one] = register(deployed.client, deployed.model, [deployed.client.create_run(experiment).info])
    code, out = run(rollback.main, [*base, "--to", one], clean_env, capsys)
    assert code == 2 and "has no version in Production: nothing to roll back" in out, out
    model = deployed.client.get_registered_model(deployed.model)
    assert dict(model.aliases) == {}
    assert deployed.client.get_model_version(deployed.model, one).current_stage == "None"


def history(client: Any, model: str, alias: str, version: str, at: str, **tags: str) -> None:
    """The event a completed move of `alias` to `version` leaves on `model` (one tag a move),
    written literally as docs/production.md describes it."""
    stamp = at.replace("-", "").replace(":", "").replace("+0000", "")
    event = {"alias": alias, "version": version, "previous": "none", "at": at, "tags": tags}
    client.set_registered_model_tag(
        model, f"mlgate.history.{alias}.{stamp}.000000Z.v{version}", json.dumps(event)
    )


def test_a_champion_deleted_from_the_registry_is_said_never_read_as_no_champion(
    deployed, clean_env, capsys
) -> None:
    """v2 held `production` (its deploy's history event on the model says so), then someone
    deleted v2: MLflow deletes its alias with it, so the registry holds no `production` at all.
    Read as "no champion", the next candidate would be judged against nothing (or against
    `staging`) and go to Production unchecked. Evaluate, deploy (the gated path), rollback and
    doctor each name the deleted version and stop (exit 12), nothing recorded or moved; the
    evaluation of a champion still there is untouched. The oracle: MLflow's own reads."""
    from mlgate.pipeline import deploy, evaluate
    from mlgate.registry import moves as registry

    client, model = deployed.client, deployed.model
    history(client, model, "production", deployed.v1, "2026-01-10T00:00:00+00:00")
    history(client, model, "production", deployed.v2, "2026-01-11T00:00:00+00:00")
    experiment = client.create_experiment(unique("candidate"))
    [v3] = register(client, model, [client.create_run(experiment).info])
    client.set_registered_model_alias(model, "staging", v3)
    client.transition_model_version_stage(model, v3, "Staging")
    assert registry.find_champion(client, model, v3).version == deployed.v2  # the first path

    client.delete_model_version(model, deployed.v2)
    assert dict(client.get_registered_model(model).aliases) == {"staging": v3}, (
        "MLflow deletes the alias of a deleted version"
    )
    tags_before = dict(client.get_model_version(model, v3).tags)
    said = f"version {deployed.v2}, which held 'production' since 2026-01-11"
    candidate = [*deployed.args, "--candidate-version", v3]
    for main, argv in (
        (evaluate.main, candidate),
        (deploy.main, [*candidate, "--approved-by", "bob"]),
        (rollback.main, [*deployed.args, "--reason", "r", "--approved-by", "bob"]),
    ):
        code, out = run(main, argv, clean_env, capsys)
        assert code == 12, (main.__module__, out)
        assert said in out and "was deleted" in out, (main.__module__, out)
        assert "fix:" in out and "deploy.require_staging=false" in out and "Traceback" not in out
        assert dict(client.get_registered_model(model).aliases) == {"staging": v3}
        assert dict(client.get_model_version(model, v3).tags) == tags_before, "nothing recorded"
    code, out = run(doctor.main, deployed.args, clean_env, capsys)
    assert code == 12 and said in out and "deploy.require_staging=false" in out, out

    # Production in a registered model of its own (model.production_name): the copy holds the
    # alias, and the original it copies was deleted. Said as such, never as a bad argument.
    production = unique("rolled-production")
    client.create_registered_model(production)
    copy = client.copy_model_version(f"models:/{model}/{deployed.v1}", production)
    client.set_model_version_tag(
        production, copy.version, "mlgate.copy.of", f"{model}/{deployed.v1}"
    )
    client.set_registered_model_alias(production, "production", copy.version)
    client.delete_model_version(model, deployed.v1)
    code, out = run(
        evaluate.main,
        [*candidate, "--set", f"model.production_name={production}"],
        clean_env,
        capsys,
    )
    assert code == 12, out
    assert (
        f"{production} version {copy.version} holds 'production' as the copy of {model} "
        f"version {deployed.v1}, which was deleted" in out
    ), out
    assert "--candidate-version with a registered version" not in out, out

    # That copy deleted too, after it held `production` there (its move in the production
    # model's history), while model.name still carries a stale `production` alias of the
    # earlier layout: Production is lost, never read from that stale alias.
    history(client, production, "production", str(copy.version), "2026-01-12T00:00:00+00:00")
    client.delete_model_version(production, copy.version)
    [stale] = register(client, model, [client.create_run(experiment).info])
    client.set_registered_model_alias(model, "production", stale)
    code, out = run(
        evaluate.main,
        [*candidate, "--set", f"model.production_name={production}"],
        clean_env,
        capsys,
    )
    assert code == 12, out
    assert f"{production} version {copy.version}, which held 'production' since 2026-01-12" in out
    assert "was deleted" in out and f"version {stale}" not in out, out


def manifest_digest(registry: Any, repository: str, reference: str) -> str | None:
    """The oracle: the registry's own answer (its HTTP API, not docker-py nor mlgate) for a tag
    or digest of `repository` (HOST/PATH): the digest it holds, or None (404)."""
    import requests

    host, _, path = repository.partition("/")
    answer = requests.head(
        f"http://{host}/v2/{path}/manifests/{reference}",
        auth=(registry.username, registry.password),
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=30,
    )
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    return str(answer.headers["Docker-Content-Digest"])


@pytest.mark.docker
def test_a_rollback_to_an_image_gone_or_retagged_in_the_container_registry_fails_closed(
    trained_on_postgres, docker_engine, container_registry, clean_env, capsys
) -> None:
    """Three versions deployed in turn, each with an image pushed that holds its model (v3 in
    Production). Then, in the container registry itself: v1's manifest deleted (the engine
    still has the image: only the registry's answer counts), and v2's content-addressed tag
    re-pushed with another image (its recorded digest still holds v2's model, but untagged: a
    garbage collection deletes it, and someone wrote over a tag mlgate never rewrites). A
    rollback to either is refused (exit 9, what the registry holds named, the fix), nothing
    moved; the tag restored to the recorded digest, the same rollback goes through, and its
    re-run is a no-op. The oracle: the registry's HTTP API and MLflow's own reads."""
    import requests

    from mlgate.pipeline import deploy
    from tests.copies import copy_version
    from tests.integration.test_concurrency import model_image, tiny_image
    from tests.integration.test_gate import Registry

    templates = trained_on_postgres
    models = Registry(templates.project, templates.server, clean_env)
    client, model = models.client, models.model
    repository = f"{container_registry.host}/mlgate/{model}"
    env = clean_env | container_registry.env() | {"MLGATE_DEPLOY_IMAGE": repository}
    versions = [copy_version(client, templates, kind, model) for kind in ("weak", "better", "weak")]
    previous = "none"
    for day, version in enumerate(versions, start=10):  # three deploys, each replacing the last
        digest = model_image(docker_engine, models, version, repository, container_registry)
        for key, value in {
            "mlgate.production.since": f"2026-01-{day}T00:00:00+00:00",
            "mlgate.production.previous": previous,
        }.items():
            client.set_model_version_tag(model, version, key, value)
        tag = client.get_model_version(model, version).tags["mlgate.image.tag"]
        assert tag == deploy.model_digest(client, model, version).tag  # content-addressed
        assert manifest_digest(container_registry, repository, tag) == digest
        previous = version
    v1, v2, v3 = versions
    client.set_registered_model_alias(model, "production", v3)
    client.transition_model_version_stage(model, v3, "Production")

    def state() -> tuple[dict[str, str], dict[str, tuple[str, dict[str, str]]]]:
        aliases = dict(client.get_registered_model(model).aliases)
        return aliases, {
            n: (v.current_stage, dict(v.tags))
            for n in versions
            for v in [client.get_model_version(model, n)]
        }

    def rollback_to(version: str) -> tuple[int, str]:
        argv = [*models.args(), "--to", version, "--reason", "r", "--approved-by", "bob"]
        return run(rollback.main, argv, env, capsys)

    # v1's image deleted from the registry (its API's DELETE of the manifest by digest).
    d1 = client.get_model_version(model, v1).tags["mlgate.image.digest"]
    host, _, path = repository.partition("/")
    deleted = requests.delete(
        f"http://{host}/v2/{path}/manifests/{d1}",
        auth=(container_registry.username, container_registry.password),
        timeout=30,
    )
    assert deleted.status_code == 202, deleted.text
    assert manifest_digest(container_registry, repository, d1) is None
    assert docker_engine.images.get(f"{repository}@{d1}"), "the engine still has it"
    before = state()
    code, out = rollback_to(v1)
    assert code == 9, out
    assert f"refusing to roll back {model} to version {v1}" in out, out
    assert "the registry does not hold it" in out and "fix:" in out and "Traceback" not in out
    assert state() == before, "nothing moved"

    # v2's tag re-pushed with another image: the recorded digest holds v2's model, untagged.
    v2_tags = client.get_model_version(model, v2).tags
    d2, tag2 = v2_tags["mlgate.image.digest"], v2_tags["mlgate.image.tag"]
    other = tiny_image(docker_engine, repository, tag2, container_registry)
    assert manifest_digest(container_registry, repository, tag2) == other != d2
    assert manifest_digest(container_registry, repository, d2) == d2, "still held, untagged"
    code, out = rollback_to(v2)
    assert code == 9, out
    assert f"its tag {repository}:{tag2} names {other}" in out, out
    assert f"docker tag {repository}@{d2} {repository}:{tag2}" in out, out
    assert state() == before, "nothing moved"

    # The tag restored as the fix says: the rollback goes through, its re-run is a no-op.
    auth = {"username": container_registry.username, "password": container_registry.password}
    docker_engine.images.pull(f"{repository}@{d2}", auth_config=auth).tag(repository, tag2)
    docker_engine.images.push(repository, tag=tag2, auth_config=auth)
    assert manifest_digest(container_registry, repository, tag2) == d2
    code, out = rollback_to(v2)
    assert code == 0, out
    aliases, after = state()
    assert aliases["production"] == v2 and after[v2][0] == "Production"
    assert after[v2][1]["mlgate.production.image"] == f"{repository}@{d2}"
    assert after[v3][1]["mlgate.rollback.rolled_back"] == "true"
    code, out = rollback_to(v2)
    assert code == 0 and "nothing to do" in out, out
    assert state() == (aliases, after)


def test_a_rollback_to_a_version_whose_run_and_files_are_gone_fails_closed(
    deployed, clean_env, capsys
) -> None:
    """v1, in Production before, has its version and image record, but its training run was
    deleted and its files with it (`mlgate gc` after a delete, an artifact store cleaned): its
    booster cannot be read back, so nothing proves what its image would serve. The rollback to
    it is refused with a clear error naming the version (never a traceback), nothing moved,
    before any image is looked at. The oracle: MLflow's own reads of the pointers."""
    v1 = deployed.client.get_model_version(deployed.model, deployed.v1)
    deployed.client.delete_run(v1.run_id)  # its files: none were ever logged here
    before = deployed.state()
    env = clean_env | {"MLGATE_DEPLOY_IMAGE": "127.0.0.1:5000/rolled"}  # its image is trusted
    args = [*deployed.args, "--reason", "r", "--approved-by", "bob", "--to", deployed.v1]
    code, out = run(rollback.main, args, env, capsys)
    assert "Traceback" not in out, out
    assert code == 7, out
    assert f"refusing to roll back {deployed.model} to version {deployed.v1}: the files" in out
    assert "are gone from the artifact store" in out and "nothing was moved" in out
    assert "fix:" in out and "--to N" in out
    assert deployed.state() == before, "nothing moved"
    # A deliberate deploy of it: refused alike, before any image is built or looked up.
    args = [*deployed.args, "--candidate-version", deployed.v1, "--approved-by", "bob"]
    code, out = run(deploy.main, [*args, "--set", "deploy.require_staging=false"], env, capsys)
    assert code == 7 and "Traceback" not in out, out
    assert f"the files of {deployed.model} version {deployed.v1} are gone" in out
    assert deployed.state() == before, "nothing moved"
