from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import pytest

from mlgate.github import outputs as github
from mlgate.pipeline import lineage
from mlgate.pipeline.data import DataVersion
from mlgate.settings import GitHubContext
from tests.conftest import REPO, git


def test_outputs_and_summary_are_appended(tmp_path: Path) -> None:
    ctx = GitHubContext(output_file=tmp_path / "out", summary_file=tmp_path / "summary")
    github.write_outputs(ctx, {"run-id": "abc", "report": "line1\nline2"})
    github.write_summary(ctx, "### one")
    github.write_summary(ctx, "### two")
    text = (tmp_path / "out").read_text()
    assert text.startswith("run-id=abc\nreport<<ghadelimiter_")
    assert "\nline1\nline2\nghadelimiter_" in text
    assert (tmp_path / "summary").read_text() == "### one\n\n### two\n\n"


def test_nothing_is_written_outside_actions(tmp_path: Path) -> None:
    github.write_outputs(GitHubContext(), {"a": "b"})
    github.write_summary(GitHubContext(), "x")
    assert list(tmp_path.iterdir()) == []


def test_annotations_escape_newlines(capsys) -> None:
    github.annotate("error", "bad\nthing 100%", title="a: b, c")
    assert capsys.readouterr().out == "::error title=a%3A b%2C c::bad%0Athing 100%25\n"


def test_markdown_table_escapes_pipes() -> None:
    assert github.markdown_table(["a"], [["x|y"]]) == "| a |\n|---|\n| x\\|y |"


