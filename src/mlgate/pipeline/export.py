"""Export a registered model version as a serving bundle (`mlgate bundle`): the booster MLflow
logged, byte for byte, with its inputs, input example and threshold, written by
`mlgate.serving.bundle.write_bundle`. This half needs MLflow; loading a bundle (mlgate.bundle) does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlgate.gate.threshold import DEFAULT as DEFAULT_THRESHOLD
from mlgate.gate.threshold import recorded
from mlgate.registry.logged import logged_booster
from mlgate.serving.bundle import write_bundle


def export_bundle(
    client: Any, name: str, version: str, dest: Path, *, compiler: str = "cc"
) -> dict[str, Any]:
    """Write the bundle of `name` version `version` into `dest` (replaced); return its meta.
    The trees are compiled with `compiler` and checked against the booster on the logged
    input example and on rows at every split threshold."""
    from mlgate.registry import tracking

    logged = logged_booster(client, name, version)
    with tracking.errors(f"reading the training run of {name} v{version}"):
        params = client.get_run(logged.run_id).data.params
    categories: dict[str, Any] = {"categories": logged.categories} if logged.categories else {}
    return write_bundle(
        dest,
        logged.raw,
        compiler=compiler,
        example=logged.example,
        name=name,
        version=logged.version,
        run_id=logged.run_id,
        features=logged.features,
        # The threshold chosen at training (tag, else the run's param), for ?labels=true.
        threshold=recorded(logged.tags, params)[0] or DEFAULT_THRESHOLD,
        data_md5=logged.tags.get("mlgate.data.md5", ""),
        commit=logged.tags.get("mlgate.git.commit", ""),
        **categories,
        # What label 1 and label 0 are (data.positive_class at training), for ?labels=true.
        **_classes(logged.tags),
    )


def _classes(tags: dict[str, str]) -> dict[str, Any]:
    positive = tags.get("mlgate.data.positive_class")
    negative = tags.get("mlgate.data.negative_class")
    if positive is None or negative is None:
        return {}
    return {"classes": {"1": positive, "0": negative}}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate bundle: export a registered model version as a serving bundle."""
    from mlgate import cli
    from mlgate.registry import tracking

    parser = cli.stage_parser("bundle", main.__doc__)
    parser.add_argument(
        "--version",
        required=True,
        type=cli.model_version,
        metavar="N",
        help="the model version to export (model.name's)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bundle"),
        metavar="DIR",
        help="where to write it (default: bundle/)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        client = tracking.connect(settings, experiment=False)
        meta = export_bundle(
            client, settings.model.name, args.version, args.out, compiler=settings.serve.compiler
        )
        parity = meta["compiled"]["parity"]
        print(
            f"exported models:/{meta['name']}/{meta['version']} to {args.out} "
            f"({len(meta['features'])} inputs, sha256 {meta['model_sha256'][:12]}); trees "
            f"compiled, equal to the booster within {parity['max_abs_diff']:.1g} on "
            f"{parity['rows']} parity rows"
        )
        return 0

    return cli.run(action)
