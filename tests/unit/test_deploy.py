"""pipeline.deploy's pure parts not covered by test_image_trust.py: the image a version's tags
record, the repository an image goes to, and the outputs and summary a deployment writes
(read back from files, as the runner would)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlgate.pipeline import deploy
from mlgate.pipeline.deploy import Deployment, Image
from mlgate.settings import load_settings

DIGEST = "sha256:" + "ab" * 32


def test_an_image_is_named_by_tag_and_pinned_by_digest() -> None:
    image = Image("ghcr.io/o/r/m", "v3-0123456789ab", DIGEST)
    assert image.ref == "ghcr.io/o/r/m:v3-0123456789ab"
    assert image.pinned == f"ghcr.io/o/r/m@{DIGEST}"


def test_the_recorded_image_is_read_from_the_tags() -> None:
    tags = {
        "mlgate.image.repository": "localhost:5000/m",
        "mlgate.image.tag": "v1-aa",
        "mlgate.image.digest": DIGEST,
    }
    assert Image.recorded(tags) == Image("localhost:5000/m", "v1-aa", DIGEST)


@pytest.mark.parametrize("tags", [{}, {"mlgate.image.digest": ""}, {"mlgate.image.tag": "v1"}])
def test_no_digest_no_recorded_image(tags: dict[str, str]) -> None:
    assert Image.recorded(tags) is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "localhost:5000/mlgate/{name}"),
        ({"GITHUB_REPOSITORY": "Octo/Models"}, "ghcr.io/octo/models/{name}"),
        (
            {"GITHUB_REPOSITORY": "octo/models", "MLGATE_DEPLOY_IMAGE": "reg.example/x/y"},
            "reg.example/x/y",  # set explicitly: used as given
        ),
    ],
)
def test_the_image_repository(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    settings = load_settings(env=env, cwd=tmp_path)
    assert deploy.image_repository(settings) == expected.format(name=settings.model.name.lower())


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("none", None), ("3", "3")]
)
def test_a_version_or_none(value: str | None, expected: str | None) -> None:
    assert deploy._version_or_none(value) == expected


def test_the_report_writes_outputs_and_summary(tmp_path: Path) -> None:
    outputs, summary = tmp_path / "out", tmp_path / "summary.md"
    settings = load_settings(
        env={"GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}, cwd=tmp_path
    )
    image = Image("localhost:5000/m", "v3-x", DIGEST)
    deploy.report(settings, Deployment("3", image, "m version 3 is in Production", True, "2"))
    assert outputs.read_text().splitlines() == [
        "model-version=3",
        f"image=localhost:5000/m@{DIGEST}",
        f"image-digest={DIGEST}",
        "previous-version=2",
        "changed=true",
    ]
    text = summary.read_text()
    assert text.startswith("### Deployment\nm version 3 is in Production\n")
    assert f"| image | `localhost:5000/m@{DIGEST}` |" in text
    assert "| image reused | no (built and pushed) |" in text
    assert "| replaced | 2 |" in text


def test_a_first_unchanged_deployment_reports_no_previous_version(tmp_path: Path) -> None:
    outputs, summary = tmp_path / "out", tmp_path / "summary.md"
    settings = load_settings(
        env={"GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}, cwd=tmp_path
    )
    image = Image("localhost:5000/m", "v1-x", DIGEST)
    deploy.report(settings, Deployment("1", image, "ok", reused_image=True))
    assert "previous-version=\n" in outputs.read_text()
    assert "changed=false\n" in outputs.read_text()
    assert "| replaced | – |" in summary.read_text()
    assert "| image reused | yes |" in summary.read_text()