def test_git_info_ignores_untracked_files(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("1")
    git(tmp_path, "add", "f")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    (tmp_path / "untracked").write_text("x")
    info = lineage.git_info(tmp_path, GitHubContext())
    assert info.commit == git(tmp_path, "rev-parse", "HEAD") and info.dirty is False
    (tmp_path / "f").write_text("2")
    assert lineage.git_info(tmp_path, GitHubContext()).dirty is True


def test_git_info_falls_back_to_github_sha(tmp_path: Path) -> None:
    info = lineage.git_info(tmp_path, GitHubContext(sha="f" * 40))
    assert info.commit == "f" * 40 and info.dirty is None


def test_lineage_tags() -> None:
    data = DataVersion(
        dvc_file="data.dvc",
        dvc_md5="a" * 32 + ".dir",
        path="data/x.csv",
        file_md5="0123" + "b" * 28,
        remote="s3",
        remote_url="s3://bucket/dvc",
    )
    tags = lineage.lineage_tags(
        git=lineage.GitInfo(commit="c" * 40, dirty=False, ref="refs/heads/main"),
        data=data,
        github=GitHubContext(repository="acme/m", run_id="9"),
        extra={"mlgate.data.rows": 5},
    )
    assert tags["mlgate.data.object_url"] == "s3://bucket/dvc/files/md5/01/23" + "b" * 28
    assert tags["mlgate.github.run_url"] == "https://github.com/acme/m/actions/runs/9"
    assert tags["mlflow.source.git.commit"] == "c" * 40
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.git.repoURL"] == "https://github.com/acme/m"
    assert tags["mlgate.data.rows"] == "5" and tags["mlgate.git.dirty"] == "false"
    assert all(isinstance(v, str) for v in tags.values())
    assert "mlgate.github.actor" not in tags  # unset values are left out


def test_mlflows_git_tags_unknown_to_the_project_are_to_be_removed() -> None:
    """A pull request's merge ref names no branch, and outside Actions there is no repository
    URL: None, so train removes what MLflow took from another checkout."""
    git = lineage.GitInfo(commit=None, dirty=None, ref="refs/pull/7/merge")
    assert lineage.mlflow_git_tags(git, GitHubContext()) == dict.fromkeys(lineage.MLFLOW_GIT_TAGS)


def test_serving_requirements_are_the_lock_pins() -> None:
    """The model's pip requirements equal requirements.lock for this Python."""
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            spec, _, marker = line.rstrip(" \\").partition(";")
            name, version = spec.strip().split("==")
            from packaging.markers import Marker

            if not marker.strip() or Marker(marker.strip()).evaluate():
                lock[name] = version
    pins = dict(p.split("==") for p in lineage.serving_requirements())
    assert {"mlflow", "numpy", "pandas", "scipy"} <= set(pins)
    assert pins == {name: lock[name] for name in pins}
    assert pins["mlflow"] == metadata.version("mlflow")


def test_installed_distributions_lists_this_environment() -> None:
    text = lineage.installed_distributions()
    assert f"mlflow=={metadata.version('mlflow')}" in text.splitlines()
    lines = text.splitlines()
    assert lines == sorted(lines) and len(lines) == len(set(lines))
    assert f"numpy=={metadata.version('numpy')}" in lines
    # the oracle: the same listing through the standard library's full metadata parser
    parsed = {
        f"{d.metadata['Name'].lower()}=={d.version}"
        for d in metadata.distributions()
        if d.metadata["Name"]
    }
    assert lines == sorted(parsed)


def test_logging_a_model_skips_mlflows_distribution_scan_but_still_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """requirements_scan_skipped fills MLflow's private module map (this fails loudly when
    MLflow renames or drops it): MLflow's requirement processing, the code log_model runs,
    then never scans every distribution, yet still checks (and warns about) each pin."""
    from mlflow.utils import environment
    from mlflow.utils import requirements_utils as mlflow_requirements

    assert hasattr(mlflow_requirements, "_init_modules_to_packages_map")
    assert hasattr(mlflow_requirements, "_PACKAGES_TO_MODULES")
    monkeypatch.setattr(mlflow_requirements, "_MODULES_TO_PACKAGES", None)
    scans: list[int] = []
    real = mlflow_requirements.importlib_metadata.packages_distributions
    monkeypatch.setattr(
        mlflow_requirements.importlib_metadata,
        "packages_distributions",
        lambda: scans.append(1) or real(),
    )
    warned: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
    mlflow_requirements._logger.addHandler(handler)
    monkeypatch.setattr(mlflow_requirements._logger, "disabled", False)
    pins = lineage.serving_requirements()
    with lineage.requirements_scan_skipped(pins):
        _, processed, _ = environment._process_pip_requirements([], pip_requirements=pins)
        assert not warned  # every pin is satisfied by this environment
        environment._process_pip_requirements([], pip_requirements=["numpy==0.0.1"])
    assert scans == []
    assert processed == pins
    mlflow_requirements._logger.removeHandler(handler)
    assert "numpy (current: " in "".join(warned)  # the check still ran, and warned
    assert mlflow_requirements._MODULES_TO_PACKAGES is None  # emptied after the block
    environment._process_pip_requirements([], pip_requirements=pins)
    assert scans == [1]  # the oracle: without the block MLflow does scan


def test_dataset_digest_is_mlflows_on_every_dtype() -> None:
    """The datasets' digests logged with the run are the ones MLflow computes itself (its
    scan of every value's type is what mlgate skips for number columns)."""
    import numpy as np
    import pandas as pd
    from mlflow.data.digest_utils import MAX_ROWS, compute_pandas_digest

    rows = MAX_ROWS + 50
    rng = np.random.default_rng(0)
    text = rng.choice(["a", "b", "c"], rows).astype(object)
    late = text.copy()
    late[MAX_ROWS + 7] = 3  # a str column up to MAX_ROWS, not after: MLflow drops it
    with_nan = text.copy()
    with_nan[5] = np.nan
    frame = pd.DataFrame(
        {
            "f": rng.random(rows),
            "i": rng.integers(0, 9, rows),
            "b": rng.random(rows) < 0.5,
            "text": text,
            "late": late,
            "with_nan": with_nan,
            "cat": pd.Categorical(text),
            "cat_nan": pd.Categorical(with_nan),
            "string": pd.array(text, dtype="string"),
            "nullable": pd.array(rng.integers(0, 9, rows), dtype="Int64"),
            "when": pd.date_range("2020-01-01", periods=rows, freq="min"),
            "f32": rng.random(rows).astype("float32"),
            "label": rng.integers(0, 2, rows),
        }
    )
    parts = [frame, frame.iloc[:30], frame.iloc[::3], frame[["f", "i", "label"]], frame.iloc[:0]]
    for part in parts:
        assert lineage.dataset_digest(part) == compute_pandas_digest(part)
    assert len({lineage.dataset_digest(p) for p in parts}) == len(parts)
