"""Named fault points (tests set `tracking.fault_point`, MLGATE_TRACKING_FAULT_POINT).

Registry moves (FAULT_POINTS): at the named point, right after the registry call it names, the
process kills itself with SIGKILL, as a job killed by its runner dies: no `finally`, no
`except`, no lock released. The kill tests enumerate this list, so every point is proven to
converge on a re-run.

The copy into the production model (COPY_FAULT_POINTS): the same, reached only by
deploy and rollback with `model.production_name` set.

Training (TRAIN_POINTS): points inside `mlgate train`'s run, reached with `reach`.

A fault point setting is one of:

* `POINT`: SIGKILL this process at POINT;
* `stop:POINT`: SIGSTOP it there (until SIGCONT), to take a service away mid-way;
* `pause:POINT:PATH`: wait at POINT, alive (its other threads, e.g. the run lease's heartbeat,
  keep running), until the file PATH exists. A test so holds a job in a known state for as
  long as it needs, whatever the speed of the machine, then releases it by creating PATH.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

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
TRAIN_POINTS: tuple[str, ...] = (
    "train.in_run",  # the run open and its lease's heartbeat started, nothing trained yet
    "train.after_register",  # its version registered (READY, tagged), the run not yet ended
)
PAUSE_POLL = 0.05  # seconds between looks for the release file


def parse(setting: str | None) -> tuple[str, str, str | None] | None:
    """(action, point, release file) of a fault point setting, or None when it is not one of
    the forms above (the caller refuses it). The action is kill, stop or pause."""
    if setting is None:
        return None
    action, point, path = "kill", setting, None
    if setting.startswith("stop:"):
        action, point = "stop", setting.removeprefix("stop:")
    elif setting.startswith("pause:"):
        point, _, path = setting.removeprefix("pause:").partition(":")
        action = "pause"
        if not path:
            return None
    if point not in ALL_FAULT_POINTS + TRAIN_POINTS:
        return None
    return action, point, path


def reach(point: str, setting: str | None) -> None:
    """Called by the product at `point`: nothing, unless `setting` names this point."""
    parsed = parse(setting)
    if parsed is None or parsed[1] != point:
        return
    action, _, path = parsed
    if action == "kill":
        print(f"fault injection: SIGKILL at {point}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        print(f"fault injection: SIGSTOP at {point}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        assert path is not None
        said = f"fault injection: paused at {point} until {path} exists"
        print(said, file=sys.stderr, flush=True)
        while not Path(path).exists():
            time.sleep(PAUSE_POLL)
        print(f"fault injection: released at {point}", file=sys.stderr, flush=True)
