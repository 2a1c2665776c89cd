"""The DORA arithmetic of `mlgate metrics` (registry.audit.delivery) and its rendering, on
hand-written Production histories; every expected figure below is worked out by hand in the
comment beside it, not by re-running the formula."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.registry import audit
from mlgate.registry.moves import COPY_OF

NOW = datetime(2026, 1, 31, tzinfo=UTC)
DAYS = 28.0  # window: 2026-01-03T00:00Z .. 2026-01-31T00:00Z


def deploy(version: str, at: str) -> dict[str, Any]:
    return {"alias": "production", "version": version, "previous": None, "at": at, "tags": {}}


def rollback(to: str, withdrawn: str, at: str) -> dict[str, Any]:
    move = deploy(to, at)
    move["tags"] = {"mlgate.rollback.from": withdrawn}
    return move


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def metrics(
    moves: list[dict[str, Any]], committed: dict[str, str] | None = None, days: float = DAYS
) -> dict[str, Any]:
    commits = {v: utc(at) for v, at in (committed or {}).items()}
    return audit.delivery("m", moves, days=days, now=NOW, committed_at=commits.get)


def story() -> list[dict[str, Any]]:
    """v1 before the window; v2 deployed and rolled back to v1 six hours later; v3, v4."""
    return [
        deploy("1", "2025-12-20T00:00:00+00:00"),  # outside the window
        deploy("2", "2026-01-10T00:00:00+00:00"),
        rollback("1", "2", "2026-01-10T06:00:00+00:00"),
        deploy("3", "2026-01-20T00:00:00+00:00"),
        deploy("4", "2026-01-24T00:00:00+00:00"),
    ]


COMMITTED = {"2": "2026-01-09T12:00:00", "3": "2026-01-19T00:00:00"}  # v4: not recorded


def test_the_four_keys_of_a_story() -> None:
    m = metrics(story(), COMMITTED)
    assert m["from"] == "2026-01-03T00:00:00+00:00"
    assert m["to"] == "2026-01-31T00:00:00+00:00"
    assert m["deployments"] == 3  # v2, v3, v4; the rollback is no deployment; v1 is too old
    assert m["rollbacks"] == 1
    assert m["deployment_frequency_per_week"] == 0.75  # 3 in 4 weeks
    assert m["change_failure_rate"] == pytest.approx(1 / 3)  # v2 of v2, v3, v4
    # lead time: v2 12 h after its commit, v3 24 h after; v4's commit is unknown
    assert m["lead_time_hours"] == {"median": 18.0, "min": 12.0, "max": 24.0, "n": 2}
    # time to restore: v2 served 00:00 to 06:00
    assert m["time_to_restore_hours"] == {"median": 6.0, "min": 6.0, "max": 6.0, "n": 1}
    assert m["moves_recorded"] == 5


def test_out_of_order_history_gives_the_same_figures() -> None:
    """Moves read from tags in any order (clock skew between writers reorders them too)."""
    moves = story()
    random.Random(7).shuffle(moves)
    assert [e["version"] for e in moves] != [e["version"] for e in story()]
    assert metrics(moves, COMMITTED) == metrics(story(), COMMITTED)


def test_empty_history() -> None:
    m = metrics([])
    assert (m["deployments"], m["rollbacks"], m["moves_recorded"]) == (0, 0, 0)
    assert m["deployment_frequency_per_week"] == 0.0
    assert m["change_failure_rate"] is None  # no deployment: no rate, not 0 %
    assert m["lead_time_hours"] is None
    assert m["time_to_restore_hours"] is None


def test_a_single_deploy() -> None:
    m = metrics([deploy("1", "2026-01-30T00:00:00+00:00")], {"1": "2026-01-29T22:30:00"}, days=7)
    assert m["deployments"] == 1
    assert m["deployment_frequency_per_week"] == 1.0
    assert m["change_failure_rate"] == 0.0
    assert m["lead_time_hours"] == {"median": 1.5, "min": 1.5, "max": 1.5, "n": 1}
    assert m["time_to_restore_hours"] is None


def test_a_deploy_exactly_at_the_window_start_counts() -> None:
    assert metrics([deploy("1", "2026-01-03T00:00:00+00:00")])["deployments"] == 1
    assert metrics([deploy("1", "2026-01-02T23:59:59+00:00")])["deployments"] == 0


def test_a_rollback_whose_withdrawn_version_was_never_deployed_restores_nothing() -> None:
    """The history starts after the withdrawn version's deployment (or lost it): the
    rollback counts, but no restore time and no failed deployment can be derived."""
    m = metrics([rollback("1", "2", "2026-01-20T00:00:00+00:00")])
    assert (m["rollbacks"], m["deployments"]) == (1, 0)
    assert m["change_failure_rate"] is None
    assert m["time_to_restore_hours"] is None


def test_rolling_back_a_deploy_from_before_the_window() -> None:
    """The restore time counts (the rollback is in the window), the failure does not (the
    deployment is not)."""
    m = metrics(
        [
            deploy("1", "2025-11-01T00:00:00+00:00"),
            deploy("2", "2025-12-30T00:00:00+00:00"),
            rollback("1", "2", "2026-01-04T00:00:00+00:00"),
        ]
    )
    assert (m["deployments"], m["rollbacks"]) == (0, 1)
    assert m["change_failure_rate"] is None
    assert m["time_to_restore_hours"]["median"] == 120.0  # 5 days


def test_only_the_last_deployment_of_a_redeployed_version_failed() -> None:
    """v2, v3, v2 again, then rolled back from v2: the second v2 deployment failed, the first
    (replaced by v3 in good order) did not; restore runs from the second."""
    m = metrics(
        [
            deploy("2", "2026-01-05T00:00:00+00:00"),
            deploy("3", "2026-01-06T00:00:00+00:00"),
            deploy("2", "2026-01-07T00:00:00+00:00"),
            rollback("3", "2", "2026-01-07T02:00:00+00:00"),
        ]
    )
    assert m["deployments"] == 3
    assert m["change_failure_rate"] == pytest.approx(1 / 3)
    assert m["time_to_restore_hours"] == {"median": 2.0, "min": 2.0, "max": 2.0, "n": 1}


def test_two_rollbacks_spread_of_restore_times() -> None:
    m = metrics(
        [
            deploy("1", "2026-01-04T00:00:00+00:00"),
            deploy("2", "2026-01-05T00:00:00+00:00"),
            rollback("1", "2", "2026-01-05T01:00:00+00:00"),  # 1 h
            deploy("3", "2026-01-10T00:00:00+00:00"),
            rollback("1", "3", "2026-01-13T00:00:00+00:00"),  # 72 h
        ]
    )
    assert (m["deployments"], m["rollbacks"]) == (3, 2)
    assert m["change_failure_rate"] == pytest.approx(2 / 3)
    assert m["time_to_restore_hours"] == {"median": 36.5, "min": 1.0, "max": 72.0, "n": 2}


def test_a_rollback_at_the_same_instant_as_the_deploy_withdrew_no_deploy() -> None:
    """A tie: the deployment must come strictly before the rollback that withdraws it."""
    at = "2026-01-10T00:00:00+00:00"
    m = metrics([deploy("2", at), rollback("1", "2", at)])
    assert m["change_failure_rate"] == 0.0
    assert m["time_to_restore_hours"] is None


def test_a_rollback_before_the_deploy_withdrew_nothing() -> None:
    """Clock skew put the rollback first: it cannot have withdrawn the later deployment."""
    m = metrics(
        [rollback("1", "2", "2026-01-09T00:00:00+00:00"), deploy("2", "2026-01-10T00:00:00+00:00")]
    )
    assert m["change_failure_rate"] == 0.0
    assert m["time_to_restore_hours"] is None


def test_a_commit_stamped_after_its_deployment_is_left_out_of_lead_time_and_named() -> None:
    """A committer's clock ahead of the registry's: v1's commit 2 h after its deployment. Its
    lead time is unknown, so it is left out (no negative hours, no clamp to 0 pulling the
    median down) and named in the report; the deployment itself still counts."""
    m = metrics([deploy("1", "2026-01-10T00:00:00+00:00")], {"1": "2026-01-10T02:00:00"})
    assert m["deployments"] == 1
    assert m["lead_time_hours"] is None
    assert m["lead_time_clock_skew"] == [{"version": "1", "hours": -2.0}]
    text = audit.metrics_markdown(m)
    assert (
        "| lead time (data commit → Production) | –; left out, commit stamped after its "
        "deployment (clock skew): v1 (2.0 h) |"
    ) in text


def test_a_skewed_commit_beside_sound_ones_leaves_their_figures_alone() -> None:
    """The story's v2 (12 h) and v3 (24 h), and v4 committed 30 min after its deployment:
    median 18 h of n=2, as without v4; v4 named, -0.5 h."""
    m = metrics(story(), COMMITTED | {"4": "2026-01-24T00:30:00"})
    assert m["lead_time_hours"] == {"median": 18.0, "min": 12.0, "max": 24.0, "n": 2}
    assert m["lead_time_clock_skew"] == [{"version": "4", "hours": -0.5}]
    assert "18.0 h median (12.0 h–24.0 h, n=2); left out, commit stamped after its " in (
        audit.metrics_markdown(m)
    )
    assert "(clock skew): v4 (30 min) |" in audit.metrics_markdown(m)


def test_a_commit_at_the_same_second_as_its_deployment_is_zero_not_skew() -> None:
    m = metrics([deploy("1", "2026-01-10T00:00:00+00:00")], {"1": "2026-01-10T00:00:00"})
    assert m["lead_time_hours"] == {"median": 0.0, "min": 0.0, "max": 0.0, "n": 1}
    assert m["lead_time_clock_skew"] == []


@pytest.mark.parametrize(
    ("hours", "shown"),
    [
        (0.25, "15 min"),
        (0.999, "60 min"),
        (1.0, "1.0 h"),
        (47.9, "47.9 h"),
        (48.0, "2.0 d"),
        (84.0, "3.5 d"),
    ],
)
def test_durations_pick_their_unit(hours: float, shown: str) -> None:
    assert audit._duration(hours) == shown


def test_metrics_markdown_of_the_story() -> None:
    text = audit.metrics_markdown(metrics(story(), COMMITTED))
    assert text.startswith(
        "### Delivery metrics: m, 2026-01-03T00:00:00+00:00 to 2026-01-31T00:00:00+00:00\n"
    )
    assert "| deployment frequency | 0.75 a week (3 in 28 days) |" in text
    assert "| lead time (data commit → Production) | 18.0 h median (12.0 h–24.0 h, n=2) |" in text
    assert "| change failure rate | 33% (1 rollbacks) |" in text
    assert "| time to restore | 6.0 h median (6.0 h–6.0 h, n=1) |" in text


def test_metrics_markdown_of_nothing_shows_dashes() -> None:
    text = audit.metrics_markdown(metrics([]))
    assert "| change failure rate | – |" in text
    assert "| time to restore | – |" in text
    assert "| deployment frequency | 0.00 a week (0 in 28 days) |" in text


# -- the history of a separate production model, in the original's numbers ----------------------
def test_a_copy_move_is_told_in_the_original_numbers() -> None:
    move = {"version": "7", "previous": "6", "tags": {COPY_OF: "m/3"}}
    move["tags"]["mlgate.production.previous"] = "2"
    assert audit._original(move, "m") == move | {"version": "3", "previous": "2"}


def test_a_copy_rollback_names_the_withdrawn_version_as_previous() -> None:
    tags = {COPY_OF: "m/1", "mlgate.production.previous": "none", "mlgate.rollback.from": "2"}
    move = {"version": "9", "previous": "8", "tags": tags}
    assert audit._original(move, "m") == move | {"version": "1", "previous": "2"}


@pytest.mark.parametrize("of", ["other/3", "mm/3", "", None])
def test_a_move_of_another_model_or_none_of_mlgates_is_left_out(of: str | None) -> None:
    tags = {} if of is None else {COPY_OF: of}
    assert audit._original({"version": "1", "previous": None, "tags": tags}, "m") is None


# -- lineage_text: sections flattened to `key value` lines -------------------------------------
def test_lineage_text_flattens_sections_and_drops_empty_values() -> None:
    record = {
        "model": "m",
        "source": {"commit": "abc", "ref": None},
        "production": {},
        "replaced": ["1", "2"],
        "workflow_runs": [{"train": "u"}],
        "history": [{"version": "1"}],  # never shown
        "links": {"x": "y"},  # never shown
    }
    lines = audit.lineage_text(record).splitlines()
    assert [line.split(None, 1) for line in lines] == [
        ["model", "m"],
        ["source.commit", "abc"],
        ["replaced", "1, 2"],
        ["workflow_runs[0].train", "u"],
    ]
    assert all(len(line.split(" ", 1)[0]) <= 34 for line in lines)
