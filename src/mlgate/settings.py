"""The one place where strings become typed settings.

Every stage reads a frozen `Settings`; nothing else in mlgate reads `os.environ`, params files or
flags. Precedence, highest first:

1. command-line flags: `--set SECTION.KEY=VALUE` (repeatable; `--set train.params.max_depth=6`
   reaches into a mapping) and the named flags of each subcommand (`--model-name`, ...);
2. environment variables `MLGATE_<SECTION>_<KEY>`, e.g. `MLGATE_TRACKING_URI`,
   `MLGATE_SPLIT_SEED`; `MLFLOW_TRACKING_URI` is honoured as a lower-priority alias of
   `tracking.uri`; an empty variable counts as unset;
3. the params file: `params.yaml` in the working directory, or `--params PATH` / `MLGATE_PARAMS`;
4. the defaults written in the dataclasses below.

Secrets are read from the environment only, under their own names, never from a params file
or a flag (a flag shows in `ps`, a params file is committed): REGISTRY_USERNAME /
REGISTRY_PASSWORD, and a tls:// Dask scheduler's PEM text DASK_TLS_CA / DASK_TLS_CERT /
DASK_TLS_KEY (`DaskTls`). Mappings (`train.params`, `metrics.slices`) are merged key by key
across the layers; every other value is replaced. Relative paths are relative to the directory
holding the params file. An unknown section or key anywhere is an error that names the closest
known one.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlgate.errors import ConfigError, did_you_mean

ENV_PREFIX = "MLGATE_"
PARAMS_ENV = "MLGATE_PARAMS"
DEFAULT_PARAMS = "params.yaml"
# Registered model names become URIs, tags and image names: keep them to a safe alphabet.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch: no trailing newline


@dataclass(frozen=True)
class ModelSettings:
    name: str = "mlgate-model"
    description: str = ""
    # The registered model that holds `production` (docs/production-registry.md): deploy and
    # rollback copy the approved version there (copy_model_version), so only credentials that
    # may write it (the Environment's) move Production. Unset: `production` stays on
    # model.name, the layout of earlier releases (no separation of rights; doctor says how to
    # migrate). The recommended value is "<model.name>-production".
    production_name: str | None = None

    @property
    def production_model(self) -> str:
        """The registered model whose `production` alias is Production."""
        return self.production_name or self.name


@dataclass(frozen=True)
class DataSettings:
    dvc_file: Path = Path("data.dvc")
    path: Path = Path("data/data.csv")
    target: str = "label"
    id_column: str | None = None
    # The target's positive class, as written in the data (Yes, 1, CH, True, ...); None: the
    # target must hold 0 and 1, and 1 is positive. Training maps it to 1, the other class to 0.
    positive_class: str | None = None
    max_bytes: int = 2 * 1024**3  # a bigger file is refused before it is read (runner memory)


@dataclass(frozen=True)
class DvcSettings:
    remote: str | None = None  # None: the repository's default remote
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, moto, ...)
    pull: bool = True  # False: use the data already in the workspace (checked against data.dvc)


@dataclass(frozen=True)
class SchemaSettings:
    path: Path = Path("schema.yaml")
    min_rows: int = 50
    min_class_count: int = 10


@dataclass(frozen=True)
class SplitSettings:
    seed: int = 42
    validation_fraction: float = 0.2
    holdout_fraction: float = 0.2


@dataclass(frozen=True)
class TrainSettings:
    num_boost_round: int = 500
    early_stopping_rounds: int = 25
    params: dict[str, Any] = field(
        default_factory=lambda: {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": 4,
            "eta": 0.05,
            "seed": 42,
        }
    )
    engine: str = "local"  # local: on the runner; dask: on the cluster named by dask.scheduler


@dataclass(frozen=True)
class DaskSettings:
    """train.engine: dask (issue 21, docs/dask.md). The address is a scheduler's
    (`tcp://HOST:PORT`, or `tls://HOST:PORT` with the TLS files below); none: a LocalCluster
    sized to this machine."""

    scheduler: str | None = None
    connect_timeout: float = 10.0  # seconds to reach the scheduler before failing
    # A tls:// scheduler's client material as files on the runner (a self-hosted runner's
    # mounted secret); the workflows pass it as PEM text instead, in the secrets DASK_TLS_CA,
    # DASK_TLS_CERT and DASK_TLS_KEY (`DaskTls`). One way or the other, never both.
    tls_ca_file: Path | None = None
    tls_cert: Path | None = None  # the client's certificate ...
    tls_key: Path | None = None  # ... and key, for a scheduler that requires TLS (tls://)
    # How `mlgate train` trains a DVC version's shards (docs/dask.md, "Training: in memory or
    # in external memory"): auto (in memory when the version fits comfortably in the workers'
    # memory, `cluster.plan_training`), memory (xgboost.dask) or external (XGBoost's external
    # memory on the workers' local disks).
    training: str = "auto"


@dataclass(frozen=True)
class MetricsSettings:
    # A probability, or a rule applied to the validation part at training (mlgate.threshold):
    # max_f1, precision>=P, recall>=R. The chosen number is recorded with the model.
    threshold: float | str = 0.5
    slices: dict[str, str] = field(default_factory=dict)  # name -> pandas query


@dataclass(frozen=True)
class GateSettings:
    """The promotion policy: every check is optional; None switches one off."""

    mode: str = "enabled"  # enabled: a failed gate fails; dry-run: report only
    first_model: str = "absolute"  # no champion: absolute (thresholds only) or reject
    min_auc: float | None = 0.80
    # Decided on the DeLong interval of candidate - champion AUC, not on point estimates:
    max_auc_drop: float | None = 0.01  # non-inferiority: interval's lower end > -this
    min_auc_gain: float | None = None  # superiority: interval's lower end > this
    reject_significantly_worse: bool = True  # interval wholly below 0: never promoted
    require_significance: bool = False  # the AUC gain must be significant (DeLong)
    confidence: float = 0.95  # of the AUC-difference interval
    min_f1_ratio: float | None = None  # candidate F1 >= this x champion F1
    # Latency in CPU time per single-row predict of what will serve (mlgate.gate.latency), judged
    # on the upper end of the median's bootstrap interval, so a busy runner cannot flip it.
    max_latency_ms: float | None = 1.0  # absolute, milliseconds of CPU time per row
    max_latency_ratio: float | None = None  # relative: candidate / champion
    slice_min_auc: dict[str, float] = field(default_factory=dict)  # slice name -> floor
    fairness_column: str | None = None  # group column for disparate impact
    fairness_min_ratio: float = 0.8
    fairness_max_ratio: float = 1.25


REQUEST_JITTER = 1.0  # seconds: MLflow's random addition to each retry's backoff (its default)


@dataclass(frozen=True)
class TrackingSettings:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "mlgate"
    artifact_location: str | None = None  # None: mlartifacts/ beside a local sqlite store
    retries: int = 4
    backoff: float = 0.5  # seconds; doubles on each retry
    timeout: float = 10.0  # seconds per HTTP request
    # Registry pointer moves (staging, production, rollback) hold a lock in the registry:
    # wait this long for another holder, and count a holder dead after its lease.
    lock_wait: float = 180.0  # seconds
    lock_lease: float = 120.0  # seconds; far longer than any move takes
    # A training run carries a lease its job renews every run_lease/3 s; only a RUNNING run
    # whose lease ran out counts as abandoned (its job is dead) and is ended by a re-run.
    run_lease: float = 60.0  # seconds
    # Tests only: SIGKILL this process right after the named registry call of a move (one of
    # mlgate.faults.FAULT_POINTS; MLGATE_TRACKING_FAULT_POINT), as a killed job dies.
    fault_point: str | None = None

    def mlflow_env(self) -> dict[str, str]:
        """MLflow's HTTP client bounds (it reads them from the environment, at request time)
        from these settings; `tracking.connect` sets them in the process."""
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(math.ceil(self.backoff)),  # int there
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": f"{REQUEST_JITTER:g}",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, self.timeout))),
            # A server or proxy answering 429/503 with `Retry-After: N` would make MLflow's
            # client sleep N seconds, however large: one request would have no bound.
            "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
        }

    @property
    def request_budget(self) -> float:
        """The longest one MLflow request can take under `mlflow_env`, in seconds: each of its
        retries + 1 attempts waits up to the timeout, and urllib3 sleeps between attempts (none
        before the first retry, then factor x 2, x 4, ..., at most 120 s, each with up to
        REQUEST_JITTER s added; counted on every retry, to be safe). A lock holder stops this
        long before its lease ends (`registry.pointer_lock`): a write it starts lands in time."""
        factor, timeout = math.ceil(self.backoff), int(max(1, self.timeout))
        sleeps = sum(
            (0 if n == 1 else min(120.0, factor * 2.0 ** (n - 1))) + REQUEST_JITTER
            for n in range(1, self.retries + 1)
        )
        return float((self.retries + 1) * timeout + sleeps)


@dataclass(frozen=True)
class ServeSettings:
    """The model server (`mlgate serve`, the serving image)."""

    bundle: Path = Path("bundle")  # the image sets /model
    host: str = "127.0.0.1"  # the image binds 0.0.0.0
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 100_000
    allow_missing: bool = False  # null/NaN inputs: refuse (False) or let XGBoost treat as missing
    graceful_seconds: float = 20.0  # on SIGTERM: finish in-flight requests this long
    compiler: str = "cc"  # C compiler for the bundle's compiled trees (mlgate bundle, deploy)
    max_header_bytes: int = 16384  # request line + headers; over it: 431, connection closed
    read_timeout_seconds: float = 30.0  # a whole request (head and body); incomplete: 408, closed
    access_log: bool = False  # a line per request on stderr (client, request, status, bytes, ms)
    # The sha256 of the booster the serving image was built for (its label
    # dev.mlgate.model.sha256; the Dockerfile sets MLGATE_SERVE_MODEL_SHA256 from the same build
    # argument): `mlgate serve` refuses to start on a bundle holding another. None: not checked.
    model_sha256: str | None = None


@dataclass(frozen=True)
class DeploySettings:
    """The serving image and where it goes (`mlgate deploy`, `mlgate rollback`)."""

    # Image repository without tag; None: ghcr.io/OWNER/REPO/MODEL in Actions, else
    # localhost:5000/mlgate/MODEL. Each model version is pushed as :vN and recorded by digest.
    image: str | None = None
    base_image: str = "python:3.11-slim-bookworm"
    wheels_dir: Path | None = None  # offline builds: wheels matching requirements-serve.lock
    push_retries: int = 3
    backoff: float = 2.0  # seconds; doubles on each retry of a push
    require_staging: bool = True  # deploy only the version holding the staging alias
    # The GitHub Environment whose required reviewers gate Production. In an Actions job the
    # deploy reads it through the REST API and refuses unless it has required reviewers, or
    # allow_unprotected_environment opts out (recorded on the version).
    environment: str = "production"
    allow_unprotected_environment: bool = False


@dataclass(frozen=True)
class MonitorSettings:
    """Production monitoring: the serving image's prediction log, `mlgate drift` and
    `mlgate backtest`."""

    # Where the model server writes its prediction log: a directory or s3://BUCKET/PREFIX;
    # None: no log. Batched and written off the request path; a failing sink never fails a
    # request (rows wait, up to log_max_pending_rows, then the oldest are dropped and counted).
    log_sink: str | None = None
    log_endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, moto, ...)
    log_batch_rows: int = 5000  # write when this many rows wait ...
    log_flush_seconds: float = 10.0  # ... or when the oldest waited this long
    log_max_pending_rows: int = 200_000  # rows held while the sink fails (memory bound)
    window_hours: float = 168.0  # `mlgate drift`: prediction-log rows this recent are current
    min_rows: int = 100  # fewer current rows than this: too few to judge drift
    max_rows: int = 100_000  # larger frames are sampled (seeded) to this many rows
    drift_share: float = 0.5  # drift when at least this share of the features drifted
    drift_method: str | None = None  # evidently stattest for every feature; None: its default
    drift_threshold: float | None = None  # per-feature stattest threshold; None: the method's
    max_auc_drop: float = 0.05  # `mlgate backtest`: AUC this far under training time is a drop


@dataclass(frozen=True)
class ReportsSettings:
    dir: Path = Path("reports")
    # After the decision is recorded and the outputs written: evidently's HTML reports and the
    # ROC / precision-recall curves. False: decision only (evaluate never imports evidently or
    # matplotlib; see docs/performance.md).
    quality: bool = True
    # train.engine: dask: evidently's drift report compares a sample of each data version of at
    # most this many rows, drawn on the workers by a seeded row hash (docs/dask.md)
    drift_sample_rows: int = 20000


@dataclass(frozen=True)
class GitHubContext:
    """What the Actions runner tells a step through its environment (empty outside Actions)."""

    output_file: Path | None = None
    summary_file: Path | None = None
    sha: str | None = None
    ref: str | None = None
    repository: str | None = None
    server_url: str = "https://github.com"
    run_id: str | None = None
    run_attempt: str | None = None
    actor: str | None = None
    event_name: str | None = None
    event_path: Path | None = None  # the webhook payload of the triggering event
    workflow_ref: str | None = None
    api_url: str = "https://api.github.com"
    actions: bool = False  # GITHUB_ACTIONS=true: running in an Actions job (or act)
    token: str | None = field(default=None, repr=False)  # GITHUB_TOKEN; never printed

    @property
    def run_url(self) -> str | None:
        if not (self.repository and self.run_id):
            return None
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GitHubContext:
        def get(name: str) -> str | None:
            return env.get(name) or None

        output, summary = get("GITHUB_OUTPUT"), get("GITHUB_STEP_SUMMARY")
        event = get("GITHUB_EVENT_PATH")
        return cls(
            output_file=Path(output) if output else None,
            summary_file=Path(summary) if summary else None,
            sha=get("GITHUB_SHA"),
            ref=get("GITHUB_REF"),
            repository=get("GITHUB_REPOSITORY"),
            server_url=get("GITHUB_SERVER_URL") or cls.server_url,
            run_id=get("GITHUB_RUN_ID"),
            run_attempt=get("GITHUB_RUN_ATTEMPT"),
            actor=get("GITHUB_ACTOR"),
            event_name=get("GITHUB_EVENT_NAME"),
            event_path=Path(event) if event else None,
            workflow_ref=get("GITHUB_WORKFLOW_REF"),
            api_url=(get("GITHUB_API_URL") or cls.api_url).rstrip("/"),
            token=get("GITHUB_TOKEN"),
            actions=get("GITHUB_ACTIONS") == "true",
        )


@dataclass(frozen=True)
class RegistryCredentials:
    """Container registry login, from REGISTRY_USERNAME / REGISTRY_PASSWORD (never printed,
    never passed on a command line: docker-py sends them to the engine)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RegistryCredentials:
        return cls(env.get("REGISTRY_USERNAME") or None, env.get("REGISTRY_PASSWORD") or None)

    def auth_config(self) -> dict[str, str] | None:
        if not (self.username and self.password):
            return None
        return {"username": self.username, "password": self.password}


