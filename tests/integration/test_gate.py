"""Evaluation and promotion against a real MLflow server, over several data versions."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlgate.gate.decision import DIGEST_TAG
from mlgate.pipeline import evaluate, promote, train
from mlgate.registry import audit
from tests.conftest import SERVICE_PATHS, make_project, push_data
from tests.integration.test_train import client, train_args, unique

WEAK = (
    "--set",
    "train.params.max_depth=1",
    "--set",
    "train.num_boost_round=2",
    "--set",
    "train.early_stopping_rounds=1",
)
# What a test that is not about them runs without: evidently's reports (built after the decision
# is recorded, they never change it; test_a_better_model_on_new_data_replaces_the_champion checks
# them) and ...
NO_REPORTS = ("--set", "reports.quality=false")
# ... the latency check, which compiles both models' trees with the C compiler and measures them
# (31 rounds) on every evaluation; the check itself is proven by the first three tests here
# (first model, better model, the verdict under load), as test_concurrency's racers do.
DECISION_ONLY = (*NO_REPORTS, "--set", "gate.max_latency_ms=null")


class Registry:
    """One registered model worked through the pipeline, step by step."""

    def __init__(self, project: Path, server: str, env: dict[str, str]) -> None:
        self.project, self.server, self.env = project, server, env
        self.model = unique("gate")
        self.client = client(server)

    def args(self, *extra: str) -> list[str]:
        # The latency check is on at its default unless a test passes DECISION_ONLY: it is
        # measured in CPU time, so a loaded test machine does not move it
        # (test_the_verdict_holds_with_every_core_busy).
        return train_args(self.project, self.server, self.model, *extra)

    def train(self, *extra: str) -> str:
        assert train.main(self.args(*extra), env=self.env) == 0
        versions = self.client.search_model_versions(f"name='{self.model}'")
        return str(max(int(v.version) for v in versions))

    def evaluate(self, version: str, *extra: str) -> int:
        return evaluate.main([*self.args(*extra), "--candidate-version", version], env=self.env)

    def promote(self, version: str) -> int:
        return promote.main([*self.args(), "--candidate-version", version], env=self.env)

    def staging(self) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.model, "staging").version)
        except Exception:
            return None

    def decision(self, version: str, tmp: Path) -> dict:
        run_id = self.client.get_model_version(self.model, version).run_id
        return json.loads(
            Path(
                self.client.download_artifacts(run_id, "decision/decision.json", str(tmp))
            ).read_text()
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory, mlflow_server, clean_env_module) -> Registry:
    project = make_project(tmp_path_factory.mktemp("gate") / "project")
    return Registry(project, mlflow_server, clean_env_module)


def test_first_model_goes_to_staging(registry: Registry, tmp_path: Path, capsys) -> None:
    v1 = registry.train(*WEAK)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("holdout ("))
    assert " rows, " in line and "AUC 0." in line and "at threshold 0.5" in line
    assert registry.evaluate(v1, *NO_REPORTS) == 0
    decision = registry.decision(v1, tmp_path)
    assert decision["verdict"] == "pass" and decision["champion"] is None
    assert decision["schema_version"] == 2 and decision["statistics"] is None
    assert {c["name"] for c in decision["checks"]} == {"auc", "latency (CPU ms/row)"}
    latency = decision["latency_ms"]
    assert latency["engine"] == "compiled" and "champion" not in latency
    assert latency["candidate"]["ci_low"] <= latency["candidate"]["median"]
    assert latency["candidate"]["median"] <= latency["candidate"]["ci_high"]
    assert registry.promote(v1) == 0
    assert registry.staging() == v1
    version = registry.client.get_model_version(registry.model, v1)
    assert version.current_stage == "Staging"
    assert version.tags["mlgate.decision.verdict"] == "pass"
    assert version.tags["mlgate.promotion"] == "staging"
    assert "is now 'staging'" in capsys.readouterr().out


def test_promotion_is_idempotent(registry: Registry, capsys) -> None:
    v1 = registry.staging()
    assert registry.promote(v1) == 0
    assert "already holds 'staging': nothing to do" in capsys.readouterr().out
    assert registry.staging() == v1


# What a promotion may not load at all (issue 18: promote ≤ 2 s): the training and report
# libraries, SQLAlchemy (an HTTP server is the registry), and the OpenTelemetry metrics that
# mlflow.set_tracking_uri's tracer reset imports.
NEVER_IN_PROMOTE = (
    "sklearn",
    "xgboost",
    "dvc",
    "pandera",
    "evidently",
    "matplotlib",
    "sqlalchemy",
    "opentelemetry.sdk.metrics",
)
# Libraries `import mlflow` itself loads (scipy: mlflow.models.utils imports scipy.sparse):
# a promotion may hold them only through MLflow, never through an import of mlgate's.
THROUGH_MLFLOW = ("numpy", "pandas", "scipy")


def import_roots(importtime: str) -> dict[str, str]:
    """Each module of a `python -X importtime` log, with the top-level import that loaded it
    (the log lists what an import pulled in before it, one level deeper)."""
    rows = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)\s*$", importtime, re.M)
    roots: dict[str, str] = {}
    pulled: list[str] = []
    for indent, module in rows:
        pulled.append(module)
        if len(indent) <= 1:  # a top-level import: it, and what was listed since the last one
            roots.update(dict.fromkeys(pulled, module))
            pulled = []
    return roots


def test_a_promotion_asks_the_registry_little_and_imports_only_what_mlflow_does(
    registry: Registry,
) -> None:
    """The re-run of a promotion (what the bench times) as a whole process, through a proxy
    that lists its requests: the round trips mlgate adds are the ones the move needs (the
    health check, the version, its run and decision, the lock's ticket, the state read under
    it), and the process loads no library that `import mlflow` does not load itself."""
    from tests import proxy

    v1 = registry.staging()
    assert v1 is not None
    with proxy.listing(registry.server) as (uri, seen):
        args = train_args(registry.project, uri, registry.model)
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "mlgate", "promote", *args]
            + ["--candidate-version", v1],
            capture_output=True,
            text=True,
            env=registry.env,
            cwd=registry.project,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to do" in done.stdout
    # MlflowClient reads the registered model before each write only to refuse a prompt:
    # mlgate's writes skip that read (checked once, on the state read under the lock), the
    # experiment is not selected (no run is started), the decision is read from the run's
    # artifact URI (no logged-model search), and converge reads back only what it wrote.
    assert not [r for r in seen if "experiments/" in r or "logged-models" in r], seen
    assert seen.count("GET /api/2.0/mlflow/registered-models/get") == 2, seen  # lock + state
    assert seen.count("GET /api/2.0/mlflow/model-versions/search") == 2, seen  # tickets + state
    assert len(seen) <= 12, seen
    roots = import_roots(done.stderr)
    assert not [m for m in roots if m.startswith(NEVER_IN_PROMOTE)], sorted(roots)
    for library in THROUGH_MLFLOW:
        if library in roots:
            assert roots[library].startswith("mlflow"), (library, roots[library])


def test_a_better_model_on_new_data_replaces_the_champion(
    registry: Registry, breast_cancer, tmp_path: Path
) -> None:
    v1 = registry.staging()
    push_data(registry.project, breast_cancer.iloc[10:], message="data v2")
    v2 = registry.train()
    assert registry.evaluate(v2) == 0
    decision = registry.decision(v2, tmp_path)
    assert decision["champion"]["version"] == v1 and decision["champion"]["alias"] == "staging"
    significance = decision["significance"]
    assert significance["method"] == "DeLong" and significance["difference"] > 0
    statistics = decision["statistics"]
    assert statistics["margin"] == 0.01
    assert statistics["interval"] == [significance["ci_low"], significance["ci_high"]]
    assert "non-inferiority is shown" in statistics["conclusion"]
    assert set(decision["latency_ms"]) >= {"candidate", "champion", "ratio", "engine", "method"}
    assert decision["metrics"]["candidate"]["threshold"] == 0.5
    assert (
        decision["metrics"]["champion"]["overall"]["auc"]
        < decision["metrics"]["candidate"]["overall"]["auc"]
    )
    assert set(decision["metrics"]["candidate"]["slices"]) == {
        "large_masses",
        "small_masses",
        "smooth_texture",
    }
    run_id = registry.client.get_model_version(registry.model, v2).run_id
    logged = {a.path for a in registry.client.list_artifacts(run_id, "decision")}
    assert logged == {
        "decision/decision.json",
        "decision/curves.png",
        "decision/evidently-quality.html",
        "decision/evidently-drift.html",
    }
    assert registry.promote(v2) == 0
    assert registry.staging() == v2
    old = registry.client.get_model_version(registry.model, v1)
    assert old.current_stage == "Archived" and old.tags["mlgate.promotion.superseded_by"] == v2
    new = registry.client.get_model_version(registry.model, v2)
    assert new.tags["mlgate.promotion.replaced"] == v1


def busy_loops() -> list[subprocess.Popen]:
    """One busy loop per core, each bounded in time (a runaway test cannot leave them)."""
    loop = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(os.cpu_count() or 1)]


def test_the_verdict_holds_with_every_core_busy(registry: Registry, tmp_path: Path) -> None:
    """Issue 18: the same evaluation, on a quiet machine and with every core saturated, gets
    the same verdict, check by check, with the latency check on at its default."""
    candidate = registry.train()
    assert registry.evaluate(candidate, *NO_REPORTS) == 0
    quiet = registry.decision(candidate, tmp_path / "quiet")
    loops = busy_loops()
    try:
        assert registry.evaluate(candidate, *NO_REPORTS) == 0
        assert all(loop.poll() is None for loop in loops), "the load ran throughout"
    finally:
        for loop in loops:
            loop.kill()  # SIGKILL, by PID
            loop.wait()
    loaded = registry.decision(candidate, tmp_path / "loaded")
    assert loaded["created_at"] >= quiet["created_at"]
    assert loaded["verdict"] == quiet["verdict"] == "pass"

    def verdicts(record: dict) -> dict[str, bool]:
        return {c["name"]: c["passed"] for c in record["checks"]}

    assert verdicts(loaded) == verdicts(quiet)
    assert "latency (CPU ms/row)" in verdicts(quiet)
    assert loaded["latency_ms"]["engine"] == quiet["latency_ms"]["engine"] == "compiled"

    def judged(record: dict) -> str:
        """The record byte for byte, but for its time and the latency measurement's numbers
        (a measurement: its verdict is compared above, its value moves by design)."""
        record = {k: v for k, v in record.items() if k not in {"created_at", "latency_ms"}}
        record["checks"] = [
            c | {"value": None, "detail": None} if c["name"].startswith("latency") else c
            for c in record["checks"]
        ]
        return json.dumps(record, sort_keys=True)

    # metrics, thresholds, DeLong's interval and p-value, the statement, flags, digests: equal
    assert judged(loaded) == judged(quiet)
    assert quiet["significance"] is not None, "a champion was compared"
    # the latency check's margin under load: the measured upper end is far below the limit
    assert loaded["latency_ms"]["candidate"]["ci_high"] * 20 < 1.0


def test_a_worse_model_is_rejected_and_the_champion_untouched(
    registry: Registry, tmp_path: Path, capsys
) -> None:
    champion = registry.staging()
    v3 = registry.train(*WEAK)
    assert registry.evaluate(v3, *DECISION_ONLY) == 6
    out = capsys.readouterr().out
    assert "::error title=mlgate gate::auc vs champion (non-inferiority)" in out
    assert registry.decision(v3, tmp_path)["verdict"] == "fail"
    assert registry.promote(v3) == 6
    assert registry.staging() == champion
    version = registry.client.get_model_version(registry.model, v3)
    assert version.tags["mlgate.promotion"] == "rejected"
    assert "non-inferiority" in version.tags["mlgate.promotion.reasons"]
    assert version.current_stage == "None"


def test_dry_run_reports_without_failing_or_moving(registry: Registry, capsys) -> None:
    """Also: the evaluation's decision tags are one request each (through a proxy that lists
    the requests): MlflowClient would read the registered model before each, only to refuse
    a prompt; evaluate reads it once."""
    from tests import proxy

    champion = registry.staging()
    v4 = registry.train(*WEAK)
    with proxy.listing(registry.server) as (uri, seen):
        args = train_args(registry.project, uri, registry.model, *DECISION_ONLY)
        dry = [*args, "--set", "gate.mode=dry-run", "--candidate-version", v4]
        assert evaluate.main(dry, env=registry.env) == 0
    assert "::warning title=mlgate gate::" in capsys.readouterr().out
    tagged = [i for i, r in enumerate(seen) if r.endswith("/model-versions/set-tag")]
    assert len(tagged) == 6 and tagged == list(range(tagged[0], tagged[0] + 6)), seen
    assert seen[tagged[0] - 1] == "GET /api/2.0/mlflow/registered-models/get", seen
    version = registry.client.get_model_version(registry.model, v4)
    assert version.tags["mlgate.decision.mode"] == "dry-run"
    assert registry.promote(v4) == 0
    assert "dry run: version" in capsys.readouterr().out
    assert registry.staging() == champion


def test_a_stale_comparison_is_refused(registry: Registry, capsys) -> None:
    """Evaluated against one champion; another took Staging since: do not promote."""
    v5 = registry.train()
    assert registry.evaluate(v5, *DECISION_ONLY, "--set", "gate.max_auc_drop=1") == 0
    v6 = registry.train()
    assert registry.evaluate(v6, *DECISION_ONLY, "--set", "gate.max_auc_drop=1") == 0
    assert registry.promote(v6) == 0
    assert registry.promote(v5) == 6
    assert "the champion changed since the evaluation" in capsys.readouterr().err
    assert registry.staging() == v6


def test_a_decision_changed_in_the_artifact_store_is_refused(
    registry: Registry, tmp_path: Path, capsys
) -> None:
    """promote reads decision.json from the artifact store and takes it only if its bytes are
    those whose sha256 evaluation tagged on the version (in the registry): a file overwritten
    since, or a version whose digest is gone, is refused before anything moves."""
    v = registry.staging()
    assert v is not None
    client = registry.client
    run_id = client.get_model_version(registry.model, v).run_id
    raw = Path(
        client.download_artifacts(run_id, "decision/decision.json", str(tmp_path))
    ).read_bytes()
    recorded = client.get_model_version(registry.model, v).tags[DIGEST_TAG]
    assert recorded == hashlib.sha256(raw).hexdigest()  # the oracle: hashlib on what was logged

    def put(content: bytes) -> None:
        folder = tmp_path / f"put-{hashlib.sha256(content).hexdigest()[:8]}"
        folder.mkdir()
        (folder / "decision.json").write_bytes(content)
        client.log_artifact(run_id, str(folder / "decision.json"), "decision")

    record = json.loads(raw)
    record["reasons"] = [*record["reasons"], "edited after evaluation"]
    put(json.dumps(record).encode())
    assert registry.promote(v) == 6
    assert "is not the one evaluation recorded" in capsys.readouterr().err

    put(raw)  # the file evaluation wrote, back: taken again
    assert registry.promote(v) == 0
    client.delete_model_version_tag(registry.model, v, DIGEST_TAG)
    assert registry.promote(v) == 6
    assert "carries no digest" in capsys.readouterr().err
    client.set_model_version_tag(registry.model, v, DIGEST_TAG, recorded)
    assert registry.promote(v) == 0
    assert registry.staging() == v


def test_a_model_changed_in_the_artifact_store_after_evaluation_is_never_deployed(
    registry: Registry, tmp_path: Path, capsys
) -> None:
    """The decision records the sha256 of the booster file evaluation downloaded and judged.
    The staging version's booster is then rewritten in the artifact store (one bit changed,
    the same file name): the gated deploy refuses it before anything is built (exit 7,
    both digests named), Production untouched. Put back, the file is what was judged again.
    The oracle: hashlib on the file MLflow serves, downloaded with MLflow's own client."""
    import yaml
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from mlgate.pipeline import deploy

    v = registry.staging()
    assert v is not None
    client, model = registry.client, registry.model

    def booster(version: str, folder: str) -> tuple[str, bytes, str]:
        """(the version's artifact location, its booster's bytes, the file's relative path)"""
        uri = client.get_model_version_download_uri(model, version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(tmp_path / folder), tracking_uri=registry.server
            )
        )
        data = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["xgboost"]["data"]
        return uri, (local / data).read_bytes(), data

    uri, raw, data = booster(v, "judged")
    assert (
        registry.decision(v, tmp_path)["candidate_model_sha256"] == hashlib.sha256(raw).hexdigest()
    )
    swapped = raw[:-1] + bytes([raw[-1] ^ 1])  # one bit of the booster file changed

    def put(content: bytes) -> None:
        folder = tmp_path / f"put-{hashlib.sha256(content).hexdigest()[:8]}"
        (folder / data).parent.mkdir(parents=True)
        (folder / data).write_bytes(content)
        parent = str(Path(data).parent)
        get_artifact_repository(uri).log_artifact(
            str(folder / data), None if parent == "." else parent
        )
        assert booster(v, f"check-{folder.name}")[1] == content

    put(swapped)
    argv = [*registry.args(), "--candidate-version", v, "--approved-by", "alice"]
    assert deploy.main(argv, env=registry.env) == 7
    err = capsys.readouterr().err
    said = f"booster in the artifact store (sha256 {hashlib.sha256(swapped).hexdigest()[:12]})"
    assert (
        said in err
        and f"not the one its evaluation judged ({hashlib.sha256(raw).hexdigest()[:12]})" in err
    )
    assert "nothing was built or moved" in err and "fix:" in err
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(model, "production")
    put(raw)  # the file evaluation judged, back (the tests after this one read it)


