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


def layout_tree() -> set[str]:
    """The paths docs/layout.md's annotated tree names under `src/mlgate/` (folders end in
    `/`): two spaces of indent a level; a deeper indented line continues a description."""
    block = (REPO / "docs/layout.md").read_text().split("```")[1].splitlines()
    start = next(i for i, line in enumerate(block) if line.strip() == "src/mlgate/")
    named: set[str] = set()
    folders: list[str] = []
    for line in block[start + 1 :]:
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent > 12:
            continue
        folders = folders[: indent // 2 - 1]
        for name in re.split(r"\s{2,}", line.strip())[0].split(", "):
            if name.endswith("/"):
                folders.append(name)
            named.add("".join(folders) + name if not name.endswith("/") else "".join(folders))
    return named


def test_the_layout_tree_names_every_module_and_no_other() -> None:
    package = REPO / "src/mlgate"
    real = {
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "__init__.py" or p.parent == package
    } | {f"{p.relative_to(package)}/" for p in package.rglob("*/") if p.name != "__pycache__"}
    named = layout_tree()
    assert named == real, (
        f"docs/layout.md's tree: add {sorted(real - named)}, remove {sorted(named - real)}"
    )
