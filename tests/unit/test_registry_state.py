"""The disagreement logic of registry moves (`registry.inspect`), as pure functions over plain
data: each row is a state a killed move can leave, and what a re-run (or `mlgate doctor`) must
do about it."""

from __future__ import annotations

import json

import pytest

from mlgate.faults import FAULT_POINTS
from mlgate.registry import moves as registry
from mlgate.registry.moves import PENDING, ModelState, Ticket, VersionState

AT = "2026-12-01T10:00:00.000001+00:00"
MOVE = {
    "tags": {"mlgate.promotion": "staging", "mlgate.promotion.replaced": "1"},
    "previous": "1",
    "previous_tags": {"mlgate.promotion.superseded_by": "2"},
    "at": AT,
}
HISTORY = registry.history_key("staging", AT, "2")


def state(
    aliases: dict[str, str],
    stages: dict[str, str],
    tags: dict[str, dict[str, str]] | None = None,
    model_tags: dict[str, str] | None = None,
    tickets: tuple[Ticket, ...] = (),
) -> ModelState:
    tags = tags or {}
    versions = {v: VersionState(v, s, tags.get(v, {})) for v, s in stages.items()}
    return ModelState("m", aliases, model_tags or {}, versions, tickets, now=1000.0)


def actions(s: ModelState) -> list[tuple[str, ...]]:
    return [f.action for f in registry.inspect(s)]


PENDING_2 = {PENDING + "staging": json.dumps(MOVE)}
DONE_2 = dict(MOVE["tags"])
DONE_1 = dict(MOVE["previous_tags"])

CASES = {
    "all agree": (
        state({"staging": "2"}, {"1": "Archived", "2": "Staging"}, {"2": DONE_2, "1": DONE_1}),
        [],
    ),
    "killed after the pending record: dropped, the re-run moves again": (
        state({"staging": "1"}, {"1": "Staging", "2": "None"}, {"2": PENDING_2}),
        [("clear", "2", "staging")],
    ),
    "killed after the alias: stage, archive, tags, history, then clear": (
        state({"staging": "2"}, {"1": "Staging", "2": "None"}, {"2": PENDING_2}),
        [
            ("stage", "2", "Staging"),
            ("stage", "1", "Archived"),
            ("tag", "2", "mlgate.promotion", "staging"),
            ("tag", "2", "mlgate.promotion.replaced", "1"),
            ("tag", "1", "mlgate.promotion.superseded_by", "2"),
            ("model_tag", HISTORY, registry.history_event("staging", "2", MOVE)),
            ("clear", "2", "staging"),
        ],
    ),
    "killed after the history: only the clear is left": (
        state(
            {"staging": "2"},
            {"1": "Archived", "2": "Staging"},
            {"2": DONE_2 | PENDING_2, "1": DONE_1},
            {HISTORY: "{}"},
        ),
        [("clear", "2", "staging")],
    ),
    "the staging holder deployed stays in Production": (
        state({"staging": "2", "production": "2"}, {"1": "Production", "2": "Staging"}),
        [("stage", "2", "Production"), ("stage", "1", "Archived")],
    ),
    "an unreadable pending record is dropped": (
        state({"staging": "2"}, {"2": "Staging"}, {"2": {PENDING + "staging": "{"}}),
        [("clear", "2", "staging")],
    ),
    "expired lock tickets are deleted, live ones only reported": (
        state({}, {}, tickets=(Ticket(3, "a", 999.0), Ticket(4, "b", 2000.0))),
        [("ticket", "3"), ()],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_a_rerun_repairs(case: str) -> None:
    given, expected = CASES[case]
    assert actions(given) == expected


def test_every_finding_says_what_is_wrong_in_words() -> None:
    given, _ = CASES["killed after the alias: stage, archive, tags, history, then clear"]
    messages = [f.message for f in registry.inspect(given)]
    assert messages[0] == "version 2 holds 'staging' but its stage is None: move it to Staging"
    assert "archive it" in messages[1]
    assert messages[-1].endswith("its move is still pending: finish it")


def test_the_pending_record_is_cleared_last() -> None:
    """Only once stage, archive, tags and history all agree (the state machine's last step)."""
    for given, expected in CASES.values():
        kinds = [a[0] for a in expected if a and a[0] != "ticket"]
        if "clear" in kinds:
            assert kinds[kinds.index("clear") :] == ["clear"] * kinds.count("clear"), given


def test_fault_points_are_unique_and_named_by_step() -> None:
    assert len(set(FAULT_POINTS)) == len(FAULT_POINTS)
    assert all(p.split(".")[0] in {"lock", "move", "finish"} for p in FAULT_POINTS)
    # every repair kind has its kill point
    assert set(registry.FAULT_OF.values()) - {"finish.after_drop"} <= set(FAULT_POINTS)


def test_a_model_without_the_marker_is_never_the_lock() -> None:
    from mlgate.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        registry.check_marker("mlgate-lock.m", "m", {"owner": "data team"})
    assert "rename the registered model 'mlgate-lock.m'" in str(info.value)
    registry.check_marker("mlgate-lock.m", "m", {registry.MARKER: registry.MARKER_VALUE})


def test_tickets_are_read_lowest_first_and_unreadable_leases_are_over() -> None:
    class V:
        def __init__(self, version, tags):
            self.version, self.tags = version, tags

    tickets = registry.tickets_of(
        [V("10", {registry.HOLDER: "b", registry.EXPIRES: "5"}), V("9", {registry.EXPIRES: "x"})]
    )
    assert tickets == [Ticket(9, "unknown", 0.0), Ticket(10, "b", 5.0)]
    assert not tickets[0].live(0.0) and tickets[1].live(4.9) and not tickets[1].live(5.0)


def test_doctor_names_each_version_moved_to_production_whose_image_record_is_gone() -> None:
    """v1 and v3 were in Production (v3 holds it) and lost `mlgate.image.digest`; v2 was too
    and kept it; v4 never was. Two findings, each saying which rollback is refused, with no
    repair (only a deploy writes a verified image)."""
    from mlgate.registry import doctor

    was = {"mlgate.production.since": "2026-01-01T00:00:00+00:00"}
    state = registry.ModelState(
        "m",
        {"production": "3"},
        {},
        {
            "1": registry.VersionState("1", "Archived", was),
            "2": registry.VersionState("2", "Archived", was | {"mlgate.image.digest": "sha256:x"}),
            "3": registry.VersionState("3", "Production", was | {"mlgate.image.tag": "v3"}),
            "4": registry.VersionState("4", "None", {}),
        },
    )
    found = doctor.unproven_images(state)
    assert [(f.kind, f.action) for f in found] == [("image", ()), ("image", ())]
    assert found[0].message == (
        "m version 1 was in Production but its image record (mlgate.image.digest) is gone: a "
        "rollback to it is refused"
    )
    assert found[1].message.startswith("m version 3 holds 'production' but its image record")
