"""Named fault points of a registry move (tests set `tracking.fault_point` to one of them).

At the named point, right after the registry call it names, the process kills itself with
SIGKILL, as a job killed by its runner dies: no `finally`, no `except`, no lock released. The
kill tests enumerate these lists, so every point is proven to converge on a re-run.
"""

from __future__ import annotations

FAULT_POINTS: tuple[str, ...] = (
    "lock.after_ticket",  # the lock's ticket taken, nothing moved
    "move.after_pending",  # the pending record written, the alias not moved
    "move.after_alias",  # the alias moved (the commit point), nothing after it
    "finish.after_stage",  # the new holder's stage set, the previous one not archived
    "finish.after_archive",  # the previous holder archived
    "finish.after_tag",  # the first tag of the move written on the version
    "finish.after_previous_tag",  # the first tag written on the version it replaced
    "finish.after_history",  # the history event written, the pending record left
    "finish.after_clear",  # the pending record removed, the lock not released
)

# The copy of the approved version into the production model (model.production_name), before
# its move: reached only by deploy and rollback with a production model of its own, so they
# are listed apart (promote's kill test enumerates FAULT_POINTS alone).
COPY_FAULT_POINTS: tuple[str, ...] = (
    "copy.after_copy",  # copy_model_version done, the inherited tags not yet dropped
    "copy.after_strip",  # the first inherited tag dropped
    "copy.after_tag",  # the copy marked (mlgate.copy.*), nothing moved
)

ALL_FAULT_POINTS: tuple[str, ...] = FAULT_POINTS + COPY_FAULT_POINTS
