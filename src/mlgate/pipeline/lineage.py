"""What makes a model version auditable: where its code and data came from, and what ran it.

`lineage_tags` is the one list of tags written on the training run and on the model version
(the `mlgate.` namespace); later stages read them back from the registry.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from mlgate import __version__
from mlgate.pipeline.data import DataVersion
from mlgate.settings import GitHubContext

if TYPE_CHECKING:
    import pandas as pd

# What a pyfunc load of an XGBoost Booster needs, pinned to the versions that trained it.
SERVING_DISTRIBUTIONS = ("mlflow", "xgboost-cpu", "xgboost", "numpy", "pandas", "scipy")


@dataclass(frozen=True)
class GitInfo:
    commit: str | None
    dirty: bool | None
    ref: str | None
    committed_at: str | None = None  # the commit's committer date (ISO 8601): lead time


def git_info(project_dir: Path, github: GitHubContext) -> GitInfo:
    """The commit the data and params came from. Untracked files (pulled data, a virtual
    environment, mlgate's own checkout) do not make the tree dirty: only tracked changes do."""
    commit = _git(project_dir, "rev-parse", "HEAD") or github.sha
    status = _git(project_dir, "status", "--porcelain", "--untracked-files=no")
    ref = github.ref or _git(project_dir, "symbolic-ref", "-q", "HEAD")
    committed_at = _git(project_dir, "show", "-s", "--format=%cI", commit) if commit else None
    return GitInfo(
        commit=commit,
        dirty=None if status is None else bool(status),
        ref=ref,
        committed_at=committed_at or None,
    )


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-c", f"safe.directory={cwd}", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def lineage_tags(
    *, git: GitInfo, data: DataVersion, github: GitHubContext, extra: dict[str, object]
) -> dict[str, str]:
    tags: dict[str, object] = {
        "mlgate.version": __version__,
        "mlgate.git.commit": git.commit or "unknown",
        "mlgate.git.dirty": "unknown" if git.dirty is None else str(git.dirty).lower(),
        "mlgate.git.ref": git.ref,
        "mlgate.git.committed_at": git.committed_at,
        "mlgate.data.dvc_file": data.dvc_file,
        "mlgate.data.md5": data.dvc_md5,
        "mlgate.data.path": data.path,
        "mlgate.data.file_md5": data.file_md5,
        "mlgate.data.remote": data.remote,
        "mlgate.data.remote_url": data.remote_url,
        "mlgate.data.object_url": data.object_url,
        "mlgate.github.repository": github.repository,
        "mlgate.github.run_url": github.run_url,
        "mlgate.github.run_attempt": github.run_attempt,
        "mlgate.github.workflow_ref": github.workflow_ref,
        "mlgate.github.event": github.event_name,
        "mlgate.github.actor": github.actor,
        "mlgate.python": platform.python_version(),
        **extra,
    }
    tags.update(mlflow_git_tags(git, github))
    return {k: str(v) for k, v in tags.items() if v is not None}


# MLflow's own git tags on a run. `mlflow.start_run` fills them from the checkout holding
# `sys.argv[0]`, the `mlgate` script: mlgate's install, not the project, wherever that install
# sits in a checkout of its own. mlgate writes the project's values over them, and removes any
# it has no project value for (train), so they never name another repository.
MLFLOW_GIT_TAGS = (
    "mlflow.source.git.commit",
    "mlflow.source.git.branch",
    "mlflow.source.git.repoURL",
)


def mlflow_git_tags(git: GitInfo, github: GitHubContext) -> dict[str, str | None]:
    """MLflow's git tags (MLFLOW_GIT_TAGS) for the project: its commit, its branch (the short
    name of a `refs/heads/` ref; None for a tag, a pull request's merge ref or a detached
    head) and its repository's URL on GitHub (None outside Actions). None: to be removed."""
    ref = git.ref or ""
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    url = f"{github.server_url}/{github.repository}" if github.repository else None
    return dict(zip(MLFLOW_GIT_TAGS, (git.commit, branch, url), strict=True))


def serving_requirements() -> list[str]:
    """Pinned pip requirements for the logged model, from the environment that trained it
    (installed from the lock), so MLflow's slow requirement inference never runs."""
    pins = []
    for name in SERVING_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


