"""The prediction log: batched off the request path, read back whole, and never a failure of the
request when its sink fails (rows wait within a bound, the rest are dropped and counted)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlgate.serving.app import App
from mlgate.serving.predlog import DirectorySink, PredictionLog, _iso_many, read_log
from tests.unit.test_serve import FEATURES, ROWS, call, expected, make_bundle


class Flaky(DirectorySink):
    """A directory sink that fails while `down` is set."""

    down = False

    def write(self, key: str, body: bytes) -> None:
        if self.down:
            raise OSError("sink unavailable")
        super().write(key, body)


def new_log(sink, **kw) -> PredictionLog:
    return PredictionLog(sink, "toy", "3", FEATURES, **kw)


def test_rows_are_written_in_batches_and_read_back(tmp_path: Path) -> None:
    log = new_log(DirectorySink(tmp_path), batch_rows=3)
    for i in range(4):
        log.record(np.full((2, 3), float(i)), np.array([0.1, 0.9]))
    assert log.flush() and log.stats.rows_written == 8 and log.stats.pending_rows == 0
    [key] = DirectorySink(tmp_path).keys("toy/")
    assert key.startswith(f"toy/dt={datetime.now(UTC):%Y-%m-%d}/") and key.endswith(".jsonl.gz")
    entries = list(read_log(DirectorySink(tmp_path), "toy", since=datetime.now(UTC) - timedelta(1)))
    assert len(entries) == 4
    assert entries[3]["data"] == [[3.0] * 3] * 2 and entries[3]["probability"] == [0.1, 0.9]
    assert entries[0]["columns"] == FEATURES and entries[0]["version"] == "3"
    assert not list(tmp_path.rglob(".*partial")), "no half-written file is left"


def test_a_batch_is_one_line_in_columns_and_earlier_files_still_read(tmp_path: Path) -> None:
    import gzip

    import orjson

    log = new_log(DirectorySink(tmp_path))
    log.record(np.ones((2, 3)), np.array([0.1, 0.2]))
    log.record(np.zeros((1, 3)), np.array([0.3]))
    assert log.flush()
    [key] = DirectorySink(tmp_path).keys("toy/")
    [line] = gzip.decompress(DirectorySink(tmp_path).read(key)).splitlines()
    block = orjson.loads(line)
    assert block["columns"] == FEATURES and block["rows"] == [2, 1] and len(block["ts"]) == 2
    assert block["data"] == [[1.0] * 3, [1.0] * 3, [0.0] * 3]
    # A file from before (one line per request) reads back the same way.
    old = {"ts": block["ts"][0], "model": "toy", "version": "2", "columns": FEATURES}
    old |= {"data": [[5.0] * 3], "probability": [0.5]}
    DirectorySink(tmp_path).write(
        key.replace(".jsonl", "-old.jsonl"),
        gzip.compress(orjson.dumps(old, option=orjson.OPT_APPEND_NEWLINE)),
    )
    entries = list(read_log(DirectorySink(tmp_path), "toy", since=datetime.now(UTC) - timedelta(1)))
    assert sorted(e["version"] for e in entries) == ["2", "3", "3"]
    assert [e["data"] for e in entries if e["version"] == "3"] == [[[1.0] * 3] * 2, [[0.0] * 3]]


def test_column_ordered_matrices_are_logged(tmp_path: Path) -> None:
    log = new_log(DirectorySink(tmp_path))
    log.record(np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.array([0.1, 0.2]))
    assert log.flush(), log.stats.last_error
    [entry] = read_log(DirectorySink(tmp_path), "toy", since=datetime.now(UTC) - timedelta(1))
    assert entry["data"] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_missing_values_are_logged_as_null(tmp_path: Path) -> None:
    log = new_log(DirectorySink(tmp_path))
    log.record(np.array([[np.nan, 1.0, 2.0]]), np.array([0.5]))
    assert log.flush()
    [entry] = read_log(DirectorySink(tmp_path), "toy", since=datetime.now(UTC) - timedelta(1))
    assert entry["data"] == [[None, 1.0, 2.0]]


def test_old_rows_are_outside_the_window(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    log = new_log(DirectorySink(tmp_path), clock=lambda: (now - timedelta(days=3)).timestamp())
    log.record(np.zeros((1, 3)), np.array([0.5]))
    assert log.flush()
    assert not list(read_log(DirectorySink(tmp_path), "toy", since=now - timedelta(days=1)))
    assert len(list(read_log(DirectorySink(tmp_path), "toy", since=now - timedelta(days=4)))) == 1


def test_a_failing_sink_keeps_rows_within_the_bound_then_recovers(tmp_path: Path) -> None:
    sink = Flaky(tmp_path)
    sink.down = True
    log = new_log(sink, max_pending_rows=10)
    for _ in range(4):
        log.record(np.zeros((3, 3)), np.zeros(3))
    assert not log.flush()
    assert log.stats.write_errors == 1 and "sink unavailable" in log.stats.last_error
    # 12 rows offered, 10 held: the oldest request (3 rows) was dropped, and counted.
    assert log.stats.pending_rows == 9 and log.stats.rows_dropped == 3
    sink.down = False
    assert log.flush()
    assert log.stats.rows_written == 9 and log.stats.pending_rows == 0


def test_the_writer_thread_flushes_on_a_full_batch_and_at_close(tmp_path: Path) -> None:
    log = new_log(DirectorySink(tmp_path), batch_rows=2, flush_seconds=60).start()
    log.record(np.zeros((2, 3)), np.zeros(2))  # a full batch wakes the writer
    for _ in range(100):
        if log.stats.rows_written:
            break
        time.sleep(0.02)
    assert log.stats.rows_written == 2
    log.record(np.zeros((1, 3)), np.zeros(1))
    log.close()
    assert log.stats.rows_written == 3 and log.stats.pending_rows == 0


def test_the_server_answers_while_its_sink_fails_and_says_so_at_metrics(tmp_path: Path) -> None:
    from mlgate.serving.bundle import load_bundle

    sink = Flaky(tmp_path / "log")
    sink.down = True
    bundle = load_bundle(make_bundle(tmp_path / "bundle"))
    app = App(bundle, log=PredictionLog(sink, bundle.name, bundle.version, bundle.features))
    for _ in range(5):
        status, body = call(app, "POST", "/invocations", {"instances": ROWS})
        assert status == 200 and body["predictions"] == expected(app)
    assert not app.log.flush()
    status, text = call(app, "GET", "/metrics")
    assert "mlgate_prediction_log_write_errors_total 1.0" in text
    assert "mlgate_prediction_log_pending_rows 10.0" in text
    sink.down = False
    assert app.log.flush()
    [entry, *_] = read_log(sink, "toy", since=datetime.now(UTC) - timedelta(1))
    assert entry["data"] == ROWS and entry["probability"] == expected(app)
    assert "mlgate_prediction_log_rows_written_total 10.0" in call(app, "GET", "/metrics")[1]


@settings(max_examples=50)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=4e9),  # to 2096
            # a second's edges: rounding to the microsecond carries into the next second
            st.integers(0, 4_000_000_000).map(lambda s: s + 0.9999995),
            st.integers(0, 4_000_000_000).map(lambda s: s + 0.0000005),
            st.integers(0, 4_000_000_000).map(float),
        ),
        max_size=20,
    )
)
def test_a_batchs_timestamps_are_the_strings_datetime_makes(stamps: list[float]) -> None:
    """The log's timestamps, made once per second for a batch, equal
    `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` of each request."""
    want = [datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") for ts in stamps]
    assert _iso_many(stamps) == want
