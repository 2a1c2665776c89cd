"""The error hierarchy. Each class is one kind of failure with its own exit code.

Messages say what happened *and* what to change. They are caught once, in `mlgate.cli.main`,
printed, and also written as a GitHub `::error::` annotation.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MlgateError(Exception):
    """Base class. `exit_code` is what the process exits with."""

    exit_code = 1
    level = "error"  # of the GitHub annotation

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ConfigError(MlgateError):
    """params.yaml, environment variables or command-line flags are wrong."""

    exit_code = 2


class DataError(MlgateError):
    """The data cannot be had: data.dvc missing or malformed, the remote unreachable, a
    missing object, an unreadable file."""

    exit_code = 3


class ValidationFailed(MlgateError):
    """The data was read but breaks the schema. Nothing was trained."""

    exit_code = 4


class TrackingError(MlgateError):
    """The MLflow tracking server or model registry failed or could not be reached."""

    exit_code = 5


class GateFailed(MlgateError):
    """The candidate failed the promotion policy, or the decision no longer holds."""

    exit_code = 6


class ModelError(MlgateError):
    """A registered model cannot be loaded or cannot score the data."""

    exit_code = 7


class GitHubError(MlgateError):
    """The GitHub REST API refused a request or could not be reached."""

    exit_code = 8


class DeployError(MlgateError):
    """The serving image could not be built, pushed or found in the registry."""

    exit_code = 9


class ModelStale(MlgateError):
    """Monitoring found the Production model stale: its inputs drifted, or its metrics on
    newly labelled data fell. Not a failure of mlgate: a signal to retrain."""

    exit_code = 10
    level = "warning"


class ApprovalRefused(MlgateError):
    """Production would move without a verified approval: the GitHub Environment has no
    required reviewers, or who approved the run cannot be read. Nothing was built or moved."""

    exit_code = 11


EXIT_CODES: dict[int, str] = {
    0: "success",
    MlgateError.exit_code: "unexpected error",
    ConfigError.exit_code: "bad configuration or usage",
    DataError.exit_code: "data unavailable",
    ValidationFailed.exit_code: "data invalid",
    TrackingError.exit_code: "MLflow unreachable or failing",
    GateFailed.exit_code: "gate failed or decision stale",
    ModelError.exit_code: "model unloadable or incompatible",
    GitHubError.exit_code: "GitHub API refused or unreachable",
    DeployError.exit_code: "image build, push or registry failed",
    ModelStale.exit_code: "drift found or performance dropped",
    ApprovalRefused.exit_code: "Production approval missing or unverifiable",
}


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class RegistryDisagreement(MlgateError):
    """`mlgate doctor` found a model's aliases, stages, tags, history, pending records or lock
    tickets in disagreement (a move cut short). The message says whether it was repaired."""

    exit_code = 12
    level = "warning"


EXIT_CODES[RegistryDisagreement.exit_code] = "registry pointers disagreed (mlgate doctor)"


class ProductionLost(RegistryDisagreement):
    """The registry's history says a version held `production` and none does now (it was
    deleted, and MLflow deleted its alias with it): evaluate, promote, the gated deploy and
    rollback stop rather than read that as "no champion". Exit 12, as doctor reports it."""

    level = "error"


class PermissionDenied(MlgateError):
    """MLflow refused the credential (HTTP 401/403): e.g. the pipeline's credential tried to
    move Production, which only the Environment's credential may write
    (docs/production-registry.md). Nothing was moved."""

    exit_code = 13


EXIT_CODES[PermissionDenied.exit_code] = "MLflow refused the credential (registry rights)"


class ClusterError(MlgateError):
    """train.engine is dask and the cluster failed: its scheduler cannot be reached, it has no
    workers, or a worker was lost while training or scoring (docs/dask.md). Nothing was
    registered: registration happens only after a booster exists."""

    exit_code = 14


EXIT_CODES[ClusterError.exit_code] = "Dask scheduler unreachable or a worker lost"
