"""Talking to the GitHub Actions runner: step outputs, the job summary and annotations.

Outside Actions (no GITHUB_OUTPUT / GITHUB_STEP_SUMMARY) outputs are skipped and the summary is
not written, so every stage runs the same on a laptop.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from mlgate.settings import GitHubContext


def write_outputs(context: GitHubContext, outputs: Mapping[str, str]) -> None:
    """Append step outputs, using the heredoc form for values with newlines."""
    if context.output_file is None:
        return
    lines = []
    for name, value in outputs.items():
        if "\n" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
            lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            lines.append(f"{name}={value}\n")
    with context.output_file.open("a", encoding="utf-8") as handle:
        handle.writelines(lines)


def write_summary(context: GitHubContext, markdown: str) -> None:
    if context.summary_file is None:
        return
    with context.summary_file.open("a", encoding="utf-8") as handle:
        handle.write(markdown.rstrip("\n") + "\n\n")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotate(
    level: str, message: str, *, title: str | None = None, stream: TextIO | None = None
) -> None:
    """Print a workflow command (`::error::`, `::warning::`, `::notice::`)."""
    props = f" title={_escape_data(title).replace(',', '%2C').replace(':', '%3A')}" if title else ""
    print(f"::{level}{props}::{_escape_data(message)}", file=stream or sys.stdout, flush=True)


def relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
