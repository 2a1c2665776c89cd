"""The server's Prometheus metrics: requests, errors and latency by route, rows scored, the model
served, and the prediction log's counters; summed over every worker in prometheus-client's
multiprocess mode (`mlgate serve` with 2+ workers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlgate.serving.bundle import Bundle
from mlgate.serving.predlog import Stats

if TYPE_CHECKING:  # prometheus_client is imported by the worker, after its environment is set
    from prometheus_client.metrics_core import Metric


class Metrics:
    """Prometheus counters and a latency histogram per route, children cached up front.

    With `multiprocess_dir` (prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR
    set before the worker imported prometheus_client; `mlgate serve` does it for 2+ workers),
    every worker writes its values to files there and /metrics, in whichever worker answers,
    sums them all. The prediction log's counters, kept in plain ints by its writer thread,
    are then copied into multiprocess metrics after each write and at each scrape."""

    ROUTES = ("invocations", "v2_infer", "health", "metadata", "metrics", "other")

    def __init__(
        self, bundle: Bundle, log_stats: Stats | None = None, multiprocess_dir: str | None = None
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlgate_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        latency = Histogram(
            "mlgate_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.latency = {route: latency.labels(route) for route in self.ROUTES}
        self.rows = Counter("mlgate_prediction_rows", "Rows scored", registry=self.registry)
        self.errors = Counter(
            "mlgate_request_errors",
            "Requests answered 4xx or 5xx",
            ["route", "status"],
            registry=self.registry,
        )
        info = Gauge(
            "mlgate_model_info",
            "The model this server serves",
            ["name", "version"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        info.labels(bundle.name, bundle.version).set(1)
        self._counted: dict[tuple[str, int], Any] = {}
        self.log_stats = log_stats
        self._log_synced = {"rows_written": 0, "rows_dropped": 0, "write_errors": 0}
        self._log_lock = threading.Lock()
        if log_stats is not None and multiprocess_dir is None:
            self.registry.register(_LogCollector(log_stats))
        elif log_stats is not None:
            self._log_counters = {
                name: Counter(f"mlgate_prediction_log_{name}", what, registry=self.registry)
                for name, what in LOG_COUNTERS
            }
            self._log_pending = Gauge(
                "mlgate_prediction_log_pending_rows",
                "Rows waiting to be written",
                registry=self.registry,
                multiprocess_mode="livesum",
            )

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.requests.labels(route, str(status))
        child.inc()
        self.latency[route].observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def sync_log(self) -> None:
        """Multiprocess mode: add what the prediction log counted since the last sync."""
        if self.log_stats is None or self.multiprocess_dir is None:
            return
        with self._log_lock:
            for name, counter in self._log_counters.items():
                value = getattr(self.log_stats, name)
                if value > self._log_synced[name]:
                    counter.inc(value - self._log_synced[name])
                    self._log_synced[name] = value
            self._log_pending.set(self.log_stats.pending_rows)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.sync_log()
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(everyone)


LOG_COUNTERS = (
    ("rows_written", "Rows written to the prediction log"),
    ("rows_dropped", "Rows dropped while the sink failed"),
    ("write_errors", "Failed writes to the prediction log sink"),
)


class _LogCollector:
    """The prediction log's counters, read at scrape time."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        for name, what in LOG_COUNTERS:
            value = getattr(s, name)
            yield CounterMetricFamily(f"mlgate_prediction_log_{name}", what, value=value)
        yield GaugeMetricFamily(
            "mlgate_prediction_log_pending_rows", "Rows waiting to be written", value=s.pending_rows
        )
