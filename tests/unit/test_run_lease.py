"""When a training run counts as abandoned (issue 16, item 3): the rule, as a table. The
processes that renew, die and re-run are in tests/integration/test_faults.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlgate.registry.tracking import LEGACY_RUN_AGE, RUN_LEASE, abandoned_because

NOW = 1_800_000_000.0


def run(status: str = "RUNNING", lease: str | None = None, started: float = NOW - 10):
    tags = {} if lease is None else {RUN_LEASE: lease}
    return SimpleNamespace(
        info=SimpleNamespace(status=status, start_time=int(started * 1000)),
        data=SimpleNamespace(tags=tags),
    )


CASES = [
    ("live lease", run(lease=str(NOW + 30)), False),
    ("lease ends this instant", run(lease=str(NOW)), False),
    ("expired lease", run(lease=str(NOW - 0.001)), True),
    ("expired long ago", run(lease=str(NOW - 86400)), True),
    ("finished, lease expired", run("FINISHED", lease=str(NOW - 100)), False),
    ("failed, lease expired", run("FAILED", lease=str(NOW - 100)), False),
    ("no lease, young", run(), False),
    ("no lease, just under the age", run(started=NOW - LEGACY_RUN_AGE + 60), False),
    ("no lease, old", run(started=NOW - LEGACY_RUN_AGE - 60), True),
    ("garbled lease, young", run(lease="soon"), False),
    ("garbled lease, old", run(lease="soon", started=NOW - LEGACY_RUN_AGE - 60), True),
    ("infinite lease, young", run(lease="inf"), False),
    ("nan lease, young", run(lease="nan"), False),
]


@pytest.mark.parametrize(("run", "dead"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_only_a_provably_dead_run_counts_as_abandoned(run, dead: bool) -> None:
    why = abandoned_because(run, NOW)
    assert (why is not None) == dead
    if dead:
        assert "lease expired" in why or "no readable lease" in why