def test_an_evaluation_rerun_while_a_promotion_waits_is_never_promoted_on_stale(
    registry: Registry, tmp_path: Path, mlgate_forks, capsys
) -> None:
    """A real `mlgate promote` process reads the decision, takes the lock and is held there
    (`pause:lock.after_ticket`); meanwhile the same version is evaluated again (a new
    decision, recorded on the version). Released, the promotion stops (exit 6: the decision
    changed while it waited, re-run), nothing moved or tagged. Its re-run promotes on the
    decision recorded now, and the move records that decision's sha256 on the version and in
    the history event. The oracle: the version's tags and the model's history, read with
    MLflow's own client."""
    from tests.forkserver import MLGATE

    client, model = registry.client, registry.model
    v = registry.staging()
    assert v is not None
    client.delete_registered_model_alias(model, "staging")  # v is a candidate again
    before = dict(client.get_model_version(model, v).tags)
    release = tmp_path / "release"
    argv = ["mlgate", "promote", *registry.args(), "--candidate-version", v]
    fault = {"MLGATE_TRACKING_FAULT_POINT": f"pause:lock.after_ticket:{release}"}
    running = mlgate_forks.start_all([(MLGATE, argv, registry.env | fault)])
    try:
        err = Path(running.files[0][2])
        deadline = time.monotonic() + 600
        while "paused at lock.after_ticket" not in (err.read_text() if err.exists() else ""):
            assert running.alive(0) and time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.05)
        assert registry.evaluate(v, *DECISION_ONLY) == 0  # the decision recorded anew
    finally:
        release.touch()
    [done] = running.wait()
    again = client.get_model_version(model, v).tags
    assert again[DIGEST_TAG] != before[DIGEST_TAG]
    assert done.returncode == 6, done.stderr[-3000:]
    said = f"the decision of {model} version {v} changed while this promotion waited"
    assert said in done.stderr and f"now records {again[DIGEST_TAG][:12]}" in done.stderr
    assert "run `mlgate promote` again" in done.stderr
    assert registry.staging() is None, "nothing moved"
    assert "mlgate.promotion" not in again or again["mlgate.promotion"] == before.get(
        "mlgate.promotion"
    )

    capsys.readouterr()
    assert registry.promote(v) == 0, capsys.readouterr().err
    assert registry.staging() == v
    moved = client.get_model_version(model, v).tags
    assert moved["mlgate.promotion.decision_sha256"] == moved[DIGEST_TAG] == again[DIGEST_TAG]
    events = [
        json.loads(value)
        for key, value in client.get_registered_model(model).tags.items()
        if key.startswith("mlgate.history.staging.") and key.endswith(f".v{v}")
    ]
    assert any(
        e["tags"].get("mlgate.promotion.decision_sha256") == again[DIGEST_TAG] for e in events
    ), events


