"""What deploy and rollback believe about an image before any request: only the configured
repository, only a well-formed digest, and a tag that carries the model's digest."""

from __future__ import annotations

import pytest

from mlgate.pipeline import deploy

REPO = "127.0.0.1:5000/mlgate/model"
DIGEST = "sha256:" + "a" * 64


def tags(repository: str = REPO, digest: str = DIGEST) -> dict[str, str]:
    return {
        "mlgate.image.repository": repository,
        "mlgate.image.tag": "v1-abc",
        "mlgate.image.digest": digest,
        "mlgate.image.ref": f"{repository}@{digest}",
    }


def test_nothing_recorded() -> None:
    assert deploy.trusted_record({}, REPO) == (None, None)


def test_the_configured_repository_is_trusted_for_a_look() -> None:
    image, why = deploy.trusted_record(tags(), REPO)
    assert why is None and image == deploy.Image(REPO, "v1-abc", DIGEST)
    assert image.pinned == f"{REPO}@{DIGEST}"


@pytest.mark.parametrize(
    "repository",
    [
        "attacker.example:5000/mlgate/model",  # another host
        "127.0.0.1:5001/mlgate/model",  # another port on the same host
        "127.0.0.1:5000/mlgate/other",  # another repository on the registry
        "127.0.0.1:5000/mlgate/model/../x",
        "",
    ],
)
def test_another_repository_is_ignored(repository: str) -> None:
    image, why = deploy.trusted_record(tags(repository=repository), REPO)
    assert image is None and "not the configured" in why and REPO in why


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "latest",
        "sha256:" + "a" * 64 + "@attacker.example/x",
        "v1",
    ],
)
def test_a_malformed_digest_is_ignored(digest: str) -> None:
    image, why = deploy.trusted_record(tags(digest=digest), REPO)
    assert image is None and "malformed" in why


def test_the_tag_carries_the_model_digest() -> None:
    model = deploy.ModelDigest("m", "3", "run", "0123456789ab" + "f" * 52)
    assert model.tag == "v3-0123456789ab"
    assert model.labels() == {
        deploy.LABEL_NAME: "m",
        deploy.LABEL_VERSION: "3",
        deploy.LABEL_RUN_ID: "run",
        deploy.LABEL_SHA256: model.sha256,
    }
    other = deploy.ModelDigest("m", "3", "run2", "fedcba987654" + "0" * 52)
    assert other.tag != model.tag, "a retrained version N gets another tag"


PIP_OFFLINE_MISSING = (
    "Step 5/30 : RUN python3 -m venv /opt/venv && if ...; then set -- --no-index "
    "--find-links /tmp/wheels; fi\n"
    "ERROR: Could not find a version that satisfies the requirement numpy==2.1.3 "
    "(from versions: none)\nERROR: No matching distribution found for numpy==2.1.3\n"
)


def test_an_offline_build_without_wheels_blames_the_wheels() -> None:
    fix = deploy.build_fix(PIP_OFFLINE_MISSING, offline=True)
    assert "download-wheels.sh" in fix and "base image is fine" in fix


def test_an_online_build_that_cannot_reach_the_index_suggests_offline() -> None:
    fix = deploy.build_fix(PIP_OFFLINE_MISSING, offline=False)
    assert "download-wheels.sh" in fix and "index" in fix


def test_a_missing_base_image_blames_the_base_image() -> None:
    log = "Step 1/30 : FROM nope/python:3.11\npull access denied for nope/python\n"
    assert "build-base-image.sh" in deploy.build_fix(log, offline=True)
