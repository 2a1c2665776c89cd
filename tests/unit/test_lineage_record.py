"""The arithmetic of `mlgate lineage`: which versions a version replaced, from history events
and tags that a SQL store (ints) and the REST API (strings) wrote side by side."""

from __future__ import annotations

import pytest

from mlgate.registry import audit


def event(alias: str, version, previous, at: str) -> dict:
    return {"alias": alias, "version": version, "previous": previous, "at": at, "tags": {}}


# A sqlite store (the demo) hands back versions as ints: promote recorded `previous` as 1,
# deploy as "1". Both are the same version, listed once.
MIXED = [
    event("staging", 1, None, "2026-01-01T00:00:01"),
    event("production", "1", None, "2026-01-01T00:00:02"),
    event("staging", "2", 1, "2026-01-01T00:00:03"),
    event("production", "2", "1", "2026-01-01T00:00:04"),
    event("production", "1", "2", "2026-01-01T00:00:05"),
    event("staging", "10", "2", "2026-01-01T00:00:06"),
]


@pytest.mark.parametrize(
    ("number", "production", "promotion", "expected"),
    [
        ("1", {}, {}, ["2"]),  # the rollback to 1 replaced 2
        ("2", {"previous": "1"}, {"replaced": "1"}, ["1"]),  # once, not "1, 1"
        ("10", {}, {"replaced": "2"}, ["2"]),
        ("2", {"previous": "none"}, {"replaced": "none"}, ["1"]),
        ("3", {}, {}, []),
        ("10", {"previous": "9"}, {"replaced": "2"}, ["2", "9"]),  # numeric order, not text
    ],
)
def test_replaced_versions(number, production, promotion, expected) -> None:
    events = [audit._event(e) for e in MIXED]
    assert audit.replaced_versions(number, events, production, promotion) == expected


def test_replaced_versions_from_raw_int_events() -> None:
    """Even events not normalised on read (an int next to a string) give strings, once."""
    assert audit.replaced_versions("2", MIXED, {"previous": "1"}, {}) == ["1"]


def test_events_are_normalised_to_strings() -> None:
    normalised = [audit._event(e) for e in MIXED]
    assert all(isinstance(e["version"], str) for e in normalised)
    assert [e["previous"] for e in normalised] == [None, None, "1", "1", "2", "2"]


def record(replaced: list[str]) -> dict:
    return {
        "model": "m",
        "version": "2",
        "aliases": [],
        "stage": "Archived",
        "source": {"commit": "c", "committed_at": None, "ref": None, "dirty": "false"},
        "data": {"dvc_file": "data.dvc", "md5": "d", "rows": "10", "remote": "r"}
        | {"remote_url": "s3://b", "object_url": None},
        "training": {"run_id": "r1", "status": "FINISHED", "started_at": "t", "url": None}
        | {"params": {}, "metrics": {}},
        "decision": None,
        "promotion": {},
        "image": {"ref": None, "digest": None, "pushed_at": None},
        "production": {"approved_by": "alice", "since": "t"},
        "rollback": {"by": "bob", "from": "3"},
        "workflow_runs": {},
        "replaced": replaced,
        "history": [],
        "links": {},
    }


def test_markdown_and_text_name_each_replaced_version_once() -> None:
    rec = record(audit.replaced_versions("2", MIXED, {"previous": "1"}, {"replaced": "1"}))
    markdown = audit.lineage_markdown(rec)
    assert "| replaced | 1 |" in markdown
    assert "| approved | alice at t |" in markdown
    assert "replaced                           1\n" in audit.lineage_text(rec)
    assert "| replaced | none |" in audit.lineage_markdown(record([]))
