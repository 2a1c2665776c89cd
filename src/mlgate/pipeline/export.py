"""Export a registered model version as a serving bundle (`mlgate bundle`): the booster MLflow
logged, byte for byte, with its inputs, input example and threshold, written by
`mlgate.serving.bundle.write_bundle`. This half needs MLflow; loading a bundle (mlgate.bundle) does not.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate.errors import ModelError
from mlgate.gate.threshold import DEFAULT as DEFAULT_THRESHOLD
from mlgate.gate.threshold import recorded
from mlgate.serving.bundle import write_bundle


@dataclass(frozen=True)
class LoggedBooster:
    """A registered version's booster, as MLflow logged it (the source of its digest)."""

    name: str
    version: str
    run_id: str
    raw: bytes
    features: list[str]
    example: Any
    tags: dict[str, str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def logged_booster(client, name: str, version: str) -> LoggedBooster:
    """Download `name` version `version` from the registry's artifact store and return its
    booster's bytes, inputs and input example. Not a tag: the logged file itself."""
    from mlgate.registry import tracking
    from mlgate.registry.moves import get_version

    model_version = get_version(client, name, version)
    with tempfile.TemporaryDirectory() as tmp, tracking.errors(f"downloading {name} v{version}"):
        import mlflow
        import yaml

        # MLflow resolves `models:/` against the process's current URIs whatever it is passed
        # (ModelsArtifactRepository._get_model_uri_infos): point them at this client's store.
        mlflow.set_tracking_uri(client.tracking_uri)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
                registry_uri=client._registry_uri,
            )
        )
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        flavor = (mlmodel.get("flavors") or {}).get("xgboost") or {}
        if flavor.get("model_class") != "xgboost.core.Booster" or not flavor.get("data"):
            raise ModelError(
                f"models:/{name}/{version} is not an XGBoost Booster logged by mlgate",
                fix="register models with `mlgate train`",
            )
        inputs = json.loads((mlmodel.get("signature") or {}).get("inputs") or "[]")
        features = [column["name"] for column in inputs]
        if not features:
            raise ModelError(
                f"models:/{name}/{version} has no input signature",
                fix="register models with `mlgate train`",
            )
        return LoggedBooster(
            name=name,
            version=str(version),
            run_id=model_version.run_id,
            raw=(local / flavor["data"]).read_bytes(),
            features=features,
            example=_input_example(local, features),
            tags=dict(model_version.tags),
            categories=(mlmodel.get("metadata") or {}).get("mlgate.categories") or {},
        )


def export_bundle(
    client, name: str, version: str, dest: Path, *, compiler: str = "cc"
) -> dict[str, Any]:
    """Write the bundle of `name` version `version` into `dest` (replaced); return its meta.
    The trees are compiled with `compiler` and checked against the booster on the logged
    input example and on rows at every split threshold."""
    from mlgate.registry import tracking

    logged = logged_booster(client, name, version)
    with tracking.errors(f"reading the training run of {name} v{version}"):
        params = client.get_run(logged.run_id).data.params
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
        **({"categories": logged.categories} if logged.categories else {}),
        # What label 1 and label 0 are (data.positive_class at training), for ?labels=true.
        **_classes(logged.tags),
    )


def _classes(tags: dict[str, str]) -> dict[str, Any]:
    positive = tags.get("mlgate.data.positive_class")
    negative = tags.get("mlgate.data.negative_class")
    if positive is None or negative is None:
        return {}
    return {"classes": {"1": positive, "0": negative}}


def _input_example(local: Path, features: list[str]) -> Any:
    """The input example MLflow logged with the model, as rows in signature order (or None)."""
    import mlflow.models

    try:
        frame = mlflow.models.Model.load(local).load_input_example(local)
        return None if frame is None else frame[features].to_numpy(dtype="float64")
    except Exception:  # an example is a bonus for the parity check, not a requirement
        return None


def main(argv=None, env=None) -> int:
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
        client = tracking.connect(settings)
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
