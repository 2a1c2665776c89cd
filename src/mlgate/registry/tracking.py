"""The MLflow tracking server and model registry: a bounded connection and atomic registration.

MLflow's own HTTP client retries for minutes by default; mlgate bounds it with the `tracking`
settings and checks the server answers before any run starts, so an unreachable server fails in
seconds with a clear error and leaves no run behind.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlgate.errors import ConfigError, PermissionDenied, TrackingError
from mlgate.settings import Settings, set_process_env, short

FIX_UNREACHABLE = (
    "start the server, or point tracking.uri (MLGATE_TRACKING_URI / "
    "--tracking-uri) at a running one; credentials go in "
    "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
)


# MlflowClient and its entities carry no type information: they cross into mlgate as Any, and
# each function below says in words what it returns.
Client = Any

DENIED = {"PERMISSION_DENIED", "UNAUTHENTICATED"}  # MLflow's codes for HTTP 403 / 401


def filter_literal(value: str) -> str:
    """`value` as a string literal of an MLflow search filter (`filter_string` of
    search_runs, search_model_versions, search_registered_models): every filter mlgate builds
    puts its values through here, never between quotes of its own.

    MLflow's filter parser (sqlparse, then the quotes trimmed off) has no escape: `'it''s'`
    is searched as `it''s`. So a value is written between the quotes it does not contain:
    single quotes, else double ones (a model named `o'brien` is `"o'brien"`). A value holding
    both, or ending in a backslash (the parser reads `\\'` as an escaped quote and the literal
    runs on into the next clause), is refused with a ValueError rather than searched for as
    something else: MLflow reads most such values back as another value or not at all (model
    names from the settings never hold either, MODEL_NAME)."""
    if value.endswith("\\"):
        raise ValueError(
            f"{value!r} cannot be searched for in MLflow: a filter value cannot end in a "
            "backslash (MLflow's filter parser reads it as escaping the closing quote); "
            "rename it without the trailing backslash"
        )
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(
        f"{value!r} cannot be searched for in MLflow: a filter value cannot hold both a single "
        "and a double quote (MLflow's filter strings have no escape for either); rename it "
        "without one of them"
    )


@contextmanager
def errors(action: str, *, denied: str | None = None) -> Iterator[None]:
    """Turn MLflow and HTTP failures during `action` into a TrackingError; a refused
    credential (HTTP 401/403) into PermissionDenied, with `denied` as its fix."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException, ConnectionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        codes = {getattr(e, "error_code", None) for e in (exc, exc.__cause__)}
        if isinstance(exc, MlflowException) and codes & DENIED:  # copy_model_version wraps
            raise PermissionDenied(
                f"MLflow refused {action} to this credential ({exc.error_code}): {first}",
                fix=denied
                or "use a credential with the permission this needs "
                "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD): see "
                "docs/production-registry.md",
            ) from exc
        raise TrackingError(f"MLflow failed while {action}: {first}", fix=FIX_UNREACHABLE) from exc


