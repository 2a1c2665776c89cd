"""The benchmark harness keeps working: `bench/run.py --smoke` runs its groups once on tiny
sizes (real `mlgate` processes against a real store) and writes a report of the right shape.
No timing is asserted: speed is judged by `make bench`'s ratios, not by tests. `make bench
QUICK=1` stays the user's quick run (a few minutes).

The suite runs the groups no other test covers (SMOKE): startup, steps (the import check
below) and gate, about a third of the full smoke's cost. The others are `make bench`'s own:
train (its `mlgate train` run is in steps; the rest is a user's script, timed), register
(registration is proven by tests/integration/test_train.py) and serve (the model server by
tests/integration/test_serve_http.py and test_serve_workers.py; the rest is wrk and
`mlflow models serve`, started to be timed). `python bench/run.py --smoke` still runs them all.

The steps group also records which heavy libraries each step imported while it ran: that is
asserted here (the decision path never loads the reports' libraries; promotion never loads a
training library; a workspace already holding the data version never opens DVC), on real runs
against a real `mlflow server` that the bench starts (as the workflows reach the registry)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

FIGURES = {
    "startup": {"startup"},
    "steps": {
        "promote",
        "evaluate",
        "train-demo",
        "promote-floor",
        "evaluate-floor",
        "train-floor",
    },
    "gate": {"gate"},
    "train": {"train-user"},
    "register": {"register"},
    "serve": {
        "serve-1w",
        "serve-1conn",
        "serve-cpu",
        "oip-v2",
        "serve-log",
        "batch-10k",
        "batch-vs-decode",
    },
}

# The groups the suite runs (see above); FIGURES lists every group's figures.
SMOKE = ("startup", "steps", "gate")


def test_the_smoke_benchmark_runs_its_groups_and_reports(tmp_path) -> None:
    only = ["--only", ",".join(SMOKE)]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", *only, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["smoke"] and results["groups"] == list(SMOKE)
    names = {f["name"] for f in results["figures"]}
    assert names == set().union(*(FIGURES[group] for group in SMOKE))
    for figure in results["figures"]:
        assert figure["mlgate"] > 0 and figure["runs"], figure
        assert figure["alternative"] is None or figure["alternative_runs"], figure
    imports = results["imports"]
    assert {"mlflow", "xgboost", "pandas"} <= set(imports["train"])
    assert not {"evidently", "matplotlib"} & set(imports["train"])
    assert not {"evidently", "matplotlib", "pandera"} & set(imports["evaluate"])
    # the workspace holds the data data.dvc names (checked by digest): DVC is not opened
    assert "dvc" not in set(imports["train"]) | set(imports["evaluate"])
    assert not {"xgboost", "sklearn", "dvc", "pandera", "evidently", "matplotlib"} & set(
        imports["promote"]
    )
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| figure | what | mlgate | alternative | ratio | goal | met |")
    assert len(table.strip().splitlines()) == 2 + len(names)
