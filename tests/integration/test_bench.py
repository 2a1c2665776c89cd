"""The benchmark harness keeps working: `bench/run.py --smoke` runs every group once on tiny
sizes (real servers, wrk, MLflow's own server as the baseline, real `mlgate` processes) and
writes a report of the right shape. No timing is asserted: speed is judged by `make bench`'s
ratios, not by tests. `make bench QUICK=1` stays the user's quick run (a few minutes).

The steps group also records which heavy libraries each step imported while it ran: that is
asserted here (the decision path never loads the reports' libraries; promotion never loads a
training library), on real runs against a real store."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

FIGURES = {
    "startup": {"startup"},
    "steps": {"promote", "evaluate", "train-demo"},
    "gate": {"gate"},
    "train": {"train-user"},
    "register": {"register"},
    "serve": {"serve-1w", "serve-1conn", "oip-v2", "serve-log", "batch-10k", "batch-vs-decode"},
}


def test_the_smoke_benchmark_runs_every_group_and_reports(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["smoke"] and results["groups"] == list(FIGURES)
    names = {f["name"] for f in results["figures"]}
    assert names == set().union(*FIGURES.values())
    for figure in results["figures"]:
        assert figure["mlgate"] > 0 and figure["runs"], figure
        assert figure["alternative"] is None or figure["alternative_runs"], figure
    imports = results["imports"]
    assert {"mlflow", "xgboost", "pandas"} <= set(imports["train"])
    assert not {"evidently", "matplotlib"} & set(imports["train"])
    assert not {"evidently", "matplotlib", "pandera"} & set(imports["evaluate"])
    assert not {"xgboost", "sklearn", "dvc", "pandera", "evidently", "matplotlib"} & set(
        imports["promote"]
    )
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| figure | what | mlgate | alternative | ratio | goal | met |")
    assert len(table.strip().splitlines()) == 2 + len(names)