def test_an_unknown_version_is_a_usage_error(registry: Registry, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        registry.evaluate("../1")
    assert info.value.code == 2
    assert registry.evaluate("999") == 2
    assert registry.promote("999") == 2
    assert "has no version 999" in capsys.readouterr().err


def test_a_champion_with_other_features_is_refused(registry: Registry, capsys) -> None:
    """A champion that takes other columns cannot be scored on the same rows."""
    import xgboost as xgb

    rng = np.random.default_rng(0)
    booster = xgb.train(
        {"objective": "binary:logistic"},
        xgb.DMatrix(
            rng.normal(size=(50, 3)), label=rng.integers(0, 2, 50), feature_names=["a", "b", "c"]
        ),
        2,
    )
    import pandas as pd
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(registry.server)
    mlflow.set_experiment(registry.model)
    with mlflow.start_run():
        example = pd.DataFrame(rng.normal(size=(3, 3)), columns=["a", "b", "c"])
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=infer_signature(example, np.zeros(3)),
            registered_model_name=registry.model,
        )
    odd = str(info.registered_model_version)
    registry.client.set_registered_model_alias(registry.model, "production", odd)
    candidate = registry.train()
    champion_before = registry.staging()
    assert registry.evaluate(candidate, *DECISION_ONLY) == 7
    err = capsys.readouterr().err
    assert "take different features" in err and "only the champion takes: a, b, c)" in err
    assert "only the candidate takes: area_error, compactness_error," in err, err
    assert ", ... (30 in all); only" in err, err
    assert registry.staging() == champion_before
    registry.client.delete_registered_model_alias(registry.model, "production")


