"""The docs site builds with no broken link or anchor, and the README's links hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from tests.conftest import REPO

MKDOCS = Path(sys.executable).parent / "mkdocs"
BLOB = "https://github.com/mlgate/mlgate/blob/main/"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_strict(tmp_path: Path) -> None:
    done = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site/workflows/index.html").is_file()


@pytest.mark.parametrize(
    "bad", ["[gone](gate.md#no-such-section)", "[gone](no-such-page.md)"], ids=["anchor", "page"]
)
def test_the_strict_build_fails_on_a_broken_link(tmp_path: Path, bad: str) -> None:
    """The same configuration on a copy of the pages with one broken link: the build fails
    and names it (so the test above can fail)."""
    copy = tmp_path / "repo"
    (copy / "docs").mkdir(parents=True)
    for page in (REPO / "docs").glob("*.md"):
        (copy / "docs" / page.name).write_text(page.read_text())
    (copy / "mkdocs.yml").write_text((REPO / "mkdocs.yml").read_text())
    faq = copy / "docs/faq.md"
    faq.write_text(faq.read_text() + f"\n{bad}\n")
    done = build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert bad[bad.index("(") + 1 : -1] in done.stdout + done.stderr


def anchors(page: Path) -> set[str]:
    """The heading ids mkdocs gives a page (toc's slugify, outside code fences)."""
    found, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (match := re.match(r"#{1,6} (.+)", line)):
            found.add(slugify(re.sub(r"[`*]", "", match.group(1)), "-"))
    return found


def test_readme_links_point_at_files_and_anchors_that_exist() -> None:
    for target in LINK.findall((REPO / "README.md").read_text()):
        if target.startswith(("http://", "https://", "#")):
            continue
        path, _, anchor = target.partition("#")
        assert (REPO / path).exists(), f"README links to a missing {path}"
        if anchor:
            assert path.endswith(".md") and anchor in anchors(REPO / path), target


def test_links_to_repository_files_name_files_that_exist() -> None:
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in LINK.findall(page.read_text()):
            if target.startswith(BLOB):
                path = target[len(BLOB) :].partition("#")[0]
                assert (REPO / path).exists(), f"{page.name} links to a missing {path}"
