"""The locks agree with pyproject.toml: every declared requirement is pinned, at a version its
specifier allows, for each platform and Python the universal lock covers.

Offline on purpose: regenerating the lock against the live index is not reproducible here (the
same `uv pip compile --exclude-newer --refresh` resolved filelock 4.2.11 and 4.2.12 on
successive runs), so a test that re-resolves would fail at random.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIME = PYPROJECT["project"]["dependencies"]
TEST = PYPROJECT["project"]["optional-dependencies"]["test"]
ENVIRONMENTS = {
    f"{platform}-py{python}": {
        **default_environment(),
        "sys_platform": platform,
        "python_version": python,
        "python_full_version": f"{python}.0",
    }
    for platform in ("linux", "darwin")
    for python in ("3.11", "3.12")
}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^ ;\\]+)\s*(?:;\s*(?P<marker>[^\\]+))?")


def pins(path) -> dict[str, list[tuple[Version, Marker | None]]]:
    out: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            marker = Marker(match["marker"].strip()) if match["marker"] else None
            out.setdefault(canonicalize_name(match["name"]), []).append(
                (Version(match["version"]), marker)
            )
    return out


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [("requirements.lock", RUNTIME), ("requirements-dev.lock", RUNTIME + TEST)],
)
@pytest.mark.parametrize("env_name", sorted(ENVIRONMENTS))
def test_lock_pins_every_declared_requirement(lock, requirements, env_name) -> None:
    env = ENVIRONMENTS[env_name]
    locked = pins(REPO / lock)
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        versions = [v for v, m in locked.get(name, []) if m is None or m.evaluate(env)]
        assert versions, f"{name} is not in {lock} for {env_name}: run `make lock`"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {name}=={version}, outside {requirement.specifier}: run `make lock`"
            )


def test_the_uv_pin_is_the_same_everywhere() -> None:
    wanted = (REPO / ".github/actions/setup/uv-requirements.in").read_text().strip()
    [(version, _)] = pins(REPO / ".github/actions/setup/uv-requirements.txt")["uv"]
    assert wanted == f"uv=={version}"
    assert (
        f"install --quiet --disable-pip-version-check {wanted}" in (REPO / "Makefile").read_text()
    )