def connect(settings: Settings, *, experiment: bool = True) -> Client:  # an mlflow.MlflowClient
    """Point MLflow at the tracking URI, wait (bounded) until it answers and, with `experiment`,
    select the experiment (created if missing) for the runs this process starts. The stages that
    start no run (promote, deploy, rollback, and the registry's readers) pass
    `experiment=False`: one request fewer or more, and none of what MLflow's set_experiment
    loads (its tracing provider)."""
    import mlflow

    uri = settings.tracking_uri
    t = settings.tracking
    # MLflow reads these from the environment only, at request time; they bound its retries.
    set_process_env(
        t.mlflow_env() | {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # logs, not bars
    )
    scheme = urlparse(uri).scheme
    if scheme in {"http", "https"}:
        wait_until_healthy(uri, retries=t.retries, backoff=t.backoff, timeout=t.timeout)
    elif scheme == "sqlite":
        check_sqlite_folder(uri)
    # MLflow resolves the tracking URI from its global, else from MLFLOW_TRACKING_URI (which
    # set_tracking_uri also sets). The variable alone does it in a fresh process, without the
    # reset of MLflow's tracer provider that set_tracking_uri makes (it imports the
    # OpenTelemetry SDK's metrics, 20-30 ms, for traces mlgate never writes); the global is
    # set only when an earlier one in this process points elsewhere.
    set_process_env({"MLFLOW_TRACKING_URI": uri})
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    if experiment:
        with errors(f"selecting experiment '{t.experiment}'"):
            location = t.artifact_location
            if location is None and scheme == "sqlite":
                location = (settings.project_dir / "mlartifacts").as_uri()
            # set_experiment reads the experiment by name (and creates a missing one, in the
            # server's default artifact location): the one read needed unless the experiment
            # must be created in a location of ours, which only a first read can tell.
            if location is not None and client.get_experiment_by_name(t.experiment) is None:
                client.create_experiment(t.experiment, artifact_location=location)
            mlflow.set_experiment(t.experiment)
    return client


def check_sqlite_folder(uri: str) -> None:
    """A sqlite store in a folder that does not exist is refused, not created: a mistyped path
    would otherwise start an empty registry beside the real one, and every version registered
    there would be invisible to the next job."""
    path = uri.removeprefix("sqlite:///")
    if path in {"", ":memory:"}:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise ConfigError(
            f"the folder of the sqlite store in tracking.uri does not exist: {short(str(folder))}",
            fix=f"create it (mkdir -p {short(str(folder))}) or correct tracking.uri",
        )


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


def writes(client: Client) -> Any:  # MLflow's ModelRegistryClient
    """The registry client that `client` (an MlflowClient) delegates each registry call to:
    MLflow's own, the same request to the same store. MlflowClient reads the whole registered
    model before every write (set or delete a tag, an alias, a stage, a version) only to refuse
    a prompt (MLflow keeps prompts as registered models): one request more per write. The
    callers of this read the registered model they write anyway, under the pointer lock, and
    refuse a prompt there (`refuse_prompt`), so each write of a move is one request. When the
    MLflow in use has no such delegate, MlflowClient itself is returned (the same methods)."""
    delegate = getattr(client, "_get_registry_client", None)
    return client if delegate is None else delegate()


PROMPT_TAG = "mlflow.prompt.is_prompt"  # MLflow's mark of a registered model that is a prompt


def refuse_prompt(name: str, tags: Any) -> None:
    """MlflowClient's check before each registry write, made once on a registered model read
    (its `tags`, a dict): a prompt is never written as a model."""
    if PROMPT_TAG in (tags or {}):
        raise ConfigError(
            f"'{name}' is an MLflow prompt, not a registered model: mlgate moves no pointer of it",
            fix="set model.name to a registered model (a prompt's name cannot be reused)",
        )


def run_file(client: Client, run_id: str, path: str, dst: str) -> Path:
    """Download the file `path` of run `run_id`'s artifacts into the folder `dst`: its local
    path. Read from the run's artifact URI rather than `runs:/RUN/PATH`, whose repository reads
    the run a second time and searches the run's logged models before downloading (two
    requests more to the tracking server, for a file that is never a model's)."""
    import mlflow.artifacts

    run = client.get_run(run_id)
    location = f"{run.info.artifact_uri.rstrip('/')}/{path}"
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=dst, tracking_uri=client.tracking_uri
        )
    )


def version_by_alias(client: Client, name: str, alias: str) -> Any:  # ModelVersion | None
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
    client: Client,
    *,
    name: str,
    description: str,
    model_uri: str,
    model_id: str | None,
    run_id: str,
    tags: dict[str, str],
    timeout: int = 300,
    lease: RunLease | None = None,
) -> Any:  # a READY ModelVersion
    """Create a version with its tags and description in one call, wait until READY, and
    delete it again if anything fails: a version never exists without its lineage. With a
    `lease`, the run must still be this job's before and after: a version is never left on a
    run another job has ended."""
    from mlflow.exceptions import MlflowException

    with errors(f"creating registered model '{name}'"):
        try:
            client.create_registered_model(
                name, description="Registered by mlgate; each version carries its lineage tags."
            )
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
                raise
    if lease is not None:
        lease.confirm(f"registering a version of '{name}'")
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
            if not _ready(version):
                version = client.get_model_version(name, version.version)
            if not _ready(version):
                raise TrackingError(
                    f"model version {name}/{version.version} is {version.status}, not READY",
                    fix="check the registry's artifact store, then re-run",
                )
            version = _settled(client, name, run_id, version, timeout)
        if lease is not None:
            lease.confirm(f"keeping version {version.version} of '{name}'")
        # Search again now that the run is confirmed this job's and before it is marked
        # finished: a first create that the registry committed after the search above (a
        # second worker answering the retry first) is dropped here.
        with errors(f"checking the versions of run {run_id} in '{name}'"):
            version = _settled(client, name, run_id, version, timeout)
        return version
    except BaseException:
        _delete_versions_of_run(client, name, run_id)
        raise


