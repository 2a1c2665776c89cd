"""Stage 5: after the Environment approval, build and push the serving image, then move the
model to Production. Never one without the other.

The order is what makes it safe to crash anywhere and re-run:

1. The image of a version is content-addressed: `IMAGE:vN-<sha12>`, where sha12 starts the
   sha256 of the booster file MLflow logged for version N (read from the registry's artifact
   store, never from a tag). An image is reused only if it provably holds this version's model:
   it is in the configured repository (deploy.image) and its labels and its `bundle.json` name
   this model's sha256, run id, name and version, and the model file inside has that sha256.
   Otherwise the bundle is exported from the registry, the image built from the top-level
   Dockerfile (docker-py, credentials never on a command line), pushed with bounded retries on
   transient registry errors, and verified the same way once pushed.
2. The pushed digest is read back from the registry, and recorded on the version
   (`mlgate.image.*`). An image tag is not Production: nothing points at it yet. The
   `mlgate.image.*` tags are a hint, never trusted as such: an image they name outside the
   configured repository is ignored (and no credentials go to its host), one inside it is
   verified like any other.
3. Only then does `production` move (alias, and the Production stage with the previous one
   archived), and the version is tagged with who approved, the run, the commit and the version
   it replaced. A version already in Production with its image is a no-op.

So Production never points at a version whose image is not in the registry or holds another
model, and no mutable "production" image tag exists to disagree with the registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlgate import cli
from mlgate.errors import (
    ConfigError,
    DeployError,
    GateFailed,
    ModelError,
    ProductionLost,
)
from mlgate.github import environment
from mlgate.github import outputs as github
from mlgate.pipeline.export import export_bundle
from mlgate.pipeline.promote import load_decision
from mlgate.registry import moves as registry
from mlgate.registry import tracking
from mlgate.registry.logged import logged_booster
from mlgate.registry.moves import get_version
from mlgate.serving.bundle import META_FILE, MODEL_FILE
from mlgate.settings import Settings, process_env

PRODUCTION = "production"
STAGING = "staging"
SOURCE_FILES = ("Dockerfile", "requirements-serve.lock")


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"

    @classmethod
    def recorded(cls, tags: Mapping[str, str]) -> Image | None:
        """The image a version's `mlgate.image.*` tags record, if any (unchecked: see
        `trusted_record`)."""
        if not tags.get("mlgate.image.digest"):
            return None
        return cls(
            tags.get("mlgate.image.repository", ""),
            tags.get("mlgate.image.tag", ""),
            tags["mlgate.image.digest"],
        )


# The labels (and bundle.json keys) that say which model an image holds.
LABEL_NAME = "dev.mlgate.model.name"
LABEL_VERSION = "dev.mlgate.model.version"
LABEL_RUN_ID = "dev.mlgate.model.run-id"
LABEL_SHA256 = "dev.mlgate.model.sha256"
BUNDLE_DIR = "/model"  # where the Dockerfile copies the bundle
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelDigest:
    """What a serving image must hold: a version's logged booster (sha256) and its run."""

    name: str
    version: str
    run_id: str
    sha256: str

    @property
    def tag(self) -> str:
        """The image tag: the version and the model's digest, so that a reset MLflow store, a
        retrained version N or a second store sharing the repository never names an image
        that holds another model."""
        return f"v{self.version}-{self.sha256[:12]}"

    def labels(self) -> dict[str, str]:
        return {
            LABEL_NAME: self.name,
            LABEL_VERSION: self.version,
            LABEL_RUN_ID: self.run_id,
            LABEL_SHA256: self.sha256,
        }


def model_digest(client: Any, name: str, version: str) -> ModelDigest:
    """The digest of `name` version `version`: the sha256 of the booster file MLflow logged
    (downloaded from the artifact store, the source), never a tag that anyone can write."""
    logged = logged_booster(client, name, version)
    return ModelDigest(name, logged.version, logged.run_id, logged.sha256)


