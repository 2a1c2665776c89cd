"""The MLflow tracking server and model registry: a bounded connection and atomic registration.

MLflow's own HTTP client retries for minutes by default; mlgate bounds it with the `tracking`
settings and checks the server answers before any run starts, so an unreachable server fails in
seconds with a clear error and leaves no run behind.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlgate.errors import ConfigError, TrackingError
from mlgate.settings import Settings, short

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
        check_sqlite_folder(uri)
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
    lease: RunLease | None = None,
):  # -> ModelVersion
    """Create a version with its tags and description in one call, wait until READY, and
    delete it again if anything fails: a version never exists without its lineage. With a
    `lease`, the run must still be this job's before and after: a version is never left on a
    run another job has ended."""
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
            if ModelVersionStatus.from_string(version.status) != ModelVersionStatus.READY:
                version = client.get_model_version(name, version.version)
            if ModelVersionStatus.from_string(version.status) != ModelVersionStatus.READY:
                raise TrackingError(
                    f"model version {name}/{version.version} is {version.status}, not READY",
                    fix="check the registry's artifact store, then re-run",
                )
        if lease is not None:
            lease.confirm(f"keeping version {version.version} of '{name}'")
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

    def __init__(self, client, run_id: str, *, lease: float, expires: float) -> None:
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
                fix="re-run the job; if it is paused or slowed this long, raise "
                "tracking.run_lease",
            )


def run_lease(client, run_id: str, settings: Settings, expires: float) -> RunLease:
    return RunLease(client, run_id, lease=settings.tracking.run_lease, expires=expires)


def _holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def abandoned_because(run, now: float) -> str | None:
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


def end_abandoned_runs(client, settings: Settings, run_name: str) -> list[str]:
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
            filter_string=f"attributes.run_name = '{run_name}' and attributes.status = 'RUNNING'",
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


def _delete_versions_of_run(client, name: str, run_id: str) -> list[str]:
    """Delete the versions of `name` registered from `run_id` (a failed or dead run), except
    any holding an alias: that one someone chose to use, and is left for a person to judge.
    Each version is checked against the run before it is deleted. Best effort."""
    deleted = []
    try:
        for version in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
            if version.name != name or version.run_id != run_id or version.aliases:
                continue
            client.delete_model_version(name, version.version)
            deleted.append(str(version.version))
    except Exception:  # best effort: the registry may be the thing that failed
        pass
    return deleted


LOCK_SUFFIX = ".mlgate-lock"
HOLDER, EXPIRES = "mlgate.lock.holder", "mlgate.lock.expires_at"
PENDING = "mlgate.pending."  # + alias: a move begun and not yet fully recorded
# + ALIAS.STAMP.vVERSION on the registered model: one tag a move, never rewritten, so the
# registry keeps the whole history of its pointers (`mlgate lineage`, `mlgate metrics`).
HISTORY = "mlgate.history."


class PointerLock:
    """A lock on one registered model's pointers (aliases and stages), held in the registry.

    MLflow has no compare-and-set on aliases, so "read the champion, compare, move" races
    between two promotions: both read the same champion and the later one overwrites the
    earlier on a stale comparison. Workflow `concurrency` groups only order jobs of one
    repository. Creating a registered model, though, is atomic in every MLflow store (the name
    is unique), so a registered model named `<name>.mlgate-lock` is a mutex that works for any
    caller of the same registry. Its tags say who holds it and until when (a lease): a holder
    that died is replaced once its lease ends, and a holder checks its lease before it moves a
    pointer, so a process paused past its lease moves nothing.
    """

    def __init__(self, client, name: str, *, holder: str, wait: float, lease: float) -> None:
        self.client, self.name, self.lock = client, name, name + LOCK_SUFFIX
        self.token = f"{holder} #{uuid.uuid4().hex[:12]}"
        self.wait, self.lease = wait, lease
        self.expires = 0.0

    def __enter__(self) -> PointerLock:
        from mlflow.exceptions import MlflowException

        deadline, delay, announced = time.monotonic() + self.wait, 0.05, False
        while True:
            now = time.time()
            with errors(f"taking the lock on {self.name}'s aliases"):
                try:
                    self.client.create_registered_model(
                        self.lock,
                        tags={HOLDER: self.token, EXPIRES: str(now + self.lease)},
                        description=f"Held by mlgate while it moves the aliases of {self.name}; "
                        "deleted when the move ends. Safe to delete once its holder is gone.",
                    )
                    self.expires = now + self.lease
                    return self
                except MlflowException as exc:
                    if exc.error_code == "RESOURCE_DOES_NOT_EXIST" and time.monotonic() < deadline:
                        # MLflow's SQL store answers a name clash by reading the holder back;
                        # when the holder released the lock in between, that read fails so:
                        # the lock is free again (16 racing processes on PostgreSQL hit this).
                        continue
                    if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
                        raise
                holder, expires = self._holder()
            if holder == self.token:  # our create was retried after it had succeeded
                self.expires = expires
                return self
            if holder is None:
                continue  # released in between: try again at once
            if expires < now:
                with errors(f"freeing the expired lock on {self.name}'s aliases"):
                    self._delete_if_held_by(holder)  # its holder died: the lease ran out
                continue
            if not announced:
                print(
                    f"waiting for the lock on {self.name}'s aliases, held by {holder}",
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
            if time.monotonic() > deadline:
                until = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
                raise TrackingError(
                    f"{self.name}'s aliases are locked by {holder} (lease until {until}); "
                    f"waited {self.wait:g} s",
                    fix="another promotion, deploy or rollback of this model is running: "
                    "re-run when it ends. If its process died, the lock frees itself when the "
                    f"lease ends, or delete the registered model '{self.lock}'",
                )
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._delete_if_held_by(self.token)
        except Exception:  # the lease frees it; never hide the error that got us here
            pass

    def check(self, action: str) -> None:
        """Refuse to go on when the lease ran out (this process was paused or slow)."""
        if time.time() >= self.expires:
            raise TrackingError(
                f"the lock on {self.name}'s aliases expired before {action}; nothing was moved",
                fix="re-run; if moves take this long, raise tracking.lock_lease",
            )

    def _holder(self) -> tuple[str | None, float]:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.lock).tags
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None, 0.0
            raise
        try:
            return tags.get(HOLDER, "unknown"), float(tags.get(EXPIRES, "0"))
        except ValueError:
            return tags.get(HOLDER, "unknown"), 0.0

    def _delete_if_held_by(self, holder: str) -> None:
        from mlflow.exceptions import MlflowException

        if self._holder()[0] != holder:
            return
        try:
            self.client.delete_registered_model(self.lock)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


def pointer_lock(client, settings: Settings, action: str) -> PointerLock:
    """The lock on `settings.model.name`'s pointers, named after who takes it for what."""
    g = settings.github
    who = f"{action} by {g.run_url or f'{socket.gethostname()} pid {os.getpid()}'}"
    return PointerLock(
        client,
        settings.model.name,
        holder=who,
        wait=settings.tracking.lock_wait,
        lease=settings.tracking.lock_lease,
    )