# A training run's lease: the time (epoch seconds) until which its job vouches it is alive,
# renewed every lease/3 s by a daemon thread of that job (RunLease).
RUN_LEASE, RUN_HOLDER = "mlgate.lease.expires_at", "mlgate.lease.holder"
ABANDONED = "mlgate.abandoned"
# A RUNNING run without a lease comes from an mlgate that had none: ended only when this old.
LEGACY_RUN_AGE = 24 * 3600.0


class RunLease:
    """The heartbeat of one training run. While the job lives, a daemon thread pushes the
    run's `mlgate.lease.expires_at` tag `lease` seconds ahead every `lease/3` seconds; a job
    killed by any means stops renewing, and once the tag's time has passed the run counts as
    abandoned (`end_abandoned_runs`). The thread also watches the run: when another job ended
    it (this job was paused past its lease), `confirm` fails, so nothing is registered for a
    run that is no longer this job's."""

    def __init__(self, client: Client, run_id: str, *, lease: float, expires: float) -> None:
        import threading

        self.client, self.run_id, self.lease = client, run_id, lease
        self.expires = expires
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="mlgate-run-lease", daemon=True)

    @staticmethod
    def tags(lease: float) -> dict[str, str]:
        """The tags a run is created with, so it is never seen RUNNING without a lease."""
        return {RUN_LEASE: f"{time.time() + lease:.3f}", RUN_HOLDER: _holder()}

    def __enter__(self) -> RunLease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        # A beat stuck on a dead server must not hold the job's exit; a late one only pushes
        # the expiry of a run that has ended, which nothing reads.
        self._thread.join(timeout=2.0)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                run = self.client.get_run(self.run_id)
                if run.info.status != "RUNNING" or ABANDONED in run.data.tags:
                    self.lost = f"run {self.run_id} is {run.info.status}, ended by another job"
                    return
                expires = time.time() + self.lease
                self.client.set_tag(self.run_id, RUN_LEASE, f"{expires:.3f}")
                self.expires = expires
            except Exception:  # the server may be back by the next beat; confirm() decides
                continue

    def confirm(self, action: str) -> None:
        """Check, against the server, that the run is still this job's before `action`."""
        if self.lost is None and time.time() < self.expires:
            with errors(f"checking run {self.run_id} before {action}"):
                run = self.client.get_run(self.run_id)
            if run.info.status != "RUNNING" or ABANDONED in run.data.tags:
                self.lost = f"run {self.run_id} is {run.info.status}, ended by another job"
        if self.lost is not None or time.time() >= self.expires:
            raise TrackingError(
                f"this job's lease on run {self.run_id} was lost before {action} "
                f"({self.lost or 'not renewed in time'}); nothing is registered from it",
                fix="re-run the job; if it is paused or slowed this long, raise tracking.run_lease",
            )


def run_lease(client: Client, run_id: str, settings: Settings, expires: float) -> RunLease:
    return RunLease(client, run_id, lease=settings.tracking.run_lease, expires=expires)


def _holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def abandoned_because(run: Any, now: float) -> str | None:
    """Why a RUNNING run counts as abandoned (its job is provably dead), or None (alive, or
    not provably dead). Only an expired lease, or no lease and older than LEGACY_RUN_AGE."""
    if run.info.status != "RUNNING":
        return None
    raw = run.data.tags.get(RUN_LEASE)
    try:
        expires = float(raw) if raw is not None else None
    except ValueError:
        expires = None  # unreadable: judged like a run without a lease
    if expires is not None and math.isfinite(expires):
        if expires >= now:
            return None
        at = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
        return f"its lease expired at {at} (holder {run.data.tags.get(RUN_HOLDER, 'unknown')})"
    started = (run.info.start_time or 0) / 1000
    if now - started > LEGACY_RUN_AGE:
        return f"it has no readable lease and started over {LEGACY_RUN_AGE / 3600:g} h ago"
    return None