# The workflow secrets that carry a tls:// scheduler's client material, as PEM text, and the
# environment variables a job's step reads them from (the same names, as REGISTRY_PASSWORD).
TLS_SECRETS = {"ca": "DASK_TLS_CA", "cert": "DASK_TLS_CERT", "key": "DASK_TLS_KEY"}
TLS_FILE_KEYS = {"ca": "dask.tls_ca_file", "cert": "dask.tls_cert", "key": "dask.tls_key"}
TLS_MAX_BYTES = 256 * 1024  # a CA bundle, a certificate chain or a key is a few KB


@dataclass(frozen=True)
class DaskTls:
    """A tls:// scheduler's client material as checked PEM text (never printed): the CA that
    signed the scheduler's certificate, the client's certificate and its key. Built from the
    secrets DASK_TLS_CA / DASK_TLS_CERT / DASK_TLS_KEY when loading the settings, or from the
    dask.tls_* files when connecting (`tls_material`). mlgate writes it to no file: Dask's
    `Security` takes PEM text (mlgate.pipeline.cluster, docs/dask.md)."""

    ca: str = field(repr=False)
    cert: str = field(repr=False)
    key: str = field(repr=False)
    origin: str = "the secrets DASK_TLS_CA, DASK_TLS_CERT and DASK_TLS_KEY"
    cert_not_after: str = ""  # ISO time the client certificate ends, for the connect error
    cert_expired: bool = False


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    params_file: Path | None
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    dvc: DvcSettings = field(default_factory=DvcSettings)
    schema: SchemaSettings = field(default_factory=SchemaSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    dask: DaskSettings = field(default_factory=DaskSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    reports: ReportsSettings = field(default_factory=ReportsSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    github: GitHubContext = field(default_factory=GitHubContext)
    registry: RegistryCredentials = field(default_factory=lambda: RegistryCredentials())
    dask_tls: DaskTls | None = None  # from the DASK_TLS_* secrets, checked (None: not given)

    def path(self, relative: Path) -> Path:
        """A settings path, resolved against the project directory."""
        return relative if relative.is_absolute() else self.project_dir / relative

    @property
    def log_sink(self) -> str | None:
        """monitor.log_sink with a relative directory made absolute against the project."""
        sink = self.monitor.log_sink
        if sink is None or sink.startswith("s3://"):
            return sink
        return str(self.path(Path(sink)).resolve())

    @property
    def tracking_uri(self) -> str:
        """tracking.uri with a relative sqlite path made absolute against the project."""
        uri = self.tracking.uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.project_dir / uri[len(prefix) :])
        return uri


# REGISTRY[:PORT]/PATH, lower case, no tag or digest (docker's reference grammar, simplified).
IMAGE = re.compile(r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+")

SECTIONS: dict[str, type] = {
    name: hint
    for name, hint in typing.get_type_hints(Settings).items()
    if name not in {"project_dir", "params_file", "github", "registry", "dask_tls"}
}
# Keys whose values are mappings, merged key by key across layers.
MAPPING_KEYS = {("train", "params"), ("metrics", "slices"), ("gate", "slice_min_auc")}


def known_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def load_settings(
    *,
    env: Mapping[str, str],
    params_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build the settings from every layer. `overrides` are `SECTION.KEY=VALUE` strings;
    `flags` maps `SECTION.KEY` to values from named command-line flags (None: not given)."""
    cwd = cwd or Path.cwd()
    path, explicit = _params_path(params_file, env, cwd)
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = []
    if path.is_file():
        layers.append((str(path.name), _read_params_file(path)))
    elif explicit:
        raise ConfigError(
            f"params file {path} does not exist",
            fix="pass --params with the path of an existing params.yaml (or unset MLGATE_PARAMS)",
        )
    layers.append(("environment", _env_layer(env)))
    layers.append(("--set", _override_layer(overrides)))
    flag_layer: dict[str, dict[str, Any]] = {}
    for dotted, value in (flags or {}).items():
        if value is not None:
            section, key = dotted.split(".", 1)
            flag_layer.setdefault(section, {})[key] = _Raw(str(value), f"flag for {dotted}")
    layers.append(("flags", flag_layer))

    merged: dict[str, dict[str, Any]] = {}
    for source, layer in layers:
        for section, values in layer.items():
            _check_key(section, None, source)
            for key, value in values.items():
                _check_key(section, key, source)
                target = merged.setdefault(section, {})
                if (section, key) in MAPPING_KEYS and key in target:
                    target[key] = _merge_mapping(target[key], value, f"{section}.{key}")
                else:
                    target[key] = value

    project_dir = path.parent if path.is_file() else cwd
    sections = {name: _build_section(name, merged.get(name, {})) for name in SECTIONS}
    settings = Settings(
        project_dir=project_dir.resolve(),
        params_file=path.resolve() if path.is_file() else None,
        github=GitHubContext.from_env(env),
        registry=RegistryCredentials.from_env(env),
        **sections,
    )
    _check_consistency(settings)
    _check_inputs(settings)
    secrets = _tls_secrets(settings, env)
    return dataclasses.replace(settings, dask_tls=secrets) if secrets else settings


class _Raw(str):
    """A string from the environment or the command line, still to be parsed for its type."""

    source: str

    def __new__(cls, value: str, source: str) -> _Raw:
        obj = super().__new__(cls, value)
        obj.source = source
        return obj


def _params_path(given: str | Path | None, env: Mapping[str, str], cwd: Path) -> tuple[Path, bool]:
    raw = given or env.get(PARAMS_ENV)
    path = Path(raw) if raw else Path(DEFAULT_PARAMS)
    return (path if path.is_absolute() else cwd / path), bool(raw)


def _read_params_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        size = path.stat().st_size
        if size > PARAMS_MAX_BYTES:  # refused before it is read: no parse, no echo
            raise ConfigError(
                f"{path.name} is {size:,} bytes, over the {PARAMS_MAX_BYTES:,}-byte cap of a "
                "params file",
                fix=f"{path.name} holds settings, not data: remove what does not belong there",
            )
        data = safe_yaml(path.read_text(encoding="utf-8"), path.name)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path.name} is not valid YAML: {short(exc, 300)}",
            fix=f"correct the YAML syntax of {path}",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", fix="check the file's path") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path.name} must be a mapping of sections (model:, data:, train:, ...)",
            fix=f"see docs/settings.md for the layout of {DEFAULT_PARAMS}",
        )
    for section, values in data.items():
        if values is not None and not isinstance(values, dict):
            _check_key(str(section), None, path.name)
            raise ConfigError(
                f"section '{section}' in {path.name} must be a mapping of keys",
                fix=f"write it as '{section}:' followed by indented 'key: value' lines",
            )
    return {str(s): dict(v or {}) for s, v in data.items()}


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    if env.get("MLFLOW_TRACKING_URI"):  # MLflow's own variable, below MLGATE_TRACKING_URI
        layer.setdefault("tracking", {})["uri"] = _Raw(
            env["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
        )
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == PARAMS_ENV or value == "":
            continue  # an empty variable counts as unset (an Actions input left empty)
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if not key:
            candidates = [f"{ENV_PREFIX}{k.replace('.', '_').upper()}" for k in known_keys()]
            raise ConfigError(
                f"unknown environment variable {name}{did_you_mean(name, candidates)}",
                fix=f"use {ENV_PREFIX}<SECTION>_<KEY>, e.g. {ENV_PREFIX}TRACKING_URI",
            )
        _check_key(section, key, f"environment variable {name}")
        layer.setdefault(section, {})[key] = _Raw(value, f"environment variable {name}")
    return layer


def _override_layer(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for item in overrides:
        dotted, sep, value = item.partition("=")
        parts = dotted.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"--set {item!r} is not SECTION.KEY=VALUE",
                fix="write it like --set train.num_boost_round=200",
            )
        section, key, *deeper = parts
        source = f"--set {dotted}"
        _check_key(section, key, source)
        if deeper:
            if (section, key) not in MAPPING_KEYS:
                raise ConfigError(
                    f"{section}.{key} is not a mapping, so {dotted} cannot be set",
                    fix=f"use --set {section}.{key}=VALUE",
                )
            nested = layer.setdefault(section, {}).setdefault(key, {})
            nested[".".join(deeper)] = _parse_scalar(_Raw(value, source))
        else:
            layer.setdefault(section, {})[key] = _Raw(value, source)
    return layer


# Keys that were renamed because their meaning changed: the old name fails, naming the new one.
RENAMED = {
    ("gate", "max_latency_p95_ms"): (
        "max_latency_ms",
        "latency is now measured in CPU time per row (median of interleaved batches, judged on "
        "its upper confidence bound), not as a wall-clock p95, which flapped on busy runners",
    ),
}


def _check_key(section: str, key: str | None, source: str) -> None:
    if key is not None and (section, key) in RENAMED:
        new, why = RENAMED[(section, key)]
        raise ConfigError(
            f'{section}.{key} in {source} was replaced (did you mean "{new}"?): {why}',
            fix=f"use {section}.{new} (see the gate policy in docs/gate.md); a value in wall-clock "
            "milliseconds does not carry over",
        )
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown section '{section}' in {source}{did_you_mean(section, SECTIONS)}",
            fix=f"known sections: {', '.join(SECTIONS)}",
        )
    if key is None:
        return
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if key not in names:
        raise ConfigError(
            f"unknown key '{section}.{key}' in {source}{did_you_mean(key, names)}",
            fix=f"keys of '{section}': {', '.join(names)}",
        )


def _parse_scalar(raw: _Raw) -> Any:
    try:
        return safe_yaml(raw, raw.source) if raw.strip() else None
    except yaml.YAMLError:
        return str(raw)


def _merge_mapping(base: Any, update: Any, name: str) -> dict[str, Any]:
    return {**_as_mapping(base, name), **_as_mapping(update, name)}


def _as_mapping(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, _Raw):
        value = _parse_scalar(value) or {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{name} must be a mapping, got {short(value)}",
            fix=f"write {name} as 'key: value' pairs (in the environment: YAML like '{{a: 1}}')",
        )
    return {str(k): v for k, v in value.items()}


def _build_section(section: str, values: dict[str, Any]) -> Any:
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        name = f"{section}.{f.name}"
        value = values[f.name]
        if (section, f.name) in MAPPING_KEYS:
            default = f.default_factory()  # type: ignore[operator]
            kwargs[f.name] = {**default, **_as_mapping(value, name)}
        elif (section, f.name) == ("metrics", "threshold"):
            kwargs[f.name] = _threshold(value)
        elif (section, f.name) == ("data", "positive_class"):
            kwargs[f.name] = _positive_class(value)
        else:
            kwargs[f.name] = _coerce(value, hints[f.name], name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    source = getattr(value, "source", None)
    where = f" (from {source})" if source else ""
    optional = _is_optional(hint)
    base = _strip_optional(hint)
    if isinstance(value, _Raw):
        if optional and value.strip() == "":
            return None
        if base not in (str, Path):
            value = _parse_scalar(value)
        else:
            value = str(value)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be set{where}", fix=f"give {name} a value")
    if base is bool and isinstance(value, bool):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if base is Path and isinstance(value, str) and value:
        return Path(value)
    kind = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
    }[base]
    raise ConfigError(
        f"{name} must be {kind}, got {short(value)}{where}", fix=f"set {name} to {kind}"
    )


def _threshold(value: Any) -> float | str:
    """metrics.threshold: a number, or a rule (checked by mlgate.gate.threshold.parse)."""
    from mlgate.gate.threshold import parse

    if isinstance(value, _Raw):
        value = _parse_scalar(value)
    rule = parse(value)
    return rule.value if rule.kind == "fixed" and rule.value is not None else str(rule)


def _is_optional(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _strip_optional(hint: Any) -> Any:
    if _is_optional(hint):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


ENGINES = ("local", "dask")
TRAININGS = ("auto", "memory", "external")  # dask.training
SCHEDULER = re.compile(r"(tcp|tls)://[^\s/]+:[0-9]+")


def _check_dask(s: Settings) -> None:
    if s.train.engine not in ENGINES:
        raise ConfigError(
            f"train.engine must be one of {', '.join(ENGINES)}, got {short(s.train.engine)}"
            f"{did_you_mean(s.train.engine, ENGINES)}",
            fix="set train.engine to local (train on the runner) or dask (docs/dask.md)",
        )
    address = s.dask.scheduler
    if address is not None and s.train.engine != "dask":
        raise ConfigError(
            f"dask.scheduler is {address} but train.engine is {s.train.engine}: the cluster "
            "would not be used",
            fix="set train.engine: dask, or leave dask.scheduler unset",
        )
    if address is not None and not SCHEDULER.fullmatch(address):
        raise ConfigError(
            f"dask.scheduler {short(address)} is not a scheduler address",
            fix="write it as tcp://HOST:PORT or tls://HOST:PORT (unset: a LocalCluster)",
        )
    tls = (s.dask.tls_ca_file, s.dask.tls_cert, s.dask.tls_key)
    if any(tls) and not all(tls):
        raise ConfigError(
            "dask.tls_ca_file, dask.tls_cert and dask.tls_key must be set together",
            fix="set all three (a tls:// scheduler) or none",
        )
    if all(tls) and not (address or "").startswith("tls://"):
        raise ConfigError(
            f"the dask.tls_* files are set but dask.scheduler is {_unsecured(address)}",
            fix="a tls:// address takes dask.tls_ca_file, dask.tls_cert and dask.tls_key; a "
            "tcp:// one (or none) takes none: correct the address or unset the files",
        )
    if s.dask.training not in TRAININGS:
        raise ConfigError(
            f"dask.training must be one of {', '.join(TRAININGS)}, got {short(s.dask.training)}"
            f"{did_you_mean(s.dask.training, TRAININGS)}",
            fix="set dask.training to auto (in memory when the version fits the workers' "
            "memory), memory or external (docs/dask.md)",
        )
    # A tls:// address without material is refused when connecting (`tls_material`), not
    # here: the jobs that never reach the cluster (promote, deploy) get no TLS secrets.
    if not s.dask.connect_timeout > 0:
        raise ConfigError(
            f"dask.connect_timeout must be positive, got {s.dask.connect_timeout}",
            fix="set dask.connect_timeout to the seconds to wait for the scheduler, e.g. 10",
        )


def _check_consistency(s: Settings) -> None:
    _check_dask(s)
    if not MODEL_NAME.fullmatch(s.model.name):
        raise ConfigError(
            f"model.name {short(s.model.name)} is not a safe registered-model name",
            fix="use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    _check_production_name(s.model)
    for key in ("validation_fraction", "holdout_fraction"):
        value = getattr(s.split, key)
        if not 0 < value < 1:
            raise ConfigError(
                f"split.{key} must be between 0 and 1, got {value}",
                fix=f"set split.{key} to a fraction such as 0.2",
            )
    if s.split.validation_fraction + s.split.holdout_fraction >= 0.9:
        raise ConfigError(
            "split.validation_fraction + split.holdout_fraction leave under 10% to train on",
            fix="lower one of them so that their sum is below 0.9",
        )
    if s.reports.drift_sample_rows < 1:
        raise ConfigError(
            f"reports.drift_sample_rows must be at least 1, got {s.reports.drift_sample_rows}",
            fix="set reports.drift_sample_rows to the rows of each data version the drift "
            "report may compare with train.engine: dask (default 20000)",
        )
    for key in ("num_boost_round", "early_stopping_rounds"):
        if getattr(s.train, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1", fix=f"raise train.{key}")
    if s.tracking.retries < 0 or s.tracking.backoff < 0 or s.tracking.timeout <= 0:
        raise ConfigError(
            "tracking.retries and tracking.backoff must be >= 0 and tracking.timeout > 0",
            fix="correct the tracking section",
        )
    if s.tracking.fault_point is not None:
        from mlgate import faults  # tests only; a typo must not be a silent no-op

        if faults.parse(s.tracking.fault_point) is None:
            raise ConfigError(
                f"tracking.fault_point '{s.tracking.fault_point}' is not a fault point",
                fix="use POINT, stop:POINT or pause:POINT:FILE with a POINT of: "
                + ", ".join(faults.ALL_FAULT_POINTS + faults.TRAIN_POINTS),
            )
    if s.tracking.lock_wait < 0 or s.tracking.lock_lease <= 0:
        raise ConfigError(
            "tracking.lock_wait must be >= 0 and tracking.lock_lease > 0 (seconds), got "
            f"{s.tracking.lock_wait} and {s.tracking.lock_lease}",
            fix="correct the tracking section; the lease must outlast one pointer move",
        )
    budget = s.tracking.request_budget
    if budget >= s.tracking.lock_lease * 3 / 4:
        # A lock holder stops `budget` s before its lease ends, so that a registry call it
        # started lands in time (mlgate.registry.moves); a lease that leaves it no time to
        # work cannot protect a move.
        raise ConfigError(
            f"tracking.lock_lease ({s.tracking.lock_lease:g} s) is too short for one MLflow "
            f"request as tracking.timeout ({s.tracking.timeout:g} s) and tracking.retries "
            f"({s.tracking.retries}) bound it: up to {budget:g} s with its backoff, and a lock "
            "holder must stop that long before its lease ends (else a late write could land "
            "after another holder took over)",
            fix=f"raise tracking.lock_lease above {math.ceil(budget * 4 / 3)} s "
            "(MLGATE_TRACKING_LOCK_LEASE), or lower tracking.timeout or tracking.retries",
        )
    if not 0 < s.serve.port < 65536 or not 1 <= s.serve.workers <= 64:
        raise ConfigError(
            f"serve.port must be 1-65535 and serve.workers 1-64, got {s.serve.port} and "
            f"{s.serve.workers}",
            fix="correct the serve section (MLGATE_SERVE_PORT / MLGATE_SERVE_WORKERS)",
        )
    if s.deploy.image is not None and not IMAGE.fullmatch(s.deploy.image):
        raise ConfigError(
            f"deploy.image {short(s.deploy.image)} is not an image repository",
            fix="write it as REGISTRY/PATH in lower case, without a tag, e.g. "
            "ghcr.io/acme/models/churn",
        )
    if not re.fullmatch(r"(?!\.+$)[A-Za-z0-9._-]{1,255}", s.deploy.environment):  # a path part
        raise ConfigError(
            f"deploy.environment {s.deploy.environment!r} is not a GitHub Environment name",
            fix="use 1-255 letters, digits, '.', '_' or '-' (the deploy job's `environment:`)",
        )
    if s.serve.max_body_bytes < 1024 or s.serve.max_rows < 1 or s.serve.graceful_seconds < 0:
        raise ConfigError(
            "serve.max_body_bytes must be at least 1024, serve.max_rows at least 1 and "
            "serve.graceful_seconds at least 0",
            fix="correct the serve section",
        )
    if s.serve.model_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", s.serve.model_sha256):
        raise ConfigError(
            f"serve.model_sha256 {short(s.serve.model_sha256)} is not a sha256 (64 lower-case "
            "hex digits)",
            fix="set it to the booster's sha256 (the image label dev.mlgate.model.sha256), or "
            "leave it unset",
        )
    if s.serve.max_header_bytes < 1024 or s.serve.read_timeout_seconds <= 0:
        raise ConfigError(
            "serve.max_header_bytes must be at least 1024 and serve.read_timeout_seconds above 0, "
            f"got {s.serve.max_header_bytes} and {s.serve.read_timeout_seconds}",
            fix="correct the serve section (MLGATE_SERVE_MAX_HEADER_BYTES / "
            "MLGATE_SERVE_READ_TIMEOUT_SECONDS)",
        )
    m = s.monitor
    if m.log_sink is not None and "://" in m.log_sink and not m.log_sink.startswith("s3://"):
        raise ConfigError(
            f"monitor.log_sink {short(m.log_sink)} is neither a directory nor an s3:// URL",
            fix="write it as a directory (/var/log/mlgate) or s3://BUCKET/PREFIX",
        )
    if min(m.log_batch_rows, m.log_max_pending_rows, m.min_rows, m.max_rows) < 1:
        raise ConfigError(
            "monitor.log_batch_rows, log_max_pending_rows, min_rows and max_rows must be at "
            "least 1",
            fix="correct the monitor section",
        )
    if m.log_flush_seconds <= 0 or m.window_hours <= 0:
        raise ConfigError(
            "monitor.log_flush_seconds and monitor.window_hours must be positive, got "
            f"{m.log_flush_seconds} and {m.window_hours}",
            fix="correct the monitor section",
        )
    if not 0 < m.drift_share <= 1 or not 0 <= m.max_auc_drop < 1:
        raise ConfigError(
            f"monitor.drift_share must be in (0, 1] and monitor.max_auc_drop in [0, 1), got "
            f"{m.drift_share} and {m.max_auc_drop}",
            fix="set monitor.drift_share to e.g. 0.5 and monitor.max_auc_drop to e.g. 0.05",
        )
    choices = {
        "gate.mode": (s.gate.mode, ("enabled", "dry-run")),
        "gate.first_model": (s.gate.first_model, ("absolute", "reject")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(
                f"{key} must be one of {', '.join(allowed)}, got {short(value)}"
                f"{did_you_mean(value, allowed)}",
                fix=f"set {key} to {allowed[0]}",
            )
    for key in ("max_latency_ms", "max_latency_ratio"):
        value = getattr(s.gate, key)
        if value is not None and value <= 0:
            raise ConfigError(
                f"gate.{key} must be positive, got {value}",
                fix=f"set gate.{key} to a positive number, or null to switch the check off",
            )
    if not 0.5 <= s.gate.confidence < 1:
        raise ConfigError(
            f"gate.confidence must be in [0.5, 1), got {s.gate.confidence}",
            fix="set gate.confidence to e.g. 0.95",
        )
    for name, floor in s.gate.slice_min_auc.items():
        if name not in s.metrics.slices:
            raise ConfigError(
                f"gate.slice_min_auc names slice '{name}', which metrics.slices does "
                f"not declare{did_you_mean(name, s.metrics.slices)}",
                fix="declare the slice under metrics.slices or remove the floor",
            )
        if not isinstance(floor, (int, float)) or isinstance(floor, bool) or not 0 <= floor <= 1:
            raise ConfigError(
                f"gate.slice_min_auc.{name} must be an AUC in [0, 1], got {floor!r}",
                fix=f"set gate.slice_min_auc.{name} to e.g. 0.85",
            )
    for name, query in s.metrics.slices.items():
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(
                f"metrics.slices.{name} must be a pandas query string",
                fix=f'write it like  {name}: "mean_radius >= 15"',
            )


# ---- Bad inputs: bounded params files, no YAML aliases, tracking URIs (issue 16) ----

PARAMS_MAX_BYTES = 1024 * 1024  # a params file is a few KB; anything near this is a mistake
ECHO_CHARS = 80  # the most of a bad value an error message repeats
# Backends with a model registry that mlgate drives (MLflow's file store is in maintenance mode
# and refuses new features; Databricks is untested). SQL schemes may name a driver: `+psycopg2`.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>\S*)")


def short(value: Any, limit: int = ECHO_CHARS) -> str:
    """repr() of a value (str() of an exception) for an error message, cut to `limit`."""
    text = str(value) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (`*name`): an alias bomb (`&a [*b, *b, ...]`
    nested) loads in microseconds as shared references and then expands to gigabytes in the
    first repr, merge or copy. mlgate's settings never need one."""

    source = "YAML"

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML is untyped
            mark = event.start_mark
            raise ConfigError(
                f"{self.source} uses a YAML alias (*{short(event.anchor)}) at line "
                f"{mark.line + 1}, column {mark.column + 1}; mlgate does not expand aliases",
                fix="write the value out in full where the alias stands (and drop its &anchor)",
            )
        return super().compose_node(parent, index)


def safe_yaml(text: str, source: str) -> Any:
    """yaml.safe_load without aliases; `source` names the text in the error."""
    loader = _NoAliasLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check_inputs(s: Settings) -> None:
    check_tracking_uri(s.tracking.uri)
    if not 1 <= s.tracking.run_lease <= 86400:
        raise ConfigError(
            f"tracking.run_lease must be 1-86400 seconds, got {short(s.tracking.run_lease)}",
            fix="set tracking.run_lease to e.g. 60: a job renews it every third of that",
        )


def check_tracking_uri(uri: str) -> None:
    """tracking.uri must be a URI of a backend mlgate supports, with a usable location."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise ConfigError(
            f"tracking.uri {short(uri)} is not a URI",
            fix="write it as SCHEME://LOCATION: http://HOST:PORT for a tracking server, "
            "sqlite:///mlflow.db for a local store (MLGATE_TRACKING_URI / --tracking-uri)",
        )
    scheme = match["scheme"].lower()
    if scheme.split("+", 1)[0] not in TRACKING_SCHEMES:
        raise ConfigError(
            f"tracking.uri scheme {short(scheme)} is not supported"
            f"{did_you_mean(scheme, TRACKING_SCHEMES)}",
            fix=f"use one of: {', '.join(TRACKING_SCHEMES)} (a SQL scheme may name its driver, "
            "e.g. postgresql+psycopg2://)",
        )
    if scheme in {"http", "https"} and not urlparse_host(uri):
        raise ConfigError(
            f"tracking.uri {short(uri)} names no host",
            fix=f"write it as {scheme}://HOST:PORT",
        )
    if scheme == "sqlite" and not match["rest"].startswith("/"):
        raise ConfigError(
            f"tracking.uri {short(uri)} has no file path (sqlite takes three slashes)",
            fix="write sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )


def urlparse_host(uri: str) -> str | None:
    from urllib.parse import urlparse

    try:
        return urlparse(uri).hostname
    except ValueError:
        return None


# ---- data.positive_class (issue 19) ----


def _positive_class(value: Any) -> str | None:
    """data.positive_class as text. YAML reads an unquoted Yes/No/on/off/true as a boolean:
    keep it as "True"/"False", which mlgate.pipeline.data matches against Yes/No-style labels too."""
    if isinstance(value, _Raw):
        value = str(value).strip() or None  # an env var or --set: the text as written
    if value is None:
        return None
    if isinstance(value, (bool, int, float, str)):
        return str(value)
    raise ConfigError(
        f"data.positive_class must be one value of the target column, got {short(value)}",
        fix='write the label of the positive class, quoted: positive_class: "Yes"',
    )


def _check_production_name(model: ModelSettings) -> None:
    """model.production_name: a safe registered-model name, not model.name itself, not one of
    mlgate's lock models."""
    name = model.production_name
    if name is None:
        return
    suggestion = f"{model.name}-production"[:100]
    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"model.production_name {short(name)} is not a safe registered-model name",
            fix=f"use 1-100 letters, digits, '.', '_' or '-' (e.g. {suggestion}), or unset it",
        )
    if name == model.name:
        raise ConfigError(
            f"model.production_name is model.name ({name}): Production must be a registered "
            "model of its own, writable only with the Environment's credentials",
            fix=f"set model.production_name to another name (e.g. {suggestion}), or unset it",
        )
    if name.startswith("mlgate-lock."):
        raise ConfigError(
            f"model.production_name {short(name)} is in the namespace of mlgate's lock models",
            fix=f"choose a name not starting with 'mlgate-lock.' (e.g. {suggestion})",
        )


# The process environment. Only this module touches `os.environ` (tests/unit/test_contracts.py
# checks it): stages get the environment injected (`main(argv, env)`), and these two functions
# are the one door for the defaults and for the libraries and child processes that read
# nothing else (MLflow's HTTP retries, uvicorn's worker processes).
def process_env() -> Mapping[str, str]:
    """This process's environment variables (the default of every `env` argument)."""
    import os

    return os.environ


def set_process_env(values: Mapping[str, str]) -> None:
    """Set variables in this process's environment (and so in its future children's)."""
    import os

    os.environ.update(values)


def unset_process_env(*names: str) -> None:
    """Remove variables from this process's environment (absent ones are fine)."""
    import os

    for name in names:
        os.environ.pop(name, None)


# `mlgate serve` with 2+ workers hands them the directory where each writes its metrics in
# prometheus-client's own variable (the client reads it too, for its multiprocess mode).
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prometheus_multiproc_dir(env: Mapping[str, str]) -> str | None:
    """The metrics directory `mlgate serve` gave its workers (None: a single worker)."""
    return env.get(PROMETHEUS_MULTIPROC_DIR) or None


def section_env(section: str, values: Any) -> dict[str, str]:
    """The `MLGATE_<SECTION>_<KEY>` variables from which `load_settings` reads back `values`
    (a section's dataclass), every key of it: how a child process that reads only the
    environment (a uvicorn worker) gets its parent's settings without a hand-kept list."""
    import json

    env = {}
    for f in dataclasses.fields(values):
        name = f"{ENV_PREFIX}{section}_{f.name}".upper()
        value = getattr(values, f.name)
        if value is None:
            if f.default is not None:  # "" reads back as the default, which is not None
                raise ConfigError(
                    f"{section}.{f.name} is None but its default is {f.default!r}",
                    fix="give it a value",
                )
            env[name] = ""
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, (str, int, float, Path)):
            env[name] = str(value)
        else:  # a mapping: YAML flow style, which JSON is
            env[name] = json.dumps(value)
    return env


# ---- A tls:// Dask scheduler's client material (issue 21, docs/dask.md) ----


def _unsecured(address: str | None) -> str:
    return address if address else "unset (a LocalCluster, which takes no TLS)"


def _tls_secrets(s: Settings, env: Mapping[str, str]) -> DaskTls | None:
    """The DASK_TLS_* secrets, checked now, before any work: all three or none, PEM text of
    the right kinds, the key the certificate's, for a tls:// scheduler. An empty variable is
    unset (a secret the caller did not pass, a fork's pull request). (Dask, when imported,
    also reads DASK_* variables into its configuration, here as the keys tls-ca, tls-cert and
    tls-key: no Dask code reads those, and a client never sends its configuration.)"""
    given = {part: env[name] for part, name in TLS_SECRETS.items() if env.get(name, "").strip()}
    if not given:
        return None
    names = ", ".join(TLS_SECRETS[part] for part in given)
    missing = [name for part, name in TLS_SECRETS.items() if part not in given]
    if missing:
        raise ConfigError(
            f"the Dask TLS secrets come as three: {names} arrived, {', '.join(missing)} did not",
            fix="pass all three secrets to the workflow (DASK_TLS_CA: the CA that signed the "
            "scheduler's certificate; DASK_TLS_CERT and DASK_TLS_KEY: the client's certificate "
            "and its key), or none for a tcp:// scheduler",
        )
    if any(f is not None for f in (s.dask.tls_ca_file, s.dask.tls_cert, s.dask.tls_key)):
        raise ConfigError(
            "the Dask TLS material is given twice: by the secrets DASK_TLS_* and by the files "
            "dask.tls_*",
            fix="keep one: the secrets (GitHub-hosted runners) or the files (a runner that "
            "holds them); unset the other",
        )
    address = s.dask.scheduler
    if not (address or "").startswith("tls://"):
        raise ConfigError(
            f"the Dask TLS secrets are set but dask.scheduler is {_unsecured(address)}",
            fix="give the tls:// address of the scheduler (the workflow input dask-scheduler), "
            "or do not pass the DASK_TLS_* secrets: mlgate never sends them to a plain "
            "tcp:// address",
        )
    return _checked_tls(given, TLS_SECRETS, origin=DaskTls.origin)


def tls_material(s: Settings) -> DaskTls | None:
    """The client's TLS material for dask.scheduler: None for a tcp:// address (or a
    LocalCluster); for a tls:// one, the secrets' (checked when loading) or the dask.tls_*
    files', read and checked now. A tls:// address with neither is refused (exit 2): mlgate
    never falls back to a plain connection."""
    address = s.dask.scheduler
    if not (address or "").startswith("tls://"):
        return None
    if s.dask_tls is not None:
        return s.dask_tls
    files = {"ca": s.dask.tls_ca_file, "cert": s.dask.tls_cert, "key": s.dask.tls_key}
    if not all(files.values()):
        raise ConfigError(
            f"dask.scheduler {address} is a TLS scheduler and no TLS material arrived: the "
            "secrets DASK_TLS_CA, DASK_TLS_CERT and DASK_TLS_KEY are empty (a pull request from "
            "a fork gets no secrets) and the dask.tls_* files are unset",
            fix="pass the three secrets to the workflow (they are not given to pull requests "
            "from forks: run their gate after merging, or from a branch of this repository), "
            "or set dask.tls_ca_file, dask.tls_cert and dask.tls_key on a runner that holds "
            "the files",
        )
    texts = {}
    for part, path in files.items():
        assert path is not None
        where = s.path(path)
        try:
            size = where.stat().st_size
            if size > TLS_MAX_BYTES:
                raise ConfigError(
                    f"{TLS_FILE_KEYS[part]} {where} is {size:,} bytes, not a PEM file",
                    fix=f"point {TLS_FILE_KEYS[part]} at the PEM file",
                )
            texts[part] = where.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read {TLS_FILE_KEYS[part]} {where}: "
                f"{exc.strerror if isinstance(exc, OSError) else 'not text'}",
                fix=f"point {TLS_FILE_KEYS[part]} at a readable PEM file (relative paths are "
                "relative to params.yaml)",
            ) from None
    return _checked_tls(
        texts, TLS_FILE_KEYS, origin="the files " + ", ".join(TLS_FILE_KEYS.values())
    )


def _checked_tls(texts: Mapping[str, str], names: Mapping[str, str], *, origin: str) -> DaskTls:
    """The three PEM texts parsed with cryptography: the CA one or more certificates, the
    client's certificate (a chain: its own first) and an unencrypted private key holding the
    certificate's public key. Nothing of the material is echoed in an error."""
    import datetime

    from cryptography.hazmat.primitives import serialization

    pem = {part: _normal_pem(text) for part, text in texts.items()}
    _certificates(pem["ca"], names["ca"])
    cert = _certificates(pem["cert"], names["cert"])[0]
    key = _private_key(pem["key"], names["key"])
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError(
            f"the key in {names['key']} does not match the certificate in {names['cert']}",
            fix="give the key the certificate was issued for (both from the same place: "
            "dask-gateway's cluster.security, the service's client security); compare them "
            "with `openssl x509 -noout -pubkey -in CERT` and `openssl pkey -pubout -in KEY`",
        )
    end = cert.not_valid_after_utc
    return DaskTls(
        ca=pem["ca"],
        cert=pem["cert"],
        key=pem["key"],
        origin=origin,
        cert_not_after=end.isoformat(),
        cert_expired=end < datetime.datetime.now(datetime.UTC),
    )


def _normal_pem(text: str) -> str:
    """Line ends made \\n, surrounding blanks dropped, one final newline (a secret pasted in a
    web form may carry \\r\\n or a trailing space)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip() + "\n"


def _certificates(text: str, name: str) -> list[Any]:
    from cryptography import x509

    if "CERTIFICATE-----" not in text or "\n" not in text.strip():
        _not_pem(
            text,
            name,
            "a certificate",
            swapped="PRIVATE KEY-----" in text and "CERTIFICATE-----" not in text,
        )
    try:
        return list(x509.load_pem_x509_certificates(text.encode()))
    except ValueError as exc:
        _not_pem(text, name, "a certificate", detail=str(exc))
    raise AssertionError("unreachable")


def _private_key(text: str, name: str) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    if "PRIVATE KEY-----" not in text or "\n" not in text.strip():
        _not_pem(
            text,
            name,
            "a private key",
            swapped="CERTIFICATE-----" in text and "PRIVATE KEY-----" not in text,
        )
    if "ENCRYPTED PRIVATE KEY-----" in text or "Proc-Type: 4,ENCRYPTED" in text:
        raise ConfigError(
            f"{name} holds an encrypted private key; Dask takes no passphrase",
            fix="store the key unencrypted (`openssl pkey -in KEY -out plain.pem`); the secret "
            "store is what protects it",
        )
    try:
        return serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        _not_pem(text, name, "a private key", detail=str(exc))
    raise AssertionError("unreachable")


def _not_pem(text: str, name: str, kind: str, *, swapped: bool = False, detail: str = "") -> None:
    """Refuse `text` as `kind`, saying what it looks like instead (never echoing it)."""
    import base64
    import binascii

    body = text.strip()
    how = (
        f"store the file's whole contents, line breaks included: `gh secret set {name} < FILE.pem`"
        if name.isupper()
        else f"point {name} at the PEM file"
    )
    if swapped:
        other = "a private key" if kind == "a certificate" else "a certificate"
        raise ConfigError(
            f"{name} holds {other}, not {kind}",
            fix="check which secret holds what: DASK_TLS_CERT the client's certificate, "
            "DASK_TLS_KEY its private key, DASK_TLS_CA the CA's certificate (are two swapped?)",
        )
    if "-----BEGIN" in body:
        broken = "\n" not in body
        raise ConfigError(
            f"{name} is not a valid PEM {kind[2:]}: "
            + ("its line breaks were lost (the PEM is on one line)" if broken else detail),
            fix=how,
        )
    if "\n" not in body and (
        body.startswith(("/", "~", "./", "../", "$", "C:\\"))
        or body.lower().endswith((".pem", ".crt", ".cer", ".key"))
    ):
        raise ConfigError(
            f"{name} looks like a file path ({len(body)} characters), not the PEM text of {kind}",
            fix=how + (" (a path on the runner goes in dask.tls_*)" if name.isupper() else ""),
        )
    try:
        decoded = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if b"-----BEGIN" in decoded:
        raise ConfigError(
            f"{name} is base64 of a PEM file, not the PEM text of {kind}",
            fix="store the PEM text itself (decode it first: `base64 -d`), then " + how,
        )
    if decoded[:1] == b"\x30":  # an ASN.1 SEQUENCE: DER in base64, without the PEM armour
        raise ConfigError(
            f"{name} is base64 of binary DER, not the PEM text of {kind}",
            fix="convert it to PEM (`openssl x509 -inform DER -in CERT.der -out CERT.pem`, a key: "
            "`openssl pkey -inform DER -in KEY.der -out KEY.pem`), then " + how,
        )
    raise ConfigError(
        f"{name} is not PEM text of {kind} (no -----BEGIN line)",
        fix=how,
    )
