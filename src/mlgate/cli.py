"""The `mlgate` command: one subcommand per stage, each a module with `main(argv) -> int` (or
`MODULE:FUNCTION` where one module holds two commands of a stage).

Errors are caught here, once: printed with their fix, written as a GitHub `::error::`
annotation, and turned into the exit code of their class (see `mlgate.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from mlgate import __version__
from mlgate.errors import EXIT_CODES, MlgateError
from mlgate.github import outputs as github
from mlgate.settings import Settings, load_settings, process_env

COMMANDS = {
    "validate": ("mlgate.pipeline.validate", "pull the data named by data.dvc and validate it"),
    "train": (
        "mlgate.pipeline.train",
        "validate, train XGBoost, log to MLflow and register a version",
    ),
    "evaluate": (
        "mlgate.pipeline.evaluate",
        "score a candidate against the champion; write the decision",
    ),
    "promote": (
        "mlgate.pipeline.promote",
        "move the staging alias to a candidate that passed the gate",
    ),
    "deploy": (
        "mlgate.pipeline.deploy",
        "build and push the serving image, then move the model to Production",
    ),
    "rollback": ("mlgate.pipeline.rollback", "move Production back to the version it replaced"),
    "setup-environment": (
        "mlgate.github.environment",
        "create or update the GitHub Environment that gates Production",
    ),
    "bundle": ("mlgate.pipeline.export", "export a registered version as a serving bundle"),
    "serve": (
        "mlgate.serving.app",
        "serve a model bundle: MLflow scoring protocol, OIP v2, /metrics",
    ),
    "comment": ("mlgate.github.comment", "post or update the pull-request gate's sticky comment"),
    "drift": ("mlgate.pipeline.drift", "compare recent production inputs with the training data"),
    "backtest": (
        "mlgate.pipeline.drift:backtest_main",
        "score the Production model on newly labelled data; compare with training",
    ),
    "monitor": (
        "mlgate.pipeline.monitor",
        "drift or backtest for the monitor action: a stale model is an output, not a failure",
    ),
    "alert": (
        "mlgate.github.alert",
        "after drift: dispatch retraining and open or update the drift issue",
    ),
    "lineage": ("mlgate.registry.audit", "where a model version came from, and what it replaced"),
    "metrics": (
        "mlgate.registry.audit:metrics_main",
        "delivery metrics from the registry's history",
    ),
    "demo": ("mlgate.pipeline.demo", "run the pipeline on the embedded defaults"),
    "doctor": (
        "mlgate.registry.doctor",
        "report (--repair: repair) disagreeing aliases, stages, locks",
    ),
}
COMMANDS["init"] = (
    "mlgate.pipeline.init",
    "write params.yaml, a pandera schema and .gitignore for a table",
)
# Named flags shared by every stage, and the settings key each one sets.
FLAGS = {
    "--model-name": "model.name",
    "--tracking-uri": "tracking.uri",
    "--data-dvc": "data.dvc_file",
    "--dvc-remote": "dvc.remote",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="mlgate",
        description="Take an XGBoost model from a data change to Production.",
        epilog="exit codes: " + ", ".join(f"{code} {what}" for code, what in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"mlgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv[:1])
    module, _, function = COMMANDS[args.command][0].partition(":")
    entry = getattr(importlib.import_module(module), function or "main")
    return int(entry(argv[1:] + rest))


def stage_parser(name: str, description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"mlgate {name}", description=description)
    parser.add_argument(
        "--params", metavar="PATH", help="params file (default: params.yaml, or $MLGATE_PARAMS)"
    )
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one setting; repeatable",
    )
    for flag, key in FLAGS.items():
        parser.add_argument(flag, metavar="VALUE", help=f"same as --set {key}=VALUE")
    parser.add_argument(
        "--no-pull",
        action="store_true",
        help="use the data in the workspace instead of `dvc pull` (dvc.pull=false)",
    )
    return parser


def add_candidate_version(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--candidate-version",
        required=True,
        metavar="N",
        type=model_version,
        help=f"the model version {what} (model.name's)",
    )


VERSION = re.compile(r"0*[1-9][0-9]{0,8}")


def model_version(value: str) -> str:
    """argparse type of a model version: a positive integer, never a path or a URI."""
    if not VERSION.fullmatch(value):  # ASCII digits only: str.isdigit() accepts '²'
        raise argparse.ArgumentTypeError(f"{value!r} is not a model version (1, 2, ...)")
    return str(int(value))


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    flags = {key: getattr(args, flag[2:].replace("-", "_")) for flag, key in FLAGS.items()}
    if args.no_pull:
        flags["dvc.pull"] = "false"
    return load_settings(
        env=process_env() if env is None else env,
        params_file=args.params,
        overrides=args.overrides,
        flags=flags,
    )


def run(action: Callable[[], int | None]) -> int:
    """Run a stage: errors become a message with its fix, an annotation and an exit code.
    SIGTERM (a cancelled job) unwinds like an error, so open MLflow runs end as FAILED."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return action() or 0
    except MlgateError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        github.annotate(exc.level, str(exc), title=f"mlgate: {type(exc).__name__}")
        return exc.exit_code
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