def test_a_held_lock_stops_a_promotion_until_its_lease_ends(registry: Registry, capsys) -> None:
    """Another mover holds the aliases: wait (bounded), then fail naming it. A holder that
    died (its lease over) is replaced by the next promotion, which deletes its ticket."""
    from mlgate.registry.moves import EXPIRES, PointerLock, lock_name

    candidate = registry.train()
    assert registry.evaluate(candidate, *DECISION_ONLY) == 0
    held = PointerLock(
        registry.client, registry.model, holder="deploy by run 42", wait=0, lease=600
    )
    held.__enter__()
    staged = registry.staging()
    waiting = [*registry.args("--set", "tracking.lock_wait=1"), "--candidate-version", candidate]
    assert promote.main(waiting, env=registry.env) == 5
    err = capsys.readouterr().err
    assert "waiting for the lock" in err and "locked by deploy by run 42" in err
    assert "the lock frees itself when the lease ends" in err
    assert registry.staging() == staged
    # The holder dies: its heartbeat stops, and its lease is over (aged, not waited out).
    held.stop_renewing()
    lock = lock_name(registry.model)
    registry.client.set_model_version_tag(lock, str(held.ticket), EXPIRES, str(time.time() - 1))
    assert registry.promote(candidate) == 0
    assert registry.staging() == candidate
    assert registry.client.search_model_versions(f"name='{lock}'") == []