@contextmanager
def requirements_scan_skipped(requirements: list[str]) -> Iterator[None]:
    """While logging a model with `requirements` (each `name==version` of an installed
    distribution, as serving_requirements pins them), MLflow's check that the environment
    satisfies them does not scan every installed distribution.

    `mlflow.<flavour>.log_model` runs `warn_dependency_requirement_mismatches` even with
    explicit pip_requirements; it first maps every import name to its distributions
    (`packages_distributions()`: it reads every distribution's file list, about 1.1 CPU s
    here), a map the check only consults for a requirement whose version it cannot read from
    the metadata. MLflow has no setting to skip it (its public MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK
    skips another check, `pip install --dry-run` of requirements given with constraints, which
    mlgate's pins never are), so this fills MLflow's private map (module
    `mlflow.utils.requirements_utils`, `_MODULES_TO_PACKAGES`, filled once per process by
    `_init_modules_to_packages_map`) with the requirements' own names for the block, and
    empties it again after. The check itself still runs, on the same versions, and warns as
    before. tests/unit/test_github_lineage.py fails loudly when MLflow renames or drops that
    state (then this falls back to MLflow's scan, never to a wrong record)."""
    from mlflow.utils import requirements_utils as mlflow_requirements

    known = getattr(mlflow_requirements, "_MODULES_TO_PACKAGES", "missing")
    if known is not None or not hasattr(mlflow_requirements, "_init_modules_to_packages_map"):
        yield  # already filled in this process, or MLflow changed: its own way
        return
    names = [req.partition("==")[0] for req in requirements]
    modules: dict[str, list[str]] = {}
    for name in names:
        modules.setdefault(name.replace("-cpu", "").replace("-", "_"), []).append(name)
    setattr(mlflow_requirements, "_MODULES_TO_PACKAGES", modules)  # noqa: B010
    try:
        yield
    finally:
        setattr(mlflow_requirements, "_MODULES_TO_PACKAGES", None)  # noqa: B010
        if hasattr(mlflow_requirements, "_PACKAGES_TO_MODULES"):
            setattr(mlflow_requirements, "_PACKAGES_TO_MODULES", None)  # noqa: B010


def installed_distributions() -> str:
    """Every installed distribution as `name==version`, one a line, sorted. Only the headers
    of each one's metadata file are parsed (`HeaderParser`, headers only):
    `Distribution.metadata` parses the whole file, long description included (about 0.5 CPU s
    for this environment, against 0.06)."""
    parser = HeaderParser()
    pins = set()
    for dist in metadata.distributions():
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        headers = parser.parsestr(text, headersonly=True)
        if headers["Name"]:
            pins.add(f"{headers['Name'].lower()}=={headers['Version']}")
    return "\n".join(sorted(pins)) + "\n"


def dataset_digest(frame: pd.DataFrame) -> str:
    """MLflow's digest of a pandas dataset (`mlflow.data.digest_utils.compute_pandas_digest`,
    what `mlflow.data.from_pandas` computes when no digest is given), the same value.

    MLflow hashes the first MAX_ROWS rows of its number columns and of the columns whose
    every value is a `str`, but finds the latter by mapping `type` over every value of the
    whole frame in Python: 6.5 CPU s and 1.6 GB of short-lived objects for the three parts of
    1,000,000 x 50. A column of a numpy number, boolean or date dtype never holds a `str`, so
    only the other columns (object, category, string, ...) are scanned here, and with MLflow's
    own expression. tests/unit/test_github_lineage.py checks the value against MLflow's on
    frames of every dtype, a `str` column broken after MAX_ROWS included."""
    import numpy as np
    import pandas as pd
    from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest

    trimmed = frame.head(MAX_ROWS)
    text = np.zeros(frame.shape[1], dtype=bool)
    scan = [
        i
        for i, dtype in enumerate(frame.dtypes)
        if not (isinstance(dtype, np.dtype) and dtype.kind in "biufcmM")
    ]
    if scan:  # MLflow's own expression, on those columns only
        text[scan] = (frame.iloc[:, scan].map(type) == str).all(0).to_numpy()  # noqa: E721
    string_columns = trimmed.columns[text]
    numeric_columns = trimmed.select_dtypes(include=[np.number]).columns
    trimmed = trimmed[string_columns.union(numeric_columns)]
    return get_normalized_md5_digest(
        [pd.util.hash_pandas_object(trimmed).values, np.int64(len(frame))]
        + [str(x).encode() for x in frame.columns]
    )
