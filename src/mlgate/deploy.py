"""Stage 5: after the Environment approval, build and push the serving image, then move the
model to Production. Never one without the other.

The order is what makes it safe to crash anywhere and re-run:

1. The image for version N is `IMAGE:vN`. If the registry already has it (an earlier run pushed
   it), it is reused: no second image. Otherwise the bundle is exported from the registry, the
   image built from the top-level Dockerfile (docker-py, credentials never on a command line)
   and pushed, with bounded retries on transient registry errors.
2. The pushed digest is read back from the registry, and recorded on the version
   (`mlgate.image.*`). An image tag is not Production: nothing points at it yet.
3. Only then does `production` move (alias, and the Production stage with the previous one
   archived), and the version is tagged with who approved, the run, the commit and the version
   it replaced. A version already in Production with its image is a no-op.

So Production never points at a version whose image is not in the registry, and no mutable
"production" image tag exists to disagree with the registry.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlgate import cli, environment, github, registry, tracking
from mlgate.bundle import export_bundle
from mlgate.errors import ConfigError, DeployError, GateFailed, GitHubError
from mlgate.evaluate import get_version
from mlgate.promote import load_decision
from mlgate.settings import Settings

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
        """The image a version's `mlgate.image.*` tags record, if any."""
        if not tags.get("mlgate.image.digest"):
            return None
        return cls(
            tags["mlgate.image.repository"], tags["mlgate.image.tag"], tags["mlgate.image.digest"]
        )


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
    candidates = [given] if given else [Path(__file__).resolve().parents[2]]
    for root in candidates:
        if root and all((root / f).is_file() for f in SOURCE_FILES):
            return root
    raise ConfigError(
        f"no mlgate source tree with {', '.join(SOURCE_FILES)} at {candidates[0]}",
        fix="pass --source with mlgate's checkout (the setup action's `source` output)",
    )


@contextmanager
def docker_errors(action: str) -> Iterator[None]:
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.BuildError as exc:
        tail = "".join(str(c.get("stream", c.get("error", ""))) for c in list(exc.build_log)[-8:])
        raise DeployError(
            f"{action} failed: {exc.msg}\n{tail}",
            fix="see the build log above; BASE_IMAGE must be pullable (deploy.base_image)",
        ) from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DeployError(
            f"{action} failed: {_first_line(exc)}",
            fix="check that the Docker engine runs (DOCKER_HOST) and the registry "
            "answers; credentials go in REGISTRY_USERNAME / REGISTRY_PASSWORD",
        ) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect_docker():  # -> docker.DockerClient
    import docker

    with docker_errors("connecting to the Docker engine"):
        client = docker.from_env(timeout=600)
        client.ping()
    return client


def registry_digest(client, ref: str, auth: dict[str, str] | None) -> str | None:
    """The digest the registry holds for `ref`, or None when it has no such tag."""
    import docker.errors

    try:
        return client.images.get_registry_data(ref, auth_config=auth).id
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


def registry_holds(settings: Settings, ref: str) -> str | None:
    """The digest the registry holds for `ref` (a tag or a digest), with errors explained."""
    with docker_errors(f"checking {ref}"):
        return registry_digest(connect_docker(), ref, settings.registry.auth_config())


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
    import os
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
        env=os.environ | {"UV_SYSTEM_CERTS": "1"},  # uv verifies with the system's certificates
    )
    (dest / ".complete").write_text("")
    return dest


def build_context(settings: Settings, client_mlflow, version: str, source: Path, dest: Path):
    """Dockerfile, serving lock, mlgate's package, the model bundle and (offline) wheels."""
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
        if not wheels.is_dir():
            raise ConfigError(
                f"deploy.wheels_dir {wheels} is not a directory",
                fix="download the wheels of requirements-serve.lock there first",
            )
        for wheel in wheels.glob("*.whl"):
            shutil.copy2(wheel, dest / "wheels" / wheel.name)
    return export_bundle(
        client_mlflow,
        settings.model.name,
        version,
        dest / "bundle",
        compiler=settings.serve.compiler,
    )