def test_a_rejected_version_promoted_later_carries_no_stale_reasons(
    registry: Registry, tmp_path: Path, capsys
) -> None:
    """Rejected, then promoted after a policy change: the version's record says what is true
    now; the rejection stays in the registered model's history."""
    v = registry.train(*WEAK)
    assert registry.evaluate(v, *DECISION_ONLY) == 6
    assert registry.promote(v) == 6
    tags = registry.client.get_model_version(registry.model, v).tags
    assert tags["mlgate.promotion"] == "rejected" and "mlgate.promotion.reasons" in tags
    lenient = ("--set", "gate.max_auc_drop=1", "--set", "gate.reject_significantly_worse=false")
    assert registry.evaluate(v, *DECISION_ONLY, *lenient) == 0
    assert registry.promote(v) == 0
    tags = registry.client.get_model_version(registry.model, v).tags
    assert tags["mlgate.promotion"] == "staging" and "mlgate.promotion.reasons" not in tags
    assert tags["mlgate.decision.reasons"] == "all checks passed"
    capsys.readouterr()
    assert audit.main([*registry.args(), v, "--json"], env=registry.env) == 0
    record = json.loads(capsys.readouterr().out)
    assert "reasons" not in record["promotion"] and record["promotion"]["outcome"] == "staging"
    assert record["decision"]["verdict"] == "pass" and record["decision"]["reasons"] == []
    rejected = [e for e in record["history"] if e.get("outcome") == "rejected"]
    assert len(rejected) == 1 and rejected[0]["version"] == v
    assert "non-inferiority" in rejected[0]["tags"]["mlgate.promotion.reasons"]
    assert [e["version"] for e in record["history"] if e["alias"] == "staging"] == [v]
    # A re-run changes nothing and leaves the record as it is.
    assert registry.promote(v) == 0
    assert "mlgate.promotion.reasons" not in (
        registry.client.get_model_version(registry.model, v).tags
    )


