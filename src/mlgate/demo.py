"""mlgate demo: the pipeline on the embedded defaults, twice, then where to look.

It works in a scratch copy of the project (`.demo/`, rebuilt each time) with its own git history,
so your checkout is never changed: MLflow on a local sqlite store, the DVC remote committed in
dvc-remote/, the data set that ships with the project.

1. data version 1 -> model 1 -> evaluated (no champion yet) -> Staging;
2. a second data version (the first 40 rows withdrawn) -> model 2 -> evaluated against model 1
   on the same holdout rows -> promoted or rejected, with the decision table printed.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from mlgate import cli, evaluate, promote, train
from mlgate.data import load_frame
from mlgate.errors import GateFailed, MlgateError
from mlgate.settings import Settings

WORKSPACE = ".demo"
# What a repository using mlgate holds, copied into the scratch workspace.
PROJECT_FILES = (
    "params.yaml",
    "schema",
    "data.dvc",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    "dvc-remote",
    ".gitignore",
)
WITHDRAWN_ROWS = 40


def scratch_project(source: Path) -> Path:
    """A fresh copy of the project's data, schema and params, as its own git repository."""
    root = source / WORKSPACE
    shutil.rmtree(root, ignore_errors=True)
    for name in PROJECT_FILES:
        src, dest = source / name, root / name
        if not src.exists():
            raise MlgateError(
                f"{name} is missing from {source}",
                fix="run the demo from the root of the mlgate repository",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "demo: data version 1")
    return root


def _git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=mlgate demo", "-c", "user.email=demo@mlgate.invalid"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def publish_second_version(settings: Settings) -> None:
    """Withdraw rows from the data, `dvc add` and `dvc push` the new version, commit data.dvc:
    what a data team does for a correction release."""
    from dvc.repo import Repo

    path = settings.path(settings.data.path)
    frame = load_frame(path).iloc[WITHDRAWN_ROWS:]
    frame.to_csv(path, index=False)
    with Repo(str(settings.project_dir)) as repo:
        repo.add([str(settings.path(Path(settings.data.path).parent))])
        repo.push()
    _git(settings.project_dir, "add", "-A")
    _git(settings.project_dir, "commit", "-q", "-m", "demo: data version 2")


def round_trip(settings: Settings, title: str) -> str:
    """Train, evaluate and promote once; return the new version."""
    print(f"\n=== {title}", flush=True)
    result = train.train(settings)
    train.report(result, settings)
    decision = evaluate.evaluate(settings, result.model_version)
    evaluate.report(decision, settings, fail=False)
    try:
        print(promote.promote(settings, result.model_version).message, flush=True)
    except GateFailed as exc:
        print(f"not promoted: {exc.message}", flush=True)
    return result.model_version


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate demo: two data versions through train, evaluate and promote, in .demo/."""
    parser = cli.stage_parser("demo", main.__doc__)
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        root = scratch_project(settings.project_dir)
        settings = replace(settings, project_dir=root, params_file=root / "params.yaml")
        round_trip(settings, "data version 1: first model")
        publish_second_version(settings)
        version = round_trip(settings, "data version 2: candidate against the champion")
        uri = settings.tracking_uri
        ui = (
            f"{shlex.quote(str(Path(sys.executable).with_name('mlflow')))} ui "
            f"--backend-store-uri {uri}"
        )
        if uri.startswith("sqlite:"):
            ui += f" --default-artifact-root {(root / 'mlartifacts').as_uri()}"
        print(f"""
Done. Both rounds are in the MLflow store of the scratch project {root}:
  runs, metrics, lineage tags, decisions (decision/ artifacts: JSON, curves, evidently reports)
Look at it in the MLflow UI:
  {ui}
  then open http://127.0.0.1:5000/#/models/{settings.model.name}/versions/{version}""")
        return 0

    return cli.run(action)