def trusted_record(tags: Mapping[str, str], repository: str) -> tuple[Image | None, str | None]:
    """The image a version's tags record, if it may be looked at: in the configured
    `repository` (so credentials only ever go to its host) with a well-formed digest. Returns
    (image, None), or (None, why it is ignored); (None, None) when nothing is recorded."""
    image = Image.recorded(tags)
    if image is None:
        return None, None
    if image.repository != repository:
        return None, (
            f"its tags name the image repository {image.repository!r}, not the configured "
            f"{repository!r} (deploy.image)"
        )
    if not DIGEST.fullmatch(image.digest):
        return None, f"its tags name a malformed image digest {image.digest[:80]!r}"
    return image, None


@dataclass(frozen=True)
class Deployment:
    version: str
    image: Image
    message: str
    changed: bool = False
    previous: str | None = None
    reused_image: bool = False


def image_repository(settings: Settings) -> str:
    if settings.deploy.image:
        return settings.deploy.image
    name = settings.model.name.lower()
    if settings.github.repository:
        return f"ghcr.io/{settings.github.repository.lower()}/{name}"
    return f"localhost:5000/mlgate/{name}"


def source_dir(given: Path | None) -> Path:
    """mlgate's source tree (Dockerfile, serving lock, src/mlgate): `--source`, else the tree
    this package runs from."""
    import mlgate  # its __init__.py: src/mlgate/__init__.py, wherever this module sits

    candidates = [given] if given else [Path(mlgate.__file__).resolve().parents[2]]
    for root in candidates:
        if root and all((root / f).is_file() for f in SOURCE_FILES):
            return root
    raise ConfigError(
        f"no mlgate source tree with {', '.join(SOURCE_FILES)} at {candidates[0]}",
        fix="pass --source with mlgate's checkout (the setup action's `source` output)",
    )


@contextmanager
def docker_errors(action: str, *, offline: bool = False) -> Iterator[None]:
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.BuildError as exc:
        log = "".join(str(c.get("stream", c.get("error", ""))) for c in list(exc.build_log))
        tail = "".join(str(c.get("stream", c.get("error", ""))) for c in list(exc.build_log)[-8:])
        raise DeployError(
            f"{action} failed: {exc.msg}\n{tail}", fix=build_fix(log, offline=offline)
        ) from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DeployError(
            f"{action} failed: {_first_line(exc)}",
            fix="check that the Docker engine runs (DOCKER_HOST) and the registry "
            "answers; credentials go in REGISTRY_USERNAME / REGISTRY_PASSWORD",
        ) from exc


def build_fix(log: str, *, offline: bool) -> str:
    """The fix for a failed image build, from what its log says went wrong (an offline build
    that lacks wheels is not a base image problem)."""
    lowered = log.lower()
    if "no matching distribution" in lowered or "could not find a version" in lowered:
        if offline:
            return (
                "the offline build found no wheel for a pin of requirements-serve.lock in "
                "deploy.wheels_dir (the base image is fine): `export MLGATE_DEPLOY_WHEELS_DIR="
                "$(scripts/download-wheels.sh)` downloads the lock's Linux wheels"
            )
        return (
            "pip could not reach the package index from inside the build: build offline "
            "with the lock's wheels downloaded on the host: `export MLGATE_DEPLOY_WHEELS_DIR="
            "$(scripts/download-wheels.sh)`"
        )
    if "hashes" in lowered and ("do not match" in lowered or "mismatch" in lowered):
        return (
            "a wheel does not match the lock's hashes: delete deploy.wheels_dir and download "
            "the wheels again with `scripts/download-wheels.sh`"
        )
    if any(
        sign in lowered
        for sign in (
            "pull access denied",
            "manifest unknown",
            "no such image",
            "repository does not exist",
            "registry-1.docker.io",
        )
    ):
        return (
            "the base image is not on the engine and cannot be pulled: build one with "
            "`scripts/build-base-image.sh` (no pull needed) and set deploy.base_image "
            "(MLGATE_DEPLOY_BASE_IMAGE), or make python:3.11-slim-bookworm pullable"
        )
    return "see the build log above (deploy.base_image, deploy.wheels_dir)"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect_docker() -> Any:  # docker.DockerClient
    import docker

    with docker_errors("connecting to the Docker engine"):
        client = docker.from_env(timeout=600)
        client.ping()
    return client