def end_abandoned_runs(client: Client, settings: Settings, run_name: str) -> list[str]:
    """Runs of this same job (same run name: data version and commit) that a killed job or a
    lost server left RUNNING: marked KILLED, and any version a cut-short registration left
    deleted. Only runs whose job is provably dead are touched (`abandoned_because`): a run
    whose lease is live belongs to a job still at work (a concurrent training at the same
    commit and data) and is left alone. A re-run so converges to no RUNNING ghost."""
    name = settings.model.name
    ended = []
    with errors("looking for runs a killed job left RUNNING"):
        experiment = client.get_experiment_by_name(settings.tracking.experiment)
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.run_name = {filter_literal(run_name)}"
            " and attributes.status = 'RUNNING'",
        )
        for found in runs:
            run_id = found.info.run_id
            run = client.get_run(run_id)  # fresh, not the search's copy: it may have renewed
            why = abandoned_because(run, time.time())
            if run.info.run_name != run_name or why is None:
                continue
            client.set_tag(run_id, ABANDONED, f"ended by a re-run of this job: {why}")
            client.set_terminated(run_id, status="KILLED")
            _delete_versions_of_run(client, name, run_id)
            ended.append(run_id)
    return ended


# A model version's status as the client reads it (ModelVersionStatus's names).
READY, PENDING = "READY", "PENDING_REGISTRATION"


def _ready(version: Any) -> bool:
    return str(version.status) == READY


def _settled(client: Client, name: str, run_id: str, version: Any, timeout: int) -> Any:
    """The one version `run_id` keeps in `name` (the lowest-numbered: the rule every reader
    applies, so two readers never keep different ones), once the others are dropped."""
    kept = _drop_retried_duplicates(client, name, run_id)
    if kept is None:
        raise TrackingError(
            f"version {version.version} of '{name}' (run {run_id}) is gone from the registry "
            "right after it was made",
            fix="check whether another job or a person deleted it, then re-run",
        )
    if kept == str(version.version):
        return version
    version = client.get_model_version(name, kept)
    if not _ready(version):
        version = _await_ready(client, name, kept, timeout)
    return version


def _await_ready(client: Client, name: str, version: str, timeout: int) -> Any:
    deadline = time.monotonic() + timeout
    found = client.get_model_version(name, version)
    while str(found.status) == PENDING:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
        found = client.get_model_version(name, version)
    if not _ready(found):
        raise TrackingError(
            f"model version {name}/{version} is {found.status}, not READY",
            fix="check the registry's artifact store, then re-run",
        )
    return found


def _drop_retried_duplicates(client: Client, name: str, run_id: str) -> str | None:
    """One run registers one version. A create request whose answer timed out may still have
    been committed, before or after the retried one (a registry with several workers), and
    MLflow's HTTP client retries POSTs too, so a slow registry can hold two versions of this
    run: keep the lowest-numbered, delete the others (the run is this job's, under its lease).
    Not best effort: a failure here fails the registration. Returns the version kept."""
    kept, dropped = _keep_lowest(client, name, run_id)
    if dropped:
        print(
            f"registry: dropped version(s) {', '.join(dropped)} of '{name}', made twice by a "
            f"retried request; version {kept} is this run's",
            file=sys.stderr,
        )
    return kept


# MLflow answers a search of versions one page at a time: at most `max_results` versions (10,000
# by default, and by default only the first page), the rest behind the page's `token`. Every
# reader of "all the versions" in mlgate pages through them with this one function, so a model
# with more versions than a page is seen whole (the duplicate sweep, doctor, the lock, the
# production copies). 1,000 a page keeps each answer small on a busy server.
PAGE_SIZE = 1000