def test_lineage_without_a_version_lists_those_that_exist(registry: Registry, capsys) -> None:
    """No version in production: say which versions exist instead of only failing."""
    staged = registry.staging()
    capsys.readouterr()
    assert audit.main(registry.args(), env=registry.env) == 2
    err = capsys.readouterr().err
    assert "no version named and" in err and "has no version in production" in err
    versions = registry.client.search_model_versions(f"name = '{registry.model}'")
    newest = max(int(v.version) for v in versions)
    assert f"versions that exist (newest first): {newest}" in err
    assert f"{staged} (staging)" in err or newest - int(staged) >= 10
    assert audit.main([*registry.args(), "999"], env=registry.env) == 2
    err = capsys.readouterr().err
    assert "has no version 999" in err and "versions that exist" in err
    assert audit.main([*registry.args(), "--model-name", unique("none")], env=registry.env) == 2
    assert "has no versions: train one" in capsys.readouterr().err


def test_a_threshold_rule_is_chosen_recorded_judged_and_served(
    registry: Registry, tmp_path: Path, capsys
) -> None:
    """metrics.threshold: max_f1 is applied to the validation part at training, recorded with
    the version, used for the candidate's threshold metrics (the champion keeps its own), and
    written into the serving bundle that labels rows."""
    from mlgate.pipeline.export import export_bundle
    from mlgate.serving.bundle import load_bundle

    rule = ("--set", "metrics.threshold=max_f1")
    v = registry.train(*rule)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("holdout ("))
    assert "(max_f1 on validation)" in line
    tags = registry.client.get_model_version(registry.model, v).tags
    chosen = float(tags["mlgate.threshold"])
    assert 0 < chosen < 1 and tags["mlgate.threshold.rule"] == "max_f1"
    assert "f1 " in tags["mlgate.threshold.validation"]
    params = registry.client.get_run(tags["mlgate.run_id"]).data.params
    assert float(params["metrics.threshold"]) == chosen
    assert params["metrics.threshold_rule"] == "max_f1"

    assert registry.evaluate(v, *DECISION_ONLY, *rule) == 0
    decision = registry.decision(v, tmp_path)
    assert decision["metrics"]["candidate"]["threshold"] == chosen
    champion = registry.client.get_model_version(registry.model, registry.staging()).tags
    assert decision["metrics"]["champion"]["threshold"] == float(champion["mlgate.threshold"])

    meta = export_bundle(registry.client, registry.model, v, tmp_path / "bundle")
    assert meta["threshold"] == chosen
    assert load_bundle(tmp_path / "bundle", threads=1).threshold == chosen