def registry_digest(client: Any, ref: str, auth: dict[str, str] | None) -> str | None:
    """The digest the registry holds for `ref`, or None when it has no such tag."""
    import docker.errors

    try:
        digest: str = client.images.get_registry_data(ref, auth_config=auth).id
        return digest
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        if "manifest unknown" in str(exc).lower() or exc.status_code == 404:
            return None
        if exc.status_code in (401, 403) or "unauthorized" in str(exc).lower():
            raise DeployError(
                f"the registry refused the credentials for {ref}: {_first_line(exc)}",
                fix="set REGISTRY_USERNAME / REGISTRY_PASSWORD (for GHCR: github.actor and the "
                "workflow token with `packages: write`)",
            ) from exc
        raise


def pull(docker_client: Any, pinned: str, auth: dict[str, str] | None) -> Any:  # Image | None
    """Pull `REPOSITORY@DIGEST` (a no-op when the engine has it), or None when the registry
    does not hold it. Callers pass only refs in the configured repository: `auth` goes to
    that registry's host and nowhere else."""
    import docker.errors

    try:
        return docker_client.images.pull(pinned, auth_config=auth)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        text = str(exc).lower()
        if exc.status_code in (401, 403) or "unauthorized" in text or "denied" in text:
            raise DeployError(
                f"the registry refused the credentials for {pinned}: {_first_line(exc)}",
                fix="set REGISTRY_USERNAME / REGISTRY_PASSWORD (for GHCR: github.actor and the "
                "workflow token with `packages: write`)",
            ) from exc
        if "manifest unknown" in text or "not found" in text or exc.status_code == 404:
            return None
        raise


def image_files(docker_client: Any, image_id: str, paths: Sequence[str]) -> dict[str, bytes | None]:
    """The bytes of files inside an image, by path (None: absent), read from a container that
    is created and never started (no network, nothing runs)."""
    import docker.errors

    container = docker_client.containers.create(
        image_id, command=["/nonexistent"], network_disabled=True
    )
    try:
        found: dict[str, bytes | None] = {}
        for path in paths:
            try:
                stream, _ = container.get_archive(path)
            except docker.errors.NotFound:
                found[path] = None
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.extractfile(Path(path).name)
                found[path] = None if member is None else member.read()
        return found
    finally:
        container.remove(force=True)


# (REPOSITORY@DIGEST, model) pairs this process verified: a digest names immutable content
# (the engine checks it on pull), so one verification holds for the life of the process.
_VERIFIED: set[tuple[str, ModelDigest]] = set()


def image_mismatch(
    docker_client: Any,
    image: Image,
    model: ModelDigest,
    auth: dict[str, str] | None,
    built_id: str | None = None,
) -> str | None:
    """Why `image` (in the configured repository, by digest) does not provably hold `model`,
    or None when it does: the registry holds it, its labels and its bundle.json name the
    model's sha256, run id, name and version, and the booster inside has that sha256 (the
    server itself refuses to start when the compiled trees do not match bundle.json).
    `built_id`: the id of the image this process just built from a bundle it checked; when
    the registry's image is that very image (same config digest), its files are known."""
    if (image.pinned, model) in _VERIFIED:
        return None
    pulled = pull(docker_client, image.pinned, auth)
    if pulled is None:
        return "the registry does not hold it"
    labels = pulled.labels or {}
    wrong = {k: labels.get(k) for k, v in model.labels().items() if labels.get(k) != v}
    if wrong:
        return "its labels name " + ", ".join(f"{k}={v!r}" for k, v in sorted(wrong.items()))
    if built_id is not None and pulled.id == built_id:
        _VERIFIED.add((image.pinned, model))
        return None
    meta_path, model_path = f"{BUNDLE_DIR}/{META_FILE}", f"{BUNDLE_DIR}/{MODEL_FILE}"
    files = image_files(docker_client, pulled.id, [meta_path, model_path])
    meta_file, model_file = files[meta_path], files[model_path]
    if meta_file is None or model_file is None:
        return f"it has no model bundle in {BUNDLE_DIR}"
    try:
        meta = json.loads(meta_file)
    except ValueError:
        return f"its {META_FILE} is not JSON"
    said = {
        LABEL_NAME: meta.get("name"),
        LABEL_VERSION: str(meta.get("version")),
        LABEL_RUN_ID: meta.get("run_id"),
        LABEL_SHA256: meta.get("model_sha256"),
    }
    wrong = {k: said[k] for k, v in model.labels().items() if said[k] != v}
    if wrong:
        return f"its {META_FILE} names " + ", ".join(f"{k}={v!r}" for k, v in wrong.items())
    held = hashlib.sha256(model_file).hexdigest()
    if held != model.sha256:
        return f"its {MODEL_FILE} has sha256 {held}"
    _VERIFIED.add((image.pinned, model))
    return None