def search_versions(
    client: Client, name: str, *, run_id: str | None = None, page_size: int = PAGE_SIZE
) -> list[Any]:
    """Every (not deleted) version of `name` (with `run_id`, only those registered from that
    run), all pages, in the registry's order."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    query = f"name = {filter_literal(name)}"
    if run_id is not None:
        query += f" and run_id = {filter_literal(run_id)}"
    out: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(query, max_results=page_size, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _keep_lowest(
    client: Client, name: str, run_id: str, *, marked: bool = False, page_size: int = PAGE_SIZE
) -> tuple[str | None, list[str]]:
    """Of the versions of `name` from `run_id` (with `marked`, only those whose
    `mlgate.run_id` tag names the run: versions mlgate registered), keep the lowest-numbered
    and delete the others, except any holding an alias (someone chose to use it: left for a
    person). Returns (the version kept, the versions deleted)."""
    versions = _versions_of_run(client, name, run_id, marked=marked, page_size=page_size)
    if not versions:
        return None, []
    return str(versions[0].version), _deleted_unless_aliased(client, name, versions[1:])


def _versions_of_run(
    client: Client, name: str, run_id: str, *, marked: bool = False, page_size: int = PAGE_SIZE
) -> list[Any]:
    """The versions of `name` registered from `run_id`, lowest-numbered first, each checked
    against the run (with `marked`, also its `mlgate.run_id` tag)."""
    return sorted(
        (
            v
            for v in search_versions(client, name, run_id=run_id, page_size=page_size)
            if v.name == name
            and v.run_id == run_id
            and (not marked or (v.tags or {}).get(MARKER) == run_id)
        ),
        key=lambda v: int(v.version),
    )


def _deleted_unless_aliased(client: Client, name: str, versions: list[Any]) -> list[str]:
    """Delete `versions` of `name`, except any holding an alias: that one someone chose to
    use, and is left for a person to judge. Returns the versions deleted."""
    if not versions:
        return []
    aliased = _aliased(client, name)
    deleted = []
    for version in versions:
        if str(version.version) in aliased:
            continue
        client.delete_model_version(name, version.version)
        deleted.append(str(version.version))
    return deleted


def _aliased(client: Client, name: str) -> set[str]:
    """The versions of `name` holding an alias. Read from the registered model: the versions a
    search returns carry no aliases (MLflow's store leaves them out)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return set()
        raise
    return {str(version) for version in (model.aliases or {}).values()}


# The tag train puts on each version it registers: the run it came from.
MARKER = "mlgate.run_id"


@dataclass(frozen=True)
class Duplicate:
    """Versions of one run beyond its first: what a create committed after its retry leaves."""

    run_id: str
    kept: str
    extra: tuple[str, ...]

    @property
    def message(self) -> str:
        return (
            f"run {self.run_id} has {len(self.extra) + 1} versions: {', '.join(self.extra)} "
            f"beside {self.kept} (a registration request committed twice); the lowest, "
            f"{self.kept}, is the run's"
        )


def duplicate_versions(client: Client, name: str, *, page_size: int = PAGE_SIZE) -> list[Duplicate]:
    """Runs of `name` with more than one version that mlgate registered (tagged MARKER), read
    only. Versions holding an alias are listed but never dropped (`drop_duplicate_versions`)."""
    by_run: dict[str, list[Any]] = {}
    with errors(f"reading the versions of '{name}'"):
        for v in search_versions(client, name, page_size=page_size):
            if v.name == name and v.run_id and (v.tags or {}).get(MARKER) == v.run_id:
                by_run.setdefault(v.run_id, []).append(v)
    found = []
    for run_id, versions in sorted(by_run.items()):
        if len(versions) > 1:
            numbers = sorted(int(v.version) for v in versions)
            found.append(Duplicate(run_id, str(numbers[0]), tuple(str(n) for n in numbers[1:])))
    return found


def drop_duplicate_versions(
    client: Client, name: str, *, page_size: int = PAGE_SIZE
) -> list[Duplicate]:
    """Delete every version of `name` beyond the lowest of its run (the rule registration
    applies, so this and a registration at work never keep different ones): run by the next
    training and by `mlgate doctor --repair`. Returns what was dropped."""
    dropped = []
    for found in duplicate_versions(client, name, page_size=page_size):
        with errors(f"dropping the extra versions of run {found.run_id} in '{name}'"):
            kept, deleted = _keep_lowest(
                client, name, found.run_id, marked=True, page_size=page_size
            )
        if kept is not None and deleted:
            dropped.append(Duplicate(found.run_id, kept, tuple(deleted)))
    return dropped


def _delete_versions_of_run(client: Client, name: str, run_id: str) -> list[str]:
    """Delete the versions of `name` registered from `run_id` (a failed or dead run). Best
    effort: the registry may be the thing that failed."""
    try:
        return _versions_of_run_deleted(client, name, run_id)
    except Exception:
        return []


def _versions_of_run_deleted(client: Client, name: str, run_id: str) -> list[str]:
    """Delete the versions of `name` registered from `run_id`, except any holding an alias."""
    return _deleted_unless_aliased(client, name, _versions_of_run(client, name, run_id))


# The lock and the pointer moves live in mlgate.registry.moves; these names stay importable here.
_MOVED = {
    "PointerLock",
    "pointer_lock",
    "move_alias",
    "PENDING",
    "HISTORY",
    "HISTORY_TAGS",
}


def __getattr__(
    name: str,
) -> Any:  # PEP 562: imported lazily, mlgate.registry.moves imports this module
    if name in _MOVED:
        from mlgate.registry import moves as registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