def champion_files(registry: Registry, version: str) -> Path:
    source = registry.client.get_model_version(registry.model, version).source
    location = registry.client.get_logged_model(source.removeprefix("models:/")).artifact_location
    # mlflow-artifacts:/<experiment>/models/<id>/artifacts, under the server's destination
    return SERVICE_PATHS["mlflow-artifacts"] / urlparse(location).path.lstrip("/")


def test_a_corrupt_champion_is_refused(registry: Registry, capsys) -> None:
    """The champion's booster file was overwritten in the artifact store."""
    champion = registry.staging()
    boosters = list(champion_files(registry, champion).rglob("*.ubj"))
    assert boosters
    for path in boosters:
        path.write_bytes(b"not a model")
    candidate = registry.train()
    assert registry.evaluate(candidate, *DECISION_ONLY) == 7
    assert "cannot load the champion" in capsys.readouterr().err
    assert registry.staging() == champion


def test_an_unloadable_champion_is_refused(registry: Registry, capsys) -> None:
    """The champion's model files vanished from the artifact store."""
    champion = registry.staging()
    shutil.rmtree(champion_files(registry, champion))
    candidate = registry.train()
    assert registry.evaluate(candidate, *DECISION_ONLY) == 7
    assert "cannot load the champion" in capsys.readouterr().err
    assert registry.staging() == champion