def build_and_push(settings: Settings, client_mlflow, version: str, source: Path) -> Image:
    repository = image_repository(settings)
    tag = f"v{version}"
    ref = f"{repository}:{tag}"
    auth = settings.registry.auth_config()
    docker_client = connect_docker()
    with docker_errors(f"looking up {ref} in the registry"):
        existing = registry_digest(docker_client, ref, auth)
    if existing:
        print(f"{ref} is already in the registry ({existing}): reusing it", flush=True)
        return Image(repository, tag, existing)
    with tempfile.TemporaryDirectory(prefix="mlgate-image-") as tmp:
        context = Path(tmp)
        meta = build_context(settings, client_mlflow, version, source, context)
        args = {
            "BASE_IMAGE": settings.deploy.base_image,
            "PIP_OFFLINE": "1" if settings.deploy.wheels_dir else "0",
            "MODEL_NAME": meta["name"],
            "MODEL_VERSION": meta["version"],
            "MODEL_RUN_ID": meta["run_id"],
            "DATA_MD5": meta["data_md5"],
            "GIT_COMMIT": meta["commit"],
            "SOURCE_URL": f"{settings.github.server_url}/{settings.github.repository}"
            if settings.github.repository
            else "",
        }
        print(f"building {ref} from {source / 'Dockerfile'}", flush=True)
        with docker_errors(f"building {ref}"):
            docker_client.images.build(
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
    return Image(repository, tag, digest)


def push(docker_client, repository: str, tag: str, auth, settings: Settings) -> None:
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


def approvers(settings: Settings, given: Sequence[str]) -> list[str]:
    """Who approved this run's deployment: `--approved-by`, else the GitHub API."""
    if given:
        return list(given)
    g = settings.github
    if not (g.repository and g.run_id and g.token):
        return []
    from mlgate.github_api import GitHubAPI

    with GitHubAPI(g.api_url, g.token) as api:
        try:
            reviews = api.json("GET", f"/repos/{g.repository}/actions/runs/{g.run_id}/approvals")
        except GitHubError as exc:
            github.annotate("warning", f"could not read the approvals: {exc.message}")
            return []
    return sorted(
        {r["user"]["login"] for r in reviews if r.get("state") == "approved" and r.get("user")}
    )


def deploy(
    settings: Settings,
    version: str,
    *,
    source: Path | None = None,
    approved_by: Sequence[str] = (),
) -> Deployment:
    approval = environment.require_approval(settings, approved_by)  # fail closed, first
    client = tracking.connect(settings)
    name = settings.model.name
    model_version = get_version(client, name, version)
    production = tracking.version_by_alias(client, name, PRODUCTION)
    if production is None or str(production.version) != version:
        # Before a long build, and before queueing for the lock: a version that cannot go to
        # Production fails here at once (16 racing deploys showed the queue otherwise).
        _check_deployable(client, settings, version, production)
    tags = dict(model_version.tags)
    image = None
    recorded = Image.recorded(tags)
    if recorded and registry_holds(settings, recorded.ref) == recorded.digest:
        image = recorded
    reused = image is not None
    if image is None:
        image = build_and_push(settings, client, version, source_dir(source))
        with tracking.errors(f"recording the image of version {version}"):
            for key, value in {
                "mlgate.image.repository": image.repository,
                "mlgate.image.tag": image.tag,
                "mlgate.image.digest": image.digest,
                "mlgate.image.ref": image.pinned,
                "mlgate.image.pushed_at": _now(),
            }.items():
                client.set_model_version_tag(name, version, key, value)
    # The build took minutes: read the pointers again, under the lock, and decide on those.
    with tracking.pointer_lock(client, settings, f"deploy of version {version}") as lock:
        # First finish whatever a killed move left half done, then decide on what holds.
        done = registry.converge(client, name, lock=lock)
        production = tracking.version_by_alias(client, name, PRODUCTION)
        if production is not None and str(production.version) == version:
            finished = version in registry.completed(done, PRODUCTION)
            return Deployment(
                version,
                image,
                f"{name} version {version} is already in Production with {image.pinned}: "
                + ("completed the record of its interrupted move" if finished else "nothing to do"),
                changed=finished,
                reused_image=reused,
            )
        _check_deployable(client, settings, version, production)
        previous = None if production is None else str(production.version)
        g = settings.github
        record = {
            "mlgate.production.since": _now(),
            "mlgate.production.previous": previous or "none",
            **approval.tags(),  # approved_by (never a silent "unknown"), Environment, opt-out
            "mlgate.production.image": image.pinned,
            "mlgate.production.commit": g.sha or tags.get("mlgate.git.commit", "unknown"),
        }
        if g.run_url:
            record["mlgate.production.run_url"] = g.run_url
        move_production(client, name, version, record, previous, lock)
    return Deployment(
        version,
        image,
        f"{name} version {version} is now in Production, served by {image.pinned}"
        + (f" (replacing version {previous})" if previous else ""),
        changed=True,
        previous=previous,
        reused_image=reused,
    )


def _check_deployable(client, settings: Settings, version: str, production) -> None:
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
    client,
    name: str,
    version: str,
    record: Mapping[str, str],
    previous: str | None,
    lock,
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
    import os

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
        settings = cli.settings_from(args, os.environ if env is None else env)
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
    from mlgate import audit

    try:
        record = audit.lineage(tracking.connect(settings), settings, version)
    except Exception as exc:  # the deployment is done: a summary must not fail the job
        github.annotate("warning", f"could not write the lineage: {type(exc).__name__}: {exc}")
        return
    github.write_summary(settings.github, audit.lineage_markdown(record))