def verify_image(
    settings: Settings,
    docker_client: Any,
    image: Image,
    model: ModelDigest,
    built_id: str | None = None,
) -> str | None:
    """`image_mismatch` for an image that must be in the configured repository: anything
    else is refused before any request (no credentials to another host)."""
    repository = image_repository(settings)
    if image.repository != repository or not DIGEST.fullmatch(image.digest):
        return f"it is not a digest in the configured repository {repository}"
    with docker_errors(f"verifying {image.pinned}"):
        return image_mismatch(
            docker_client, image, model, settings.registry.auth_config(), built_id
        )


LINUX_WHEELS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def download_wheels(lock: Path, cache: Path, name: str, python: str = "3.11") -> Path:
    """Linux wheels of every pin in `lock` (hashes checked), for an offline image build
    (deploy.wheels_dir), into `cache/NAME-wheels-DIGEST` (the lock's sha256): a changed lock
    gets a new folder. Done once: `.complete` marks a finished download. Returns the folder."""
    import hashlib
    import subprocess
    import sys

    dest = cache / f"{name}-wheels-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    if (dest / ".complete").is_file():
        return dest
    uvx = Path(sys.executable).with_name("uvx")
    command = [str(uvx), "--from", "pip", "pip"] if uvx.is_file() else [sys.executable, "-m", "pip"]
    subprocess.run(
        [
            *command,
            "download",
            "--quiet",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-deps",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *[f"--platform={p}" for p in LINUX_WHEELS],
            "-r",
            str(lock),
            "-d",
            str(dest),
        ],
        check=True,
        capture_output=True,
        timeout=900,
        env={**process_env(), "UV_SYSTEM_CERTS": "1"},  # uv verifies with the system's certificates
    )
    (dest / ".complete").write_text("")
    return dest


