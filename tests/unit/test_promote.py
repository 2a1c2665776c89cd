"""pipeline.promote's checks of a decision before Staging moves: the record must be one this
mlgate reads and about this version, and its champion must still be the champion."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from mlgate.errors import ConfigError, GateFailed
from mlgate.pipeline import promote


def decision(version: Any = "3", schema: Any = 2) -> dict[str, Any]:
    return {"schema_version": schema, "candidate": {"version": version}, "verdict": "pass"}


@pytest.mark.parametrize("schema", [1, 2])
def test_a_decision_about_this_version_is_taken(schema: int) -> None:
    record = decision(schema=schema)
    assert promote.checked_decision(record, "3") == record


def test_a_decision_about_another_version_is_refused() -> None:
    with pytest.raises(GateFailed) as caught:
        promote.checked_decision(decision("4"), "3")
    assert caught.value.exit_code == 6
    assert "another version" in caught.value.message


def test_a_version_written_as_a_number_is_not_taken_for_text() -> None:
    """decision.json spells versions as strings; a number is not silently equal to one."""
    with pytest.raises(GateFailed):
        promote.checked_decision(decision(3), "3")


@pytest.mark.parametrize("record", [decision(schema=3), decision(schema=None), [], "pass"])
def test_a_decision_this_mlgate_cannot_read_is_a_config_error(record: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        promote.checked_decision(record, "3")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("then", "now"), [(None, None), ("2", "2")])
def test_an_unchanged_champion_keeps_the_comparison(then: str | None, now: str | None) -> None:
    assert promote.champion_change(then, now, "3") is None


@pytest.mark.parametrize(
    ("then", "now", "said"),
    [
        (None, "2", "(was none, now 2)"),  # a champion appeared: first deploy raced
        ("2", None, "(was 2, now none)"),  # the champion left Production
        ("2", "4", "(was 2, now 4)"),
    ],
)
def test_a_changed_champion_makes_the_comparison_stale(
    then: str | None, now: str | None, said: str
) -> None:
    message = promote.champion_change(then, now, "3")
    assert message == (
        f"the champion changed since the evaluation {said}: the comparison is stale, so "
        "version 3 was not promoted"
    )


def test_a_decision_whose_bytes_match_the_recorded_digest_is_taken() -> None:
    raw = b'{"verdict": "pass"}'
    promote.verified(raw, hashlib.sha256(raw).hexdigest(), "m version 3")


@pytest.mark.parametrize(
    ("recorded", "said"),
    [
        (None, "carries no digest"),
        ("", "carries no digest"),
        (hashlib.sha256(b"{}").hexdigest(), "is not the one evaluation recorded"),
    ],
)
def test_a_decision_without_or_against_its_digest_is_refused(
    recorded: str | None, said: str
) -> None:
    with pytest.raises(GateFailed) as caught:
        promote.verified(b'{"verdict": "pass"}', recorded, "m version 3")
    assert caught.value.exit_code == 6
    assert said in caught.value.message and "m version 3" in caught.value.message
    assert "mlgate evaluate" in caught.value.fix
