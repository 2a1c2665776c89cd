"""Sixteen promotions race on MLflow as teams run it: PostgreSQL backend, artifacts in S3, four
server workers. Each racer is its own process running `mlgate promote` then `mlgate deploy`
for its candidate, as sixteen CI jobs (or laptops) would. Some candidates beat the champion,
some do not; every decision was made against the same Production version, so all but one
comparison goes stale the moment the first deploy lands.

Afterwards the registry must be in a state a single run could have produced: one version per
alias and stage, Production moved exactly once and by a candidate that beat the version it
replaced, and the tags telling every move in order with none lost.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest

from mlgate.pipeline import deploy
from mlgate.registry import moves as registry
from tests.copies import Templates, copy_version
from tests.forkserver import ForkServer
from tests.integration.test_gate import Registry

pytestmark = pytest.mark.docker

RACERS = 16
# The race is about the registry, not the models: the candidates are judged on AUC against the
# champion (the stumps fail, the defaults pass), with the latency check off. Measuring latency
# compiles both models' trees for each of the 16 decisions (measured alone: 1.3 CPU s and 9 s
# of wall time per decision at a load average of 28); the check itself is proven by
# tests/integration/test_gate.py, and the racers never read it. Nor do they read the quality
# reports (evidently's HTML and the curves, built after the decision is recorded, never
# changing it: reports.quality), proven by test_gate and test_evaluate_outputs.
NO_LATENCY = ("--set", "gate.max_latency_ms=null", "--set", "reports.quality=false")
RACER = """
import json, sys
from mlgate.pipeline import deploy, promote
args, approver = json.loads(sys.argv[1]), sys.argv[2]
promoted = promote.main(args)
deployed = deploy.main([*args, "--approved-by", approver])
print(promoted, deployed)
"""


def tiny_image(
    docker_engine,
    repository: str,
    tag: str | None,
    registry,
    *,
    models: Registry | None = None,
    version: str | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """Push a small image (no Python, no server) and return its digest. With `models` and
    `version`, it holds that version's model the way deploy and rollback verify it: the
    labels, /model/bundle.json and the booster itself, as `mlgate deploy` would build them,
    and `tag` None means the content-addressed tag deploy looks up (`vN-<sha12>`). Without
    them it holds a placeholder, which deploy never reuses. `labels` replaces the labels (an
    image whose labels and contents disagree)."""
    from mlgate.registry.logged import logged_booster
    from mlgate.serving.bundle import write_bundle

    data, changes = io.BytesIO(), []
    with tarfile.open(fileobj=data, mode="w") as tar:
        if models is None or version is None:
            info = tarfile.TarInfo("model-placeholder")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
        else:
            logged = logged_booster(models.client, models.model, version)
            model = deploy.ModelDigest(models.model, version, logged.run_id, logged.sha256)
            tag = tag or model.tag
            labels = model.labels() if labels is None else labels
            changes = [f'LABEL {key}="{value}"' for key, value in labels.items()]
            with tempfile.TemporaryDirectory() as tmp:
                write_bundle(
                    Path(tmp),
                    logged.raw,
                    compile=False,
                    name=models.model,
                    version=version,
                    run_id=logged.run_id,
                    features=logged.features,
                    threshold=0.5,
                    data_md5="",
                    commit="",
                )
                tar.add(tmp, arcname="model")
    assert tag, "name the tag of a placeholder image"
    docker_engine.api.import_image_from_data(
        data.getvalue(), repository=repository, tag=tag, changes=changes
    )
    auth = {"username": registry.username, "password": registry.password}
    docker_engine.images.push(repository, tag=tag, auth_config=auth)
    digest = deploy.registry_digest(docker_engine, f"{repository}:{tag}", auth)
    assert digest
    return digest


def record_image(
    models: Registry, version: str, repository: str, digest: str, tag: str | None = None
) -> None:
    """What `mlgate deploy` records after it pushed `repository:tag` (an earlier run did)."""
    for key, value in {
        "mlgate.image.repository": repository,
        "mlgate.image.tag": tag or f"v{version}",
        "mlgate.image.digest": digest,
        "mlgate.image.ref": f"{repository}@{digest}",
    }.items():
        models.client.set_model_version_tag(models.model, version, key, value)


def model_image(docker_engine, models: Registry, version: str, repository: str, registry) -> str:
    """A pre-pushed image that deploy reuses for `version` (it holds that version's model),
    recorded on the version as an earlier deploy would: the cheap way to an image."""
    digest = tiny_image(docker_engine, repository, None, registry, models=models, version=version)
    # The content-addressed tag tiny_image pushed (what deploy records), which a rollback checks.
    tag = deploy.model_digest(models.client, models.model, version).tag
    record_image(models, version, repository, digest, tag)
    return digest


def holder(models: Registry, alias: str) -> str | None:
    try:
        return str(models.client.get_model_version_by_alias(models.model, alias).version)
    except Exception:
        return None


# Sixteen processes racing, and the session's templates trained in its setup when it runs first.
@pytest.mark.timeout(2400)
def test_sixteen_racing_promotions_leave_one_consistent_history(
    trained_on_postgres: Templates,
    clean_env_module,
    docker_engine,
    container_registry,
    mlgate_forks: ForkServer,
    tmp_path,
) -> None:
    templates = trained_on_postgres
    models = Registry(templates.project, templates.server, clean_env_module)
    repository = f"{container_registry.host}/mlgate/{models.model}"
    # The racers queue for the lock one move at a time: on a loaded runner sixteen moves outlast
    # the default wait (180 s; a racer then exits 5 instead of its verdict), so wait as the
    # mixed race of test_registry_moves does.
    wait = {"MLGATE_TRACKING_LOCK_WAIT": "600"}
    env = clean_env_module | container_registry.env() | {"MLGATE_DEPLOY_IMAGE": repository} | wait

    def trained(kind: str) -> str:
        """A version of this test's model as `mlgate train` leaves it, copied from the
        session's trained templates (tests/copies.py): its own run, the same booster."""
        return copy_version(models.client, templates, kind, models.model)

    # The champion: a weak model, in Production with its image.
    champion = trained("weak")
    assert models.evaluate(champion, *NO_LATENCY) == 0 and models.promote(champion) == 0
    model_image(docker_engine, models, champion, repository, container_registry)
    first = [*models.args(), "--candidate-version", champion, "--approved-by", "lead"]
    assert deploy.main(first, env=env) == 0  # outside Actions, who approved is given
    assert holder(models, "production") == champion

    # Sixteen candidates, each evaluated against that champion; images already pushed.
    candidates = [trained("worse" if i % 2 else "better") for i in range(RACERS)]
    verdicts = {}
    for version in candidates:
        models.evaluate(version, *NO_LATENCY)
        decision = models.decision(version, tmp_path)
        assert decision["champion"]["version"] == champion
        assert "latency (CPU ms/row)" not in {check["name"] for check in decision["checks"]}
        verdicts[version] = decision["verdict"]
        model_image(docker_engine, models, version, repository, container_registry)
    better = sorted(v for v, verdict in verdicts.items() if verdict == "pass")
    worse = sorted(v for v, verdict in verdicts.items() if verdict != "pass")
    assert better and worse, verdicts

    # The race: sixteen processes, each `mlgate promote` then `mlgate deploy` of its candidate
    # (one interpreter for both, as one CI job would run them back to back). Each is forked,
    # all at once, from the session's interpreter that did their imports (`mlgate_forks`,
    # tests/forkserver.py): sixteen real processes racing on PostgreSQL, without sixteen
    # imports of mlflow on two cores.
    jobs = [
        (RACER, ["racer", json.dumps([*models.args(), "--candidate-version", v]), f"approver-{v}"])
        for v in candidates
    ]
    done = mlgate_forks.run_all([(code, argv, env) for code, argv in jobs])
    results = []
    for version, racer in zip(candidates, done, strict=True):
        promoted, deployed = (int(code) for code in racer.stdout.split()[-2:])
        results.append((version, promoted, deployed, racer.stderr))
    outcomes = {version: (promoted, deployed) for version, promoted, deployed, _ in results}
    said = {version: log for version, *_, log in results}
    logs = "\n".join(log for *_, log in results)
    assert "waiting for the lock" in logs, "the racers never contended: the test proves nothing"
    assert "Traceback" not in logs, logs

    # One version per alias, and per stage (transitions archive racily without the lock).
    versions = models.client.search_model_versions(f"name='{models.model}'")
    by_stage = {
        stage: [str(v.version) for v in versions if v.current_stage == stage]
        for stage in ("Production", "Staging")
    }
    production, staging = holder(models, "production"), holder(models, "staging")
    # A version has one stage: the deployed staging holder shows Production.
    expected = [staging] if staging != production else []
    assert by_stage == {"Production": [production], "Staging": expected}, by_stage

    # Production moved once, to a candidate that beat the version it replaced.
    assert production in better
    assert [v for v, (_, deployed) in outcomes.items() if deployed == 0] == [production]
    for version, (_, deployed) in outcomes.items():
        assert deployed == 6 or version == production, said[version]
    tags = {str(v.version): v.tags for v in versions}
    assert tags[production]["mlgate.production.previous"] == champion
    assert tags[production]["mlgate.production.approved_by"] == f"approver-{production}"
    assert tags[champion]["mlgate.production.replaced_by"] == production
    assert models.decision(production, tmp_path)["champion"]["version"] == champion

    # Worse candidates were refused and say so; none ever held staging.
    for version in worse:
        assert outcomes[version][0] == 6, said[version]
        assert tags[version]["mlgate.promotion"] == "rejected"
    # Every staging move is told by the tags, as one chain from the champion: none lost to a
    # concurrent writer (two movers reading the same holder would both claim to replace it).
    moved = {v for v, t in tags.items() if t.get("mlgate.promotion") == "staging"}
    chain, at = [], staging
    while at != "none":
        chain.append(at)
        at = tags[at]["mlgate.promotion.replaced"]
    assert sorted(chain) == sorted(moved) and chain[-1] == champion, (chain, moved)
    for newer, older in zip(chain, chain[1:], strict=False):
        assert tags[older]["mlgate.promotion.superseded_by"] == newer
    # A better candidate that did not get staging was refused on a stale comparison, and says so.
    for version in set(better) - moved:
        assert tags[version]["mlgate.promotion"] == "stale", tags[version]
    # Nothing half done: no pending move, and no lock ticket left.
    assert not [k for t in tags.values() for k in t if k.startswith("mlgate.pending.")]
    lock = registry.lock_name(models.model)
    assert models.client.search_model_versions(f"name='{lock}'") == []