def build_context(
    settings: Settings,
    client_mlflow: Any,
    version: str,
    source: Path,
    dest: Path,
    model: ModelDigest | None = None,
) -> Any:
    """Dockerfile, serving lock, mlgate's package, the model bundle and (offline) wheels. With
    `model` (a ModelDigest), the exported bundle must hold that very booster."""
    for name in SOURCE_FILES:
        shutil.copy2(source / name, dest / name)
    shutil.copytree(
        source / "src" / "mlgate",
        dest / "src" / "mlgate",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (dest / "wheels").mkdir()
    if settings.deploy.wheels_dir:
        wheels = settings.path(settings.deploy.wheels_dir)
        if not wheels.is_dir() or not any(wheels.glob("*.whl")):
            raise ConfigError(
                f"deploy.wheels_dir {wheels} is not a directory of wheels",
                fix="download the Linux wheels of requirements-serve.lock first: "
                "`export MLGATE_DEPLOY_WHEELS_DIR=$(scripts/download-wheels.sh)`",
            )
        for wheel in wheels.glob("*.whl"):
            shutil.copy2(wheel, dest / "wheels" / wheel.name)
    meta = export_bundle(
        client_mlflow,
        settings.model.name,
        version,
        dest / "bundle",
        compiler=settings.serve.compiler,
    )
    if model is not None and (meta["model_sha256"], meta["run_id"]) != (
        model.sha256,
        model.run_id,
    ):
        raise ModelError(
            f"{model.name} version {version} changed while it was deployed (its booster has "
            f"sha256 {meta['model_sha256'][:12]}, was {model.sha256[:12]})",
            fix="find out who rewrote the registry's artifacts; then re-run the deploy",
        )
    return meta


def build_and_push(
    settings: Settings,
    client_mlflow: Any,
    version: str,
    source: Path,
    model: ModelDigest | None = None,
) -> Image:
    """The verified image of `version` in the configured repository: `IMAGE:vN-<sha12>`
    reused when it provably holds this version's model, else built, pushed and verified."""
    repository = image_repository(settings)
    model = model or model_digest(client_mlflow, settings.model.name, version)
    tag = model.tag
    ref = f"{repository}:{tag}"
    auth = settings.registry.auth_config()
    docker_client = connect_docker()
    with docker_errors(f"looking up {ref} in the registry"):
        existing = registry_digest(docker_client, ref, auth)
    if existing:
        why = verify_image(settings, docker_client, Image(repository, tag, existing), model)
        if why is None:
            print(f"{ref} is already in the registry ({existing}) with this model: reusing it")
            return Image(repository, tag, existing)
        print(f"{ref} is in the registry but does not hold this model ({why}): rebuilding")
    with tempfile.TemporaryDirectory(prefix="mlgate-image-") as tmp:
        context = Path(tmp)
        meta = build_context(settings, client_mlflow, version, source, context, model)
        offline = bool(settings.deploy.wheels_dir)
        args = {
            "BASE_IMAGE": settings.deploy.base_image,
            "PIP_OFFLINE": "1" if offline else "0",
            "MODEL_NAME": meta["name"],
            "MODEL_VERSION": meta["version"],
            "MODEL_RUN_ID": meta["run_id"],
            "MODEL_SHA256": meta["model_sha256"],
            "DATA_MD5": meta["data_md5"],
            "GIT_COMMIT": meta["commit"],
            "SOURCE_URL": f"{settings.github.server_url}/{settings.github.repository}"
            if settings.github.repository
            else "",
        }
        print(f"building {ref} from {source / 'Dockerfile'}", flush=True)
        with docker_errors(f"building {ref}", offline=offline):
            built, _ = docker_client.images.build(
                path=str(context), tag=ref, buildargs=args, rm=True, forcerm=True, pull=False
            )
    push(docker_client, repository, tag, auth, settings)
    with docker_errors(f"reading back {ref} from the registry"):
        digest = registry_digest(docker_client, ref, auth)
    if not digest:
        raise DeployError(
            f"{ref} was pushed but the registry does not list it",
            fix="check the registry's storage and re-run: the push is reused",
        )
    image = Image(repository, tag, digest)
    why = verify_image(settings, docker_client, image, model, built_id=built.id)
    if why is not None:
        raise DeployError(
            f"{image.pinned}, read back after the push, does not hold {model.name} version "
            f"{version}: {why}",
            fix="another deploy pushed the same tag at the same time, or the registry "
            "changed it; re-run the deploy",
        )
    return image


def push(
    docker_client: Any, repository: str, tag: str, auth: dict[str, str] | None, settings: Settings
) -> None:
    attempts = settings.deploy.push_retries + 1
    for attempt in range(1, attempts + 1):
        error = None
        with docker_errors(f"pushing {repository}:{tag}"):
            try:
                for line in docker_client.images.push(
                    repository, tag=tag, auth_config=auth, stream=True, decode=True
                ):
                    if "error" in line:
                        error = line.get("errorDetail", {}).get("message") or line["error"]
                        break
            except Exception as exc:  # connection refused, reset: transient until proven not
                import requests

                if not isinstance(exc, requests.ConnectionError):
                    raise
                error = _first_line(exc)
        if error is None:
            return
        permanent = any(w in error.lower() for w in ("unauthorized", "denied", "authentication"))
        if permanent or attempt == attempts:
            raise DeployError(
                f"pushing {repository}:{tag} failed"
                + (f" after {attempts} attempts" if not permanent else "")
                + f": {error}",
                fix="set REGISTRY_USERNAME / REGISTRY_PASSWORD (GHCR: the workflow token with "
                "`packages: write`)"
                if permanent
                else "check that the registry is up; a re-run reuses whatever was pushed",
            )
        wait = settings.deploy.backoff * 2 ** (attempt - 1)
        print(f"push failed ({error}); retrying in {wait:.0f} s", flush=True)
        time.sleep(wait)


def deploy(
    settings: Settings,
    version: str,
    *,
    source: Path | None = None,
    approved_by: Sequence[str] = (),
) -> Deployment:
    approval = environment.require_approval(settings, approved_by)  # fail closed, first
    client = tracking.connect(settings, experiment=False)
    name, holder_model = settings.model.name, settings.model.production_model
    separate = holder_model != name  # Production is a registered model of its own
    model_version = get_version(client, name, version)
    if separate:
        # Before anything is built: this credential must be able to write the production model
        # and its lock (the Environment's can; the pipeline's is refused here, nothing done).
        with registry.pointer_lock(
            client, settings, f"deploy of version {version} (rights check)", name=holder_model
        ) as lock:
            registry.ensure_production_model(client, name, holder_model, lock)
    current = registry.production(client, settings)
    if current is None or current.version != version:
        # Before a long build, and before queueing for the lock: a version that cannot go to
        # Production fails here at once (16 racing deploys showed the queue otherwise).
        _check_deployable(client, settings, version, current)
    copy = registry.find_copy(client, holder_model, name, version) if separate else None
    hint = copy.tags if copy is not None and Image.recorded(copy.tags) else model_version.tags
    tags = dict(model_version.tags)
    model = model_digest(client, name, version)
    if settings.deploy.require_staging:
        _judged(client, settings, version, model)  # before anything is built
    image = reused_image(settings, version, dict(hint), model)
    reused = image is not None
    if image is None:
        image = build_and_push(settings, client, version, source_dir(source), model)
        if not separate:
            _still_the_version(client, name, model_version)  # never tag another model's
            record_image(client, name, version, image)
    # The build took minutes: read the pointers again, under the lock, and decide on those.
    with registry.pointer_lock(
        client, settings, f"deploy of version {version}", name=holder_model
    ) as lock:
        # First finish whatever a killed move left half done, then decide on what holds.
        done = registry.converge(client, holder_model, lock=lock)
        with _refusal_recorded(client, settings, version, lock):
            _still_the_version(client, name, model_version)
        holder = version
        if separate:
            # The approved version, copied once into the production model and checked against
            # its original's logged booster; its image is recorded on the copy.
            copy = registry.ensure_copy(client, name, version, model.sha256, holder_model, lock)
            holder = str(copy.version)
            if Image.recorded(copy.tags) != image:
                lock.check(f"recording the image on {holder_model} version {holder}")
                record_image(client, holder_model, holder, image)
        current = registry.production(client, settings)
        if (
            current is not None
            and current.version == version
            and (current.holder.name == holder_model)
        ):
            finished = holder in registry.completed(done, PRODUCTION)
            return Deployment(
                version,
                image,
                f"{name} version {version} is already in Production with {image.pinned}: "
                + ("completed the record of its interrupted move" if finished else "nothing to do"),
                changed=finished,
                reused_image=reused,
            )
        migrating = current is not None and current.version == version
        if migrating and current is not None:
            # Production of the earlier layout (on model.name) moves to the production model,
            # same version: no new comparison to check; it keeps what it replaced back then.
            previous = _version_or_none(current.tags.get("mlgate.production.previous"))
        else:
            with _refusal_recorded(client, settings, version, lock):
                _check_deployable(client, settings, version, current)
            previous = None if current is None else current.version
        g = settings.github
        record = {
            "mlgate.production.since": _now(),
            "mlgate.production.previous": previous or "none",
            **approval.tags(),  # approved_by (never a silent "unknown"), Environment, opt-out
            "mlgate.production.image": image.pinned,
            "mlgate.production.commit": g.sha or tags.get("mlgate.git.commit", "unknown"),
        }
        if separate:
            record[registry.COPY_OF] = f"{name}/{version}"
        if g.run_url:
            record["mlgate.production.run_url"] = g.run_url
        move_production(
            client,
            holder_model,
            holder,
            record,
            _held_here(current, holder_model),
            lock,
            {"mlgate.production.replaced_by": version},
        )
    return Deployment(
        version,
        image,
        f"{name} version {version} is now in Production, served by {image.pinned}"
        + (f", moved into {holder_model}" if migrating else "")
        + (f" (replacing version {previous})" if previous and not migrating else ""),
        changed=True,
        previous=None if migrating else previous,
        reused_image=reused,
    )


@contextmanager
def _refusal_recorded(
    client: Any, settings: Settings, version: str, lock: registry.PointerLock
) -> Iterator[None]:
    """A deploy refused under the lock (another deploy, promotion or rollback landed while it
    built or waited: exit 6, or 12 for a lost Production) says so in the history of the
    model holding Production, beside the move that won (`registry.record_refusal`)."""
    try:
        yield
    except (GateFailed, ProductionLost) as exc:
        name, holder_model = settings.model.name, settings.model.production_model
        registry.record_refusal(
            client,
            holder_model,
            version,
            command="deploy",
            reasons=exc.message,
            lock=lock,
            original=f"{name}/{version}" if holder_model != name else None,
        )
        raise


def _judged(client: Any, settings: Settings, version: str, model: ModelDigest) -> None:
    """Refuse (exit 7, nothing built or moved) unless the booster in the artifact store now is
    the one the evaluation judged: the sha256 its decision records (the decision itself checked
    against the digest evaluation tagged on the version). A model file rewritten after the
    evaluation (and the approval that read it) is never built into an image."""
    judged = load_decision(client, settings, version).get("candidate_model_sha256")
    if judged == model.sha256:
        return
    if not judged:
        raise ModelError(
            f"the decision of {model.name} version {version} records no digest of the model it "
            "judged (an evaluation by an older mlgate), so what would be deployed cannot be "
            "proven to be what passed the gate; nothing was built or moved",
            fix=f"re-run `mlgate evaluate --candidate-version {version}` and promote it, then "
            "deploy",
        )
    raise ModelError(
        f"{model.name} version {version}'s booster in the artifact store (sha256 "
        f"{model.sha256[:12]}) is not the one its evaluation judged ({judged[:12]}): the model "
        "file was changed after the evaluation; nothing was built or moved",
        fix="find out who wrote to the artifact store of run "
        f"{model.run_id}; restore the file, or re-run `mlgate evaluate --candidate-version "
        f"{version}` to judge the file as it is now (and promote it), then deploy",
    )


def _still_the_version(client: Any, name: str, seen: Any) -> None:
    """Refuse (stale, nothing moved) when the version this deploy read, digested and built an
    image for is not the version of that number any more: a registry reset while it built."""
    why = registry.replaced_since(client, name, seen)
    if why is not None:
        raise GateFailed(
            f"refusing to deploy: {why} while this deploy built its image; the image holds "
            "the version read before, so nothing was moved",
            fix="run the pipeline again on the registry as it is now (train, evaluate, "
            "promote, deploy)",
        )


def _version_or_none(value: str | None) -> str | None:
    return None if value in (None, "", "none") else value


def _held_here(current: Any, holder_model: str) -> str | None:
    """The version of `holder_model` that holds Production now, if any: the one a move there
    replaces (a Production still on model.name, the layout of earlier releases, is migrated:
    the alias there is left for doctor to report, this credential may not write it)."""
    if current is None or current.holder.name != holder_model:
        return None
    return str(current.holder.version)


def reused_image(
    settings: Settings, version: str, tags: Mapping[str, str], model: ModelDigest
) -> Image | None:
    """The image the version's tags record, if it provably holds the version's model (None
    otherwise: then the content-addressed tag is looked up, else the image is built)."""
    recorded, ignored = trusted_record(tags, image_repository(settings))
    if ignored:
        github.annotate(
            "warning",
            f"{settings.model.name} version {version}: the recorded image is ignored: {ignored}",
            title="mlgate deploy",
        )
        print(f"ignoring the recorded image: {ignored}", flush=True)
    if recorded is None:
        return None
    why = verify_image(settings, connect_docker(), recorded, model)
    if why is None:
        return recorded
    print(f"the recorded image {recorded.pinned} does not hold this model ({why})", flush=True)
    return None


def record_image(client: Any, name: str, version: str, image: Image) -> None:
    """`mlgate.image.*` on the version (of model.name, or its copy in the production model): a
    hint for the next run, verified before any use."""
    with tracking.errors(f"recording the image of {name} version {version}"):
        for key, value in {
            "mlgate.image.repository": image.repository,
            "mlgate.image.tag": image.tag,
            "mlgate.image.digest": image.digest,
            "mlgate.image.ref": image.pinned,
            "mlgate.image.pushed_at": _now(),
        }.items():
            client.set_model_version_tag(name, version, key, value)


def _check_deployable(client: Any, settings: Settings, version: str, production: Any) -> None:
    """Only the version holding staging goes to Production, and only while the decision that
    put it there compared it with the version now in Production: a Production model that
    changed since (another deploy, a rollback) makes that comparison stale."""
    if not settings.deploy.require_staging:
        return  # a deliberate deploy of another version (documented)
    name = settings.model.name
    staging = tracking.version_by_alias(client, name, STAGING)
    if staging is None or str(staging.version) != version:
        raise GateFailed(
            f"{name} version {version} does not hold '{STAGING}' "
            f"(staging is {staging.version if staging else 'none'}): only the version that "
            "passed the gate is deployed",
            fix="deploy the staging version, or set deploy.require_staging=false to deploy "
            "another one deliberately",
        )
    if production is None:
        lost = registry.lost_production(client, name, settings.model.production_model)
        if lost is not None:  # its decision compared with a version that is gone, or none
            raise ProductionLost(
                f"{lost}: the gated deploy of version {version} is refused, nothing was "
                "built or moved",
                fix=registry.LOST_FIX,
            )
        return
    champion = load_decision(client, settings, version)["champion"]
    then = champion["version"] if champion else None
    if then != str(production.version):
        raise GateFailed(
            f"version {version} was evaluated against {f'version {then}' if then else 'no champion'}"
            f", but version {production.version} is in Production now: the comparison is stale",
            fix=f"re-run `mlgate evaluate --candidate-version {version}` and promote it, then "
            "deploy",
        )


def move_production(
    client: Any,
    name: str,
    version: str,
    record: Mapping[str, str],
    previous: str | None,
    lock: registry.PointerLock,
    previous_record: Mapping[str, str] | None = None,
) -> None:
    """Production to `version`: `record` tagged on it, `previous_record` (and when it was
    replaced, by whom) on the version it replaces, all as one move (`registry.move_alias`)."""
    tracking.move_alias(
        client,
        name,
        PRODUCTION,
        version,
        lock=lock,
        tags=record,
        previous=previous,
        previous_tags={
            "mlgate.production.replaced_by": version,
            "mlgate.production.until": _now(),
            **(previous_record or {}),
        },
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def report(settings: Settings, result: Deployment, title: str = "Deployment") -> None:
    print(result.message, flush=True)
    rows = [
        ("model version", result.version),
        ("image", f"`{result.image.pinned}`"),
        ("image reused", "yes" if result.reused_image else "no (built and pushed)"),
        ("replaced", result.previous or "–"),
    ]
    github.write_summary(
        settings.github,
        f"### {title}\n{result.message}\n\n" + github.markdown_table(["", ""], rows),
    )
    github.write_outputs(
        settings.github,
        {
            "model-version": result.version,
            "image": result.image.pinned,
            "image-digest": result.image.digest,
            "previous-version": result.previous or "",
            "changed": str(result.changed).lower(),
        },
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate deploy: build and push the serving image of a version, then move it to
    Production (run it behind the Environment approval)."""

    parser = cli.stage_parser("deploy", main.__doc__)
    cli.add_candidate_version(parser, "to deploy (the staging version)")
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="mlgate's source tree, for the Dockerfile (default: this package's)",
    )
    parser.add_argument(
        "--approved-by",
        action="append",
        default=[],
        metavar="LOGIN",
        help="who approved (default: read from the GitHub API for this run)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        result = deploy(
            settings, args.candidate_version, source=args.source, approved_by=args.approved_by
        )
        report(settings, result)
        summarise_lineage(settings, result.version)
        return 0

    return cli.run(action)


def summarise_lineage(settings: Settings, version: str) -> None:
    """Append the version's lineage to the job summary: what is now serving, and from where.
    The deployment is done by now, so a failure here is a warning, not a failed job."""
    from mlgate.registry import audit

    try:
        record = audit.lineage(tracking.connect(settings, experiment=False), settings, version)
    except Exception as exc:  # the deployment is done: a summary must not fail the job
        github.annotate("warning", f"could not write the lineage: {type(exc).__name__}: {exc}")
        return
    github.write_summary(settings.github, audit.lineage_markdown(record))
