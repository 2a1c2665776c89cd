"""A registered version's booster as MLflow logged it: the file itself, byte for byte, with its
inputs, input example, categories and tags, downloaded from the artifact store. Its sha256 is
what images, bundles and production copies are checked against (never a tag)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlgate.errors import ModelError


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


def logged_booster(client: Any, name: str, version: str) -> LoggedBooster:
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
        # The registry URI is then the public mlflow.get_registry_uri(): what the client
        # resolved from the same tracking URI (tracking.connect makes it with no registry URI
        # of its own; tests/unit/test_tracking.py checks the two agree).
        mlflow.set_tracking_uri(client.tracking_uri)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
                registry_uri=mlflow.get_registry_uri(),
            )
        )
        if not (local / "MLmodel").is_file():
            raise ModelError(
                f"the files of {name} version {version} are gone from the artifact store (no "
                f"MLmodel under {str(model_version.source)[:200]}; its run "
                f"{model_version.run_id} or its artifacts were deleted), so its booster cannot "
                "be read back, and nothing it was checked against can be verified",
                fix=f"{name} version {version} can no longer be proven nor rebuilt: use another "
                "version (`mlgate rollback --to N`), or train, evaluate and deploy a new one",
            )
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        flavor = (mlmodel.get("flavors") or {}).get("xgboost") or {}
        if flavor.get("model_class") != "xgboost.core.Booster" or not flavor.get("data"):
            raise ModelError(
                f"models:/{name}/{version} is not an XGBoost Booster logged by mlgate",
                fix="register models with `mlgate train`",
            )
        if not (local / flavor["data"]).is_file():
            raise ModelError(
                f"the booster of {name} version {version} ({flavor['data']}) is gone from the "
                "artifact store (its MLmodel is there): it cannot be read back or verified",
                fix=f"find out who deleted it from run {model_version.run_id}'s artifacts; "
                f"{name} version {version} can no longer be proven: use another version "
                "(`mlgate rollback --to N`), or train, evaluate and deploy a new one",
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


def _input_example(local: Path, features: list[str]) -> Any:
    """The input example MLflow logged with the model, as rows in signature order (or None)."""
    import mlflow.models

    try:
        # MLflow annotates the example as str; it is the DataFrame logged with the model
        frame: Any = mlflow.models.Model.load(local).load_input_example(str(local))
        return None if frame is None else frame[features].to_numpy(dtype="float64")
    except Exception:  # an example is a bonus for the parity check, not a requirement
        return None
