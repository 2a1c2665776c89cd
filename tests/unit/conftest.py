"""Unit-tier fixtures: no services. `openapi` is GitHub's OpenAPI description loaded in-process
(the integration tier serves the same stand-in over HTTP); `github_request` holds one request
body that mlgate builds to the description without any socket."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.github_openapi import VALID_TOKEN, OpenAPIStandIn, description

REPO = Path(__file__).resolve().parents[2]
HEADERS = {
    "Authorization": f"Bearer {VALID_TOKEN}",
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "Content-Type": "application/json",
}


@pytest.fixture(scope="session")
def openapi() -> OpenAPIStandIn:
    return OpenAPIStandIn(description(REPO / ".cache"))


@pytest.fixture
def github_request(
    openapi: OpenAPIStandIn,
) -> Iterator[Callable[[str, str, Any], tuple[int, Any]]]:
    """send(method, path, body) -> (status, answer): the request validated against the
    description (path, parameters, body); the test fails if any request broke it."""
    openapi.reset()

    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        status, _, answer = openapi.handle(method, path, dict(HEADERS), raw)
        return status, answer

    yield send
    assert openapi.violations == []
