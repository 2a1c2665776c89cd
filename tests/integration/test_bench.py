"""`make bench QUICK=1` keeps working: the harness runs end to end (real servers, wrk, MLflow's
own server as the baseline) and writes its results. No timing is asserted here: speed is
judged by the benchmark's ratios, not by tests."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_the_quick_benchmark_runs_and_reports(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    names = {f["name"] for f in results["figures"]}
    expected = {"startup", "serve-1w", "serve-1conn", "serve-log", "oip-v2", "batch-10k"}
    assert expected | {"batch-vs-decode"} <= names
    for figure in results["figures"]:
        assert figure["mlgate"] > 0 and figure["runs"], figure
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| figure | what | mlgate | alternative | ratio | goal | met |")