def test_a_holdout_with_few_positive_rows_is_judged_and_flagged(
    registry: Registry, breast_cancer, tmp_path: Path, capsys
) -> None:
    """Heavy imbalance (issue 19): 20 malignant rows among 357 benign ones (5%), so the holdout
    holds a handful. The gate judges (at least 2 of each class: the stated rule) and the
    decision, the summary and the PR comment's record flag it. A model of its own (no
    champion: the module's champion is broken by the tests above)."""
    rare = pd.concat(
        [
            breast_cancer[breast_cancer.diagnosis == 0],
            breast_cancer[breast_cancer.diagnosis == 1][:20],
        ]
    )
    push_data(registry.project, rare, message="data: 20 malignant rows")
    alone = Registry(registry.project, registry.server, registry.env)
    version = alone.train(*WEAK)
    assert alone.evaluate(version, *DECISION_ONLY) in (0, 6)
    out = capsys.readouterr().out
    (flag,) = [f for f in alone.decision(version, tmp_path)["flags"] if "holdout holds" in f]
    n = int(re.search(r"only (\d+) rows of the positive class '1'", flag).group(1))
    assert 2 <= n < 10 and "raise split.holdout_fraction" in flag
    assert f"::warning title=mlgate gate%3A flag::the holdout holds only {n} rows" in out
