"""mlgate demo: the whole pipeline on the embedded defaults, then where to look.

Defaults: MLflow on a local sqlite store (mlflow.db) with artifacts in mlartifacts/, the DVC
remote committed in dvc-remote/, and the data set that ships with the project.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlgate import cli, train


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate demo: validate, train and register on the embedded defaults."""
    parser = cli.stage_parser("demo", main.__doc__)
    args = parser.parse_args(argv)

    def action() -> int:
        settings = cli.settings_from(args, env)
        result = train.train(settings)
        train.report(result, settings)
        uri = settings.tracking_uri
        ui = f"{shlex.quote(str(Path(sys.executable).with_name('mlflow')))} ui --backend-store-uri {uri}"
        if uri.startswith("sqlite:"):
            ui += f" --default-artifact-root {(settings.project_dir / 'mlartifacts').as_uri()}"
        print(f"""
Done. Model version {result.model_version} of '{result.model_name}' is registered with its lineage.
  holdout AUC   {result.metrics.get('auc', float('nan')):.4f}
  data version  {result.data_hash}
  MLflow run    {result.run_id}
Look at it in the MLflow UI:
  {ui}
  then open http://127.0.0.1:5000/#/models/{result.model_name}/versions/{result.model_version}""")
        return 0

    return cli.run(action)
