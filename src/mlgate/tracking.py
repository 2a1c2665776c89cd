"""The MLflow tracking server and model registry: a bounded connection and atomic registration.

MLflow's own HTTP client retries for minutes by default; mlgate bounds it with the `tracking`
settings and checks the server answers before any run starts, so an unreachable server fails in
seconds with a clear error and leaves no run behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlgate.errors import TrackingError
from mlgate.settings import Settings

FIX_UNREACHABLE = (
    "start the server, or point tracking.uri (MLGATE_TRACKING_URI / "
    "--tracking-uri) at a running one; credentials go in "
    "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
)


@contextmanager
def errors(action: str) -> Iterator[None]:
    """Turn MLflow and HTTP failures during `action` into a TrackingError."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException, ConnectionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow failed while {action}: {first}", fix=FIX_UNREACHABLE) from exc


def connect(settings: Settings):  # -> mlflow.MlflowClient
    """Point MLflow at the tracking URI, wait (bounded) until it answers, select the experiment."""
    import mlflow

    uri = settings.tracking_uri
    t = settings.tracking
    # MLflow reads these at request time; they bound its HTTP retries.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(t.retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(math.ceil(t.backoff))  # int there
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, t.timeout)))
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # progress bars clutter logs
    scheme = urlparse(uri).scheme
    if scheme in {"http", "https"}:
        wait_until_healthy(uri, retries=t.retries, backoff=t.backoff, timeout=t.timeout)
    elif scheme == "sqlite":
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    with errors(f"selecting experiment '{t.experiment}'"):
        experiment = client.get_experiment_by_name(t.experiment)
        if experiment is None:
            location = t.artifact_location
            if location is None and scheme == "sqlite":
                location = (settings.project_dir / "mlartifacts").as_uri()
            client.create_experiment(t.experiment, artifact_location=location)
        mlflow.set_experiment(t.experiment)
    return client


def wait_until_healthy(uri: str, *, retries: int, backoff: float, timeout: float) -> None:
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=True,
    )
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            session.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable after {retries + 1} attempts: "
                f"{type(exc).__name__}",
                fix=FIX_UNREACHABLE,
            ) from exc


def version_by_alias(client, name: str, alias: str):  # -> ModelVersion | None
    """The version holding `alias`, or None when no version holds it."""
    from mlflow.exceptions import MlflowException

    with errors(f"reading alias '{alias}' of '{name}'"):
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise


def register(
    client,
    *,
    name: str,
    description: str,
    model_uri: str,
    model_id: str | None,
    run_id: str,
    tags: dict[str, str],
    timeout: int = 300,
):  # -> ModelVersion
    """Create a version with its tags and description in one call, wait until READY, and
    delete it again if anything fails: a version never exists without its lineage."""
    from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
    from mlflow.exceptions import MlflowException

    with errors(f"creating registered model '{name}'"):
        try:
            client.create_registered_model(
                name, description="Registered by mlgate; each version carries its lineage tags."
            )
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
                raise
    try:
        with errors(f"registering a version of '{name}'"):
            version = client.create_model_version(
                name=name,
                source=model_uri,
                run_id=run_id,
                tags=tags,
                description=description,
                model_id=model_id,
                await_creation_for=timeout,
            )
            if ModelVersionStatus.from_string(version.status) != ModelVersionStatus.READY:
                version = client.get_model_version(name, version.version)
            if ModelVersionStatus.from_string(version.status) != ModelVersionStatus.READY:
                raise TrackingError(
                    f"model version {name}/{version.version} is {version.status}, not READY",
                    fix="check the registry's artifact store, then re-run",
                )
            return version
    except BaseException:
        _delete_versions_of_run(client, name, run_id)
        raise


def end_abandoned_runs(client, settings: Settings, run_name: str) -> list[str]:
    """Runs of this same job (same run name: data version and commit) that a killed job or a
    lost server left RUNNING: marked KILLED, and any version a cut-short registration left
    deleted. A re-run so converges to one finished run and no RUNNING ghost."""
    name = settings.model.name
    with errors("looking for runs a killed job left RUNNING"):
        experiment = client.get_experiment_by_name(settings.tracking.experiment)
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.run_name = '{run_name}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            _delete_versions_of_run(client, name, run.info.run_id)
            client.set_tag(run.info.run_id, "mlgate.abandoned", "a re-run of this job ended it")
            client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in runs]


def _delete_versions_of_run(client, name: str, run_id: str) -> None:
    try:
        for version in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
            client.delete_model_version(name, version.version)
    except Exception:  # best effort: the registry may be the thing that failed
        pass


# The lock and the pointer moves live in mlgate.registry; these names stay importable here.
_MOVED = {
    "PointerLock",
    "pointer_lock",
    "move_alias",
    "finish_pending",
    "PENDING",
    "HISTORY",
    "HISTORY_TAGS",
}


def __getattr__(name: str):  # PEP 562: imported lazily, mlgate.registry imports this module
    if name in _MOVED:
        from mlgate import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
