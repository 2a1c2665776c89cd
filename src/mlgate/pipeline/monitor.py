"""Stage: the monitor action's one command. `mlgate monitor --check drift|backtest`.

The composite action `.github/actions/monitor` used to choose between `mlgate drift` and
`mlgate backtest` in shell and swallow exit 10 there; that logic lives here now, where it is
tested. It runs the check named by `--check` (`--data` is drift's `--current`, backtest's
`--labelled`), writes the same reports and outputs as those commands, and exits 0 when the
check ran, stale or not: a stale model is the output `stale=true` (and a `::warning::`), which
the workflow's next job acts on, not a failed step. Every other failure keeps its exit code.
Empty values count as not given, so the action can pass its inputs through unconditionally.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from mlgate import cli
from mlgate.errors import ConfigError, ModelStale
from mlgate.github import outputs as github

CHECKS = ("drift", "backtest")


def optional_version(value: str) -> str | None:
    """argparse type: a model version, or '' for the one in Production."""
    return cli.model_version(value) if value.strip() else None


def parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser("monitor", main.__doc__)
    parser.add_argument(
        "--check",
        choices=CHECKS,
        default="drift",
        help="drift: recent production inputs against the training data; backtest: metrics "
        "on newly labelled data (default: drift)",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        default="",
        help="drift: production inputs (default: monitor.log_sink); backtest: the labelled "
        "data (required)",
    )
    parser.add_argument(
        "--version",
        type=optional_version,
        metavar="N",
        help="the model version to check (default or empty: the one in Production)",
    )
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate monitor: run `drift` or `backtest` and exit 0 whether or not the model is
    stale (the output `stale` says it); other failures keep their exit codes."""
    args = parser().parse_args(argv)

    def action() -> int:
        from mlgate.pipeline import drift

        data = args.data.strip() or None
        if args.check == "backtest" and data is None:
            raise ConfigError(
                "monitor --check backtest needs the labelled data",
                fix="pass --data PATH (the action's `data` input): a file or a DVC-tracked "
                "path holding the labels that arrived later",
            )
        settings = cli.settings_from(args, env)
        if args.check == "drift":
            result = drift.drift(settings, current=data, version=args.version)
        else:
            result = drift.backtest(settings, labelled=data or "", version=args.version)
        try:
            drift.report(settings, result)
        except ModelStale as exc:  # the finding, already in the outputs: not a failed step
            print(f"stale: {exc}", file=sys.stderr, flush=True)
            github.annotate(exc.level, str(exc), title="mlgate: ModelStale")
        return 0

    return cli.run(action)
