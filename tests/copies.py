"""Fresh registry state without retraining: a trained version copied as `mlgate train` left it.

The registry tests (the racing promotions of test_concurrency, the kill tests and the mixed race
of test_registry_moves) need many versions of one model to move pointers between; what each
version's model is matters only through its evaluation (better or worse than the champion).
Training is the same work every time (the same data, the same parameters, the same booster), so
the session trains each kind once (`trained_on_postgres` in tests/conftest.py, on a template
model that nothing evaluates or moves) and a test copies them onto a registered model of its
own.

A copy is what a fresh `mlgate train` of the same data and parameters leaves, as the registry
shows it: a run of its own in the model's experiment (the source run's tags, parameters, metrics
and artifacts: the holdout manifest, the environment, the validation report, the config), and a
version registered from that run with the source version's tags (its lineage) and description,
pointing at the same logged model (the same booster, so its sha256 is the same). Each copy has
its own run, as every trained version has: evaluate records its decision on the run, promote
reads it there, and doctor treats two versions of one run as a duplicate.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The worse candidate: a single stump (the better one: the default parameters).
STUMP = ("--set", "train.params.max_depth=1", "--set", "train.num_boost_round=1")
# Tags a run gets at creation or from this copy, not copied from the source run.
NOT_COPIED = ("mlflow.runName",)


@dataclass(frozen=True)
class Templates:
    """Versions trained once a session: `weak` (the champions), `better` (the defaults) and
    `worse` (a stump), all of `model` on `server`, trained in `project`."""

    project: Path
    server: str
    model: str
    weak: str
    better: str
    worse: str


def experiment_of(client: Any, name: str) -> str:
    """The id of the experiment `mlgate train --model-name name` logs to (tracking.experiment
    set to the model's name, as the tests' train_args do)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile
        return str(client.get_experiment_by_name(name).experiment_id)


def copy_version(client: Any, templates: Templates, kind: str, to_model: str) -> str:
    """Register a copy of the template version `kind` ("weak", "better", "worse") as the next
    version of `to_model`, with a run of its own; return its version number."""
    from mlflow.entities import Metric, Param

    from mlgate.registry.tracking import register

    source = client.get_model_version(templates.model, getattr(templates, kind))
    run = client.get_run(source.run_id)
    experiment = experiment_of(client, to_model)
    tags = {k: v for k, v in run.data.tags.items() if k not in NOT_COPIED}
    copy = client.create_run(experiment, tags=tags, run_name=run.info.run_name)
    run_id = copy.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in client.get_metric_history(source.run_id, key)
    ]
    client.log_batch(run_id, metrics=metrics, params=params)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(source.run_id, "", tmp))
        client.log_artifacts(run_id, str(local))
    client.set_terminated(run_id)
    # Registered as `mlgate train` registers (tracking.register): the model created if need be,
    # the version with its lineage in one call, READY, and deleted again if anything fails.
    version = register(
        client,
        name=to_model,
        description=source.description,
        model_uri=source.source,
        # The logged model the source names (`models:/<model id>`), which the registry checks.
        model_id=source.source.removeprefix("models:/")
        if source.source.startswith("models:/m-")
        else None,
        run_id=run_id,
        tags=dict(source.tags) | {"mlgate.run_id": run_id},
    )
    return str(version.version)
