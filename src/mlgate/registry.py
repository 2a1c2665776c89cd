"""Registry look-ups shared by the stages that only move pointers (promote, deploy, rollback,
lineage): which version is the champion, and a version that must exist.

Kept apart from mlgate.evaluate, which scores models, so that `mlgate promote` does not import
numpy, pandas, scikit-learn, DVC or XGBoost to move one alias.
"""

from __future__ import annotations

from mlgate import tracking
from mlgate.decision import ModelRef
from mlgate.errors import ConfigError

CHAMPION_ALIASES = ("production", "staging")


def find_champion(client, name: str, candidate_version: str) -> ModelRef | None:
    """The version holding `production`, else `staging`; the candidate itself never counts."""
    for alias in CHAMPION_ALIASES:
        version = tracking.version_by_alias(client, name, alias)
        if version is not None and str(version.version) != str(candidate_version):
            return ModelRef(name, str(version.version), version.run_id, alias)
    return None


def get_version(client, name: str, version: str):  # -> ModelVersion
    """A registered version; one that does not exist is the caller's mistake, not MLflow's."""
    from mlflow.exceptions import MlflowException

    with tracking.errors(f"reading {name} version {version}"):
        try:
            return client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
    raise ConfigError(
        f"model '{name}' has no version {version}",
        fix="pass --candidate-version with a registered version (the train step's "
        "model-version output), and the same model.name",
    )
