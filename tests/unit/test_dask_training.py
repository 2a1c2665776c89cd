"""Which way a DVC version's shards train with train.engine: dask (`cluster.plan_training`,
docs/dask.md "Training: in memory or in external memory"), and the room external memory needs
on a worker's local disk (`cluster.no_room`)."""

from __future__ import annotations

import signal
import subprocess
import sys

from mlgate.errors import ClusterError
from mlgate.pipeline import cluster
from mlgate.pipeline.cluster import Footprint, plan_training

MB = 1_000_000


def _estimate(footprint: Footprint, workers: int) -> int:
    """The rule written out by hand for one case: the busiest worker's share."""
    share = -(-len(footprint.held) // workers)
    busiest = sum(sorted(footprint.held, reverse=True)[:share])
    rows = -(-footprint.rows // workers)
    return int(
        cluster.SAFETY
        * (
            busiest
            + cluster.PARTITION_COPIES * footprint.largest
            + rows * (footprint.features * cluster.BIN_BYTES + cluster.ROW_STATE)
        )
    )


FOOT = Footprint(rows=100_000, features=20, held=(9 * MB, 1 * MB, 5 * MB), largest=12 * MB)


def test_the_estimate_is_the_busiest_workers_share():
    plan = plan_training("auto", FOOT, [(600 * MB, 0), (600 * MB, 0)])
    # two workers, three partitions: the busiest holds the two largest (9 + 5 MB)
    assert plan.estimate == _estimate(FOOT, 2) == int(2.0 * (14 * MB + 36 * MB + 50_000 * 84))
    assert plan.room == int(0.7 * 600 * MB)


def test_in_memory_up_to_the_room_of_the_fullest_worker_and_external_beyond():
    need = _estimate(FOOT, 2)
    used = 100 * MB
    limit = int((need + used) / cluster.MEMORY_SHARE) + 2  # room just >= need
    assert int(cluster.MEMORY_SHARE * limit) - used >= need
    at = plan_training("auto", FOOT, [(limit, used), (limit, 0)])
    assert (at.training, at.room, at.forced) == ("memory", int(0.7 * limit) - used, False)
    # one byte more of process memory on one worker: no longer room enough there
    over = used + (int(cluster.MEMORY_SHARE * limit) - used - need) + 1
    beyond = plan_training("auto", FOOT, [(limit, 0), (limit, over)])
    assert beyond.room == need - 1 and beyond.training == "external"


def test_workers_without_a_limit_set_no_bound():
    assert plan_training("auto", FOOT, [(None, 0), (0, 0)]).training == "memory"
    assert plan_training("auto", FOOT, [(None, 0), (0, 0)]).room is None
    # one limited worker bounds it
    small = plan_training("auto", FOOT, [(None, 0), (10 * MB, 0)])
    assert (small.training, small.room) == ("external", 7 * MB)


def test_the_setting_forces_either_path_and_the_numbers_are_still_given():
    tight = [(10 * MB, 0)]
    forced = plan_training("memory", FOOT, tight)
    assert (forced.training, forced.forced, forced.room) == ("memory", True, 7 * MB)
    assert plan_training("external", FOOT, [(None, 0)]).training == "external"
    tags = forced.tags()
    assert tags == {
        "mlgate.dask.training": "memory",
        "mlgate.dask.training_rule": "forced",
        "mlgate.dask.training_estimate_bytes": str(forced.estimate),
        "mlgate.dask.training_room_bytes": str(7 * MB),
    }
    assert "in memory (dask.training)" in forced.said()
    assert plan_training("auto", FOOT, [(None, 0)]).tags()["mlgate.dask.training_room_bytes"] == (
        "unlimited"
    )


def test_a_large_version_on_the_tests_600_mb_workers_trains_in_external_memory():
    """The 2 GB test's version (200 partitions of about 10 MB, 100 features), by its figures."""
    big = Footprint(rows=1_875_000, features=100, held=(7_600_000,) * 200, largest=10_100_000)
    plan = plan_training("auto", big, [(600 * MB, 270 * MB), (600 * MB, 270 * MB)])
    assert plan.training == "external" and plan.estimate > 10 * plan.room  # type: ignore[operator]
    breast_cancer = Footprint(rows=426, features=30, held=(105_000,), largest=140_000)
    assert plan_training("auto", breast_cancer, [(600 * MB, 400 * MB)] * 2).training == "memory"


def test_the_room_for_xgboosts_pages_is_checked_against_the_free_disk():
    needed = cluster.pages_room(1_000_000, 10, None)
    assert needed == int(cluster.PAGE_BYTES * 10_000_000)
    assert cluster.pages_room(1_000_000, 10, 1024) == 2 * needed  # two bytes a bin index
    assert cluster.no_room("/tmp/w", needed, needed) is None
    refused = cluster.no_room("/tmp/w", needed, needed - 1)
    assert isinstance(refused, ClusterError) and refused.exit_code == 14
    assert "/tmp/w" in str(refused) and "15.0 MB" in str(refused)
    assert refused.fix is not None and "--local-directory" in refused.fix


WRITE_FAILS = """
import resource, sys
import numpy as np
import xgboost as xgb

resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # Python ignores SIGXFSZ: EFBIG


class Batches(xgb.DataIter):
    def __init__(self):
        self.n = 0
        super().__init__(cache_prefix=sys.argv[1] + "/train", release_data=True)

    def reset(self):
        self.n = 0

    def next(self, given):
        if self.n == 3:
            return False
        rng = np.random.default_rng(self.n)
        self.n += 1
        given(data=rng.normal(size=(2000, 10)), label=rng.integers(0, 2, 2000).astype("f4"))
        return True


xgb.ExtMemQuantileDMatrix(Batches(), max_bin=256)
print("no error")
"""


def test_a_failed_page_write_aborts_the_process_which_is_why_the_room_is_checked_first(tmp_path):
    """XGBoost's real behaviour when its page write fails (here: a file-size limit, EFBIG; a
    full disk, ENOSPC, fails the same write): it writes pages from a thread of its own, and
    the error ends the process (std::terminate, SIGABRT) before Python can catch anything. On
    a worker that is a lost worker; so `_train_on_worker` checks the room before the pages."""
    done = subprocess.run(
        [sys.executable, "-c", WRITE_FAILS, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGABRT, done.stdout + done.stderr[-2000:]
    assert "FileStream.Write incomplete" in done.stderr
    assert "no error" not in done.stdout


def test_a_worker_lost_while_training_may_have_filled_its_disk():
    error = cluster._worker_lost({"tcp://w:1"}, "training")
    assert "tcp://w:1" in str(error) and error.exit_code == 14
    assert error.fix is not None and "FileStream.Write incomplete" in error.fix
    assert "FileStream" not in (cluster._worker_lost({"tcp://w:1"}, "scoring").fix or "")