def move_alias(
    client,
    name: str,
    alias: str,
    version: str,
    *,
    lock: PointerLock,
    tags: Mapping[str, str],
    previous: str | None = None,
    previous_tags: Mapping[str, str] | None = None,
) -> None:
    """The one place registry pointers move, under `lock`: `alias` to `version`, the matching
    stage with the previous holder archived (for users of stages), then the tags of both
    versions. The whole move is first written as one pending tag on `version`, so a crash
    between the pointer and its tags leaves a record that `finish_pending` completes."""
    import warnings

    pending = json.dumps(
        {
            "tags": dict(tags),
            "previous": previous,
            "previous_tags": dict(previous_tags or {}),
            "at": datetime.now(UTC).isoformat(timespec="microseconds"),
        }
    )
    with errors(f"moving '{alias}' of {name} to version {version}"):
        client.set_model_version_tag(name, version, PENDING + alias, pending)
        lock.check(f"moving '{alias}' to version {version}")
        client.set_registered_model_alias(name, alias, version)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated upstream
            client.transition_model_version_stage(
                name, version, alias.capitalize(), archive_existing_versions=True
            )
        _record(client, name, alias, version, pending)


def finish_pending(client, name: str, alias: str, version) -> bool:  # version: ModelVersion
    """Complete the record of a move to `version`, which holds `alias`, that a crash cut short
    (the pointer moved, its tags were not all written). True when there was one."""
    pending = version.tags.get(PENDING + alias)
    if pending is None:
        return False
    with errors(f"completing the record of '{alias}' on version {version.version}"):
        _record(client, name, alias, str(version.version), pending)
    return True


def _record(client, name: str, alias: str, version: str, pending: str) -> None:
    move = json.loads(pending)
    for key, value in move["tags"].items():
        client.set_model_version_tag(name, version, key, value)
    if move["previous"]:
        for key, value in move["previous_tags"].items():
            client.set_model_version_tag(name, move["previous"], key, value)
    if "at" in move:  # written since the history was kept
        at = datetime.fromisoformat(move["at"])
        event = {
            "alias": alias,
            "version": version,
            "previous": move["previous"],
            "at": move["at"],
            "tags": {k: v[:1000] for k, v in move["tags"].items() if k in HISTORY_TAGS},
        }
        key = f"{HISTORY}{alias}.{at:%Y%m%dT%H%M%S.%f}Z.v{version}"
        client.set_registered_model_tag(name, key, json.dumps(event, sort_keys=True))
    client.delete_model_version_tag(name, version, PENDING + alias)


# The tags of a move that its history event keeps (who, why, from which run).
HISTORY_TAGS = {
    "mlgate.production.approved_by",
    "mlgate.production.image",
    "mlgate.production.run_url",
    "mlgate.production.commit",
    "mlgate.rollback.from",
    "mlgate.rollback.reason",
    "mlgate.rollback.by",
    "mlgate.promotion.run_url",
    "mlgate.promotion.champion_at_evaluation",
}
