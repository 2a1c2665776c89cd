"""Stage: serve a model bundle over HTTP, fast, with strict input checks.

A bare ASGI application on uvicorn (httptools, uvloop): no web framework between the socket and
the trees, which the bundle carries compiled to C (mlgate.serving.trees: microseconds a row, where
`Booster.inplace_predict` costs ~0.3 ms a call), because at single-row traffic the model call,
then the framework, is the cost. It speaks:

- MLflow's scoring protocol: `POST /invocations` with `dataframe_split`, `dataframe_records`,
  `instances` or `inputs` JSON, or CSV with a header; `GET /ping`, `/health`, `/version`.
  Answers `{"predictions": [p, ...]}`, the probability of the positive class (as `mlflow models
  serve` answers for this model), plus `"labels"` at the model's threshold when asked
  (`?labels=true` or `"params": {"labels": true}`).
- The Open Inference Protocol v2 (KServe, Triton): `/v2/health/live`, `/v2/health/ready`,
  `/v2`, `/v2/models/{name}[/versions/{v}]`, `.../ready`, `.../config`, `POST .../infer`
  (JSON, or the binary tensor extension both ways: tritonclient's and KServe's defaults),
  `/v2/repository/index`. docs/serving-clients.md shows each standard client.
- Prometheus metrics at `/metrics`, summed over every worker (prometheus-client's
  multiprocess mode when `mlgate serve` runs 2+ workers).

Bodies of 64 KiB or more are parsed and scored in a scoring process each worker starts (JSON
parsing holds the GIL: on a thread it would still stall /ping); `serve.access_log` writes a line
per request.

With `monitor.log_sink` set, every answered prediction is also queued for the prediction log
(`mlgate.serving.predlog`): batched and written by a thread, off the request path; a failing sink never
fails a request.

Bad input is a 4xx JSON error that says what is wrong, never a 500: wrong or missing columns,
non-numbers, nulls (unless `serve.allow_missing`), ragged rows, malformed JSON, bodies over
`serve.max_body_bytes`, unsupported content types, unknown models; rows whose length differs
from the named columns and repeated or non-string names (never scored from shifted values);
heads over `serve.max_header_bytes` (431) and requests incomplete after
`serve.read_timeout_seconds` (408), both in mlgate.serving.protocol. The image needs only numpy,
uvicorn, orjson, prometheus-client, pyyaml and boto3 (the log's S3 sink): no MLflow, DVC,
pandera or xgboost at run time.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs

import numpy as np
import orjson

from mlgate.serving import fastjson
from mlgate.serving.bundle import Bundle, CategoryError, encode_json, load_bundle
from mlgate.serving.predlog import PredictionLog, Stats

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

OIP_NUMERIC = {
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
}
JSON_HEADERS = [(b"content-type", b"application/json")]
# OIP's binary tensor extension: raw little-endian values, row-major, after the JSON header.
BINARY_DTYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
HEADER_LENGTH = b"inference-header-content-length"
# Bodies at least this big are parsed and scored off the event loop (in the scoring process,
# App._offload), so that /ping and small requests keep answering meanwhile (parsing a 10 MB
# body takes from tens to hundreds of milliseconds).
OFFLOAD_BYTES = 64 * 1024


class BadRequest(Exception):
    """A client error: answered with `status` and a message naming the fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_rows: int = 100_000
    allow_missing: bool = False


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
        MultiProcessCollector(everyone, path=self.multiprocess_dir)
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

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        for name, what in LOG_COUNTERS:
            value = getattr(s, name)
            yield CounterMetricFamily(f"mlgate_prediction_log_{name}", what, value=value)
        yield GaugeMetricFamily(
            "mlgate_prediction_log_pending_rows", "Rows waiting to be written", value=s.pending_rows
        )


class App:
    """The ASGI application for one bundle."""

    def __init__(
        self,
        bundle: Bundle,
        limits: Limits | None = None,
        log: PredictionLog | None = None,
        *,
        bundle_dir: Path | None = None,
        access_log: TextIO | None = None,
        metrics_dir: str | None = None,
        count: bool = True,
    ) -> None:
        """`bundle_dir`: large bodies are parsed and scored in a process of their own that
        loads it (without it: on a thread, which still holds the GIL while parsing JSON).
        `access_log`: a line per request written there. `metrics_dir`: prometheus-client's
        multiprocess directory, so that /metrics sums every worker. `count=False` is the
        scoring process: it counts nothing and hands its scored rows back."""
        self.bundle = bundle
        self.limits = limits or Limits()
        self.features = bundle.features
        self.index = {name: i for i, name in enumerate(self.features)}
        self.log = log
        self.metrics = Metrics(bundle, log.stats if log else None, metrics_dir) if count else None
        self.scored: list[tuple[np.ndarray, np.ndarray]] = []  # count=False: what was scored
        self.ready = True
        self.bundle_dir = bundle_dir
        self.access_log = access_log
        self._pid = os.getpid()
        self._executor: Any = None  # a thread or process pool, made for the first large body
        prefix = f"/v2/models/{bundle.name}"
        self.v2_model_paths = {prefix, f"{prefix}/versions/{bundle.version}"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        route = _route_name(scope["path"])
        try:
            status, body, headers = await self._dispatch(scope, receive)
        except BadRequest as exc:
            status, headers = exc.status, JSON_HEADERS
            body = orjson.dumps(self._error_body(scope["path"], str(exc), status))
        except Exception as exc:  # a bug, not the client's fault: say so, keep serving
            status, headers = 500, JSON_HEADERS
            body = orjson.dumps(
                {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - start
        self.metrics.observe(route, status, seconds)
        if self.access_log is not None:
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string") or b""
            target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
            self.access_log.write(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid={self._pid} {client[0]} "
                f'"{scope["method"]} {_printable(target[:512])}" {status} {len(body)} '
                f"{seconds * 1000:.2f}ms\n"
            )
            self.access_log.flush()

    @staticmethod
    def _error_body(path: str, message: str, status: int) -> dict[str, Any]:
        if path.startswith("/v2"):
            return {"error": message}  # the OIP v2 error shape
        code = {
            404: "RESOURCE_DOES_NOT_EXIST",
            405: "BAD_REQUEST",
            413: "BAD_REQUEST",
            415: "BAD_REQUEST",
        }.get(status, "BAD_REQUEST")
        return {"error_code": code, "message": message}

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.log is not None:
                    self.log.start()
                if self.bundle_dir is not None:  # start the scoring process now, not on the
                    try:  # first large request
                        await self._in_pool(_Warm(), ())
                    except Exception as exc:  # e.g. no /dev/shm for its queue: serve anyway
                        print(
                            f"mlgate serve: no scoring process ({type(exc).__name__}: {exc}); "
                            "large bodies are parsed on a thread, /ping may wait for them",
                            file=sys.stderr,
                            flush=True,
                        )
                        self._executor, self.bundle_dir = None, None
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                if self.log is not None:
                    self.log.close()  # in-flight requests are done: write what waits
                if self._executor is not None:
                    self._executor.shutdown(wait=True, cancel_futures=True)
                    self._executor = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive):
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        if path == "/invocations":
            self._method(method, "POST")
            body = await self._body(scope, receive)
            kind = self._content_type(scope, ("application/json", "text/csv"))
            query = parse_qs(scope.get("query_string", b"").decode())
            return 200, await self._offload(body, self.invocations, body, kind, query), JSON_HEADERS
        if path in {"/ping", "/health", "/v2/health/live", "/v2/health/ready"}:
            self._method(method, "GET", "HEAD")
            if path.endswith("ready") and not self.ready:
                raise BadRequest("shutting down", 503)
            # OIP's health answers (KServe's client reads "live" / "ready" from them)
            body = {"/v2/health/live": b'{"live":true}', "/v2/health/ready": b'{"ready":true}'}
            return 200, body.get(path, b""), JSON_HEADERS
        if path == "/version":
            self._method(method, "GET")
            return 200, orjson.dumps(self.bundle.describe()), JSON_HEADERS
        if path == "/metrics":
            self._method(method, "GET")
            return (
                200,
                self.metrics.render(),
                [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
            )
        if path == "/v2":
            self._method(method, "GET")
            server = {
                "name": "mlgate",
                "version": self.bundle.mlgate_version,
                "extensions": ["binary_tensor_data", "model_configuration", "model_repository"],
            }
            return 200, orjson.dumps(server), JSON_HEADERS
        if path == "/v2/repository/index":  # Triton's model repository extension
            self._method(method, "POST", "GET")
            index = [{"name": self.bundle.name, "version": self.bundle.version, "state": "READY"}]
            return 200, orjson.dumps(index), JSON_HEADERS
        if path.startswith("/v2/repository/"):
            raise BadRequest(
                "this server serves one model, fixed when it starts: loading and unloading "
                "models is not supported (deploy another image to serve another version)",
                405 if path.endswith(("/load", "/unload")) else 404,
            )
        if path.startswith("/v2/models/"):
            return await self._v2(method, path, scope, receive)
        raise BadRequest(
            f"no route {path}; see /invocations, /v2/models/{self.bundle.name}/infer", 404
        )

    async def _v2(self, method: str, path: str, scope: Scope, receive: Receive):
        model_path, _, action = path.rpartition("/")
        if action not in {"infer", "ready", "config"}:
            model_path, action = path, ""
        if model_path not in self.v2_model_paths:
            raise BadRequest(
                f"model '{path.removeprefix('/v2/models/').split('/')[0]}' (or that version) "
                f"is not served here; this server serves '{self.bundle.name}' version "
                f"{self.bundle.version}",
                404,
            )
        if action == "ready":
            self._method(method, "GET")
            ready = {"name": self.bundle.name, "ready": self.ready}
            return 200 if self.ready else 503, orjson.dumps(ready), JSON_HEADERS
        if action == "":
            self._method(method, "GET")
            return 200, orjson.dumps(self.bundle.v2_metadata()), JSON_HEADERS
        if action == "config":
            self._method(method, "GET")
            return 200, orjson.dumps(self.v2_config()), JSON_HEADERS
        self._method(method, "POST")
        body = await self._body(scope, receive)
        # tritonclient sends no Content-Type; its binary extension is application/octet-stream
        # (KServe's client) with the JSON header's length in Inference-Header-Content-Length.
        kind = self._content_type(scope, ("application/json", "application/octet-stream", ""))
        header_length = self._header_length(scope, len(body))
        if kind == "application/octet-stream" and header_length is None:
            raise BadRequest(
                "an application/octet-stream body needs the Inference-Header-Content-Length "
                "header (OIP binary tensor extension); send JSON as application/json",
                400,
            )
        return await self._offload(body, self.v2_infer, body, header_length)

    async def _offload(self, body: bytes, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, off the event loop when the body is large: parsing and scoring 10 MB
        takes long enough to starve every other connection (a /ping waited 2.6 s). JSON
        parsing holds the GIL, so a thread does not free the loop: a scoring process does."""
        if len(body) < OFFLOAD_BYTES:
            return fn(*args)
        if self.bundle_dir is None:  # an App made in-process (tests): a thread will do
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(2, thread_name_prefix="mlgate-score")
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        outcome, result, scored = await self._in_pool(fn.__name__, args, keep=self.log is not None)
        if outcome == "refused":
            raise BadRequest(result, scored)
        for rows, matrix, proba in scored:
            self._record(rows, matrix, proba)
        return result

    async def _in_pool(self, name: Any, args: tuple[Any, ...], keep: bool = False) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        for attempt in (1, 2):
            if self._executor is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._executor = ProcessPoolExecutor(
                    1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_scorer_start,
                    initargs=(str(self.bundle_dir), self.limits),
                )
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor, _scorer_call, name, args, keep
                )
            except BrokenProcessPool:  # killed (OOM? a kill?): a new process, one more try
                self._executor = None
                if attempt == 2:
                    raise BadRequest(
                        "the scoring process died twice on this request; retry it, or split "
                        "it if it is large",
                        503,
                    ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _header_length(scope: Scope, size: int) -> int | None:
        raw = dict(scope["headers"]).get(HEADER_LENGTH)
        if raw is None:
            return None
        if not raw.isdigit() or not 0 < int(raw) <= size:
            raise BadRequest(
                f"Inference-Header-Content-Length {_short(raw.decode('latin-1'))} is not a "
                f"length between 1 and the body's {size} bytes"
            )
        return int(raw)

    @staticmethod
    def _method(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise BadRequest(f"method {method} not allowed here; use {' or '.join(allowed)}", 405)

    def _content_type(self, scope: Scope, allowed: Sequence[str]) -> str:
        raw = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        kind = raw.split(";")[0].strip().lower()
        if kind not in allowed:
            raise BadRequest(
                f"content type '{kind or 'none'}' is not supported; send "
                + " or ".join(f"Content-Type: {a}" for a in allowed if a),
                415,
            )
        return kind

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(self._too_big(int(declared)), 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client went away", 400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BadRequest(self._too_big(size), 413)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_big(self, size: int) -> str:
        return (
            f"body of {size} bytes exceeds serve.max_body_bytes "
            f"({self.limits.max_body_bytes}); split the batch"
        )

    # -- MLflow scoring protocol --------------------------------------------------------------
    def invocations(self, body: bytes, kind: str, query: Mapping[str, list[str]]) -> bytes:
        labels = query.get("labels", ["false"])[-1].lower() in {"1", "true", "yes"}
        if kind == "text/csv":
            matrix = self.from_csv(body)
        else:  # big dataframe_split bodies: numbers to numpy
            payload = fastjson.dataframe_split(body, self.bundle) or _parse_json(body)
            if not isinstance(payload, dict):
                raise BadRequest(
                    "the JSON body must be an object with one of dataframe_split, "
                    "dataframe_records, instances, inputs"
                )
            params = payload.get("params") or {}
            if isinstance(params, dict) and params.get("labels") is True:
                labels = True
            matrix = self.from_mlflow(payload)
        proba = self.predict(matrix)
        out: dict[str, Any] = {"predictions": proba}
        if labels:
            out["labels"] = (proba >= self.bundle.threshold).astype(np.int64)
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

    def from_mlflow(self, payload: dict[str, Any]) -> np.ndarray:
        keys = [
            k
            for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
            if k in payload
        ]
        if len(keys) != 1:
            raise BadRequest(
                "the JSON body needs exactly one of dataframe_split, dataframe_records, "
                f"instances, inputs (found {', '.join(keys) or 'none'})"
            )
        value = payload[keys[0]]
        if keys[0] == "dataframe_split":
            if not isinstance(value, dict) or "data" not in value:
                raise BadRequest('dataframe_split must be {"columns": [...], "data": [[...]]}')
            columns = value.get("columns")
            if columns is None:
                return self.matrix(value["data"], "dataframe_split.data")
            return self.matrix(value["data"], "dataframe_split.data", columns=columns)
        if keys[0] == "dataframe_records":
            return self.from_records(value, "dataframe_records")
        if isinstance(value, dict):  # inputs: {column: [values]}
            return self.from_columns(value, keys[0])
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return self.from_records(value, keys[0])
        return self.matrix(value, keys[0])

    def from_records(self, records: Any, where: str) -> np.ndarray:
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BadRequest(f"{where} must be a list of objects, one per row")
        wanted = self.index
        rows = []
        for i, record in enumerate(records):
            if record.keys() != wanted.keys():
                self._columns_error(list(record), f"{where}[{i}]")
            rows.append([record[name] for name in self.features])
        return self.matrix(rows, where)

    def from_columns(self, columns: dict[str, Any], where: str) -> np.ndarray:
        self._check_columns(list(columns), where)
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise BadRequest(f"{where}: every column must be a list of the same length")
        return self.matrix([columns[name] for name in self.features], where, by_column=True)

    def from_csv(self, body: bytes) -> np.ndarray:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"CSV body is not UTF-8: {exc}") from exc
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader, None)
            if not header:
                raise BadRequest("CSV body is empty; send a header row and data rows")
            self._check_columns(header, "CSV header")
            order = [header.index(name) for name in self.features]
            rows = []
            for n, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise BadRequest(
                        f"CSV line {n} has {len(row)} fields, the header {len(header)}"
                    )
                try:
                    rows.append(
                        [
                            (row[i] or None)
                            if name in self.bundle.categories  # issue 19
                            else float(row[i])
                            if row[i] != ""
                            else math.nan
                            for name, i in zip(self.features, order, strict=True)
                        ]
                    )
                except ValueError as exc:
                    raise BadRequest(f"CSV line {n}: {exc}") from exc
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (128 KB)
            raise BadRequest(
                f"CSV line {reader.line_num}: {exc}; send one number per field"
            ) from None
        return self.matrix(rows, "CSV")

    # -- Open Inference Protocol v2 -----------------------------------------------------------
    def v2_infer(
        self, body: bytes, header_length: int | None = None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """An OIP v2 inference: JSON, or a JSON header of `header_length` bytes followed by
        binary tensors (OIP's binary tensor extension, tritonclient's and KServe's default)."""
        head = body if header_length is None else body[:header_length]
        payload = fastjson.oip(head, self.bundle) or _parse_json(head)  # big: numbers to numpy
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
            raise BadRequest('the body must be {"inputs": [{"name", "shape", "datatype", "data"}]}')
        tensors = payload["inputs"]
        if not tensors:
            raise BadRequest("inputs is empty; send one [rows, features] input or one per feature")
        binary = memoryview(body)[header_length:] if header_length is not None else None
        offset = 0
        values: list[Any] = []
        for t in tensors:
            if not isinstance(t, dict) or not {"name", "shape", "datatype"} <= t.keys():
                raise BadRequest("each input needs name, shape, datatype and data")
            if not isinstance(t["name"], str) or not isinstance(t["datatype"], str):
                raise BadRequest(
                    f"input name {_short(t['name'])} / datatype {_short(t['datatype'])}: "
                    "name and datatype must be strings"
                )
            if t["datatype"] not in OIP_NUMERIC and not (
                t["datatype"] == "BYTES" and self.bundle.categories  # category text (issue 19)
            ):
                raise BadRequest(
                    f"input '{t['name']}': datatype {t['datatype']} is not numeric; "
                    "use FP64, FP32 or an integer type"
                )
            shape = _shape(t)
            size = _binary_size(t)
            if size is None:
                if "data" not in t:
                    raise BadRequest(
                        f"input '{t['name']}' has neither data nor parameters.binary_data_size"
                    )
                values.append(_flat(t))
                continue
            if binary is None or offset + size > len(binary):
                raise BadRequest(
                    f"input '{t['name']}': binary_data_size {size} runs past the body's "
                    "binary part (Inference-Header-Content-Length names the JSON header's length)"
                )
            dtype = np.dtype(BINARY_DTYPES[t["datatype"]])
            if size != math.prod(shape) * dtype.itemsize:
                raise BadRequest(
                    f"input '{t['name']}': binary_data_size {size} is not shape {shape} of "
                    f"{t['datatype']} ({math.prod(shape) * dtype.itemsize} bytes)"
                )
            values.append(np.frombuffer(binary[offset : offset + size], dtype=dtype))
            offset += size
        if binary is not None and offset != len(binary):
            raise BadRequest(
                f"the body has {len(binary) - offset} bytes after the binary inputs; "
                "binary_data_size of each input must add up to the binary part"
            )
        if len(tensors) == 1:
            t = tensors[0]
            shape = _shape(t)
            if len(shape) != 2 or shape[1] != len(self.features):
                raise BadRequest(
                    f"input '{t['name']}' has shape {shape}; one input carries "
                    f"[rows, {len(self.features)}] (features in the order of /v2/models/"
                    f"{self.bundle.name}), or send one input per feature"
                )
            matrix = self.matrix(values[0], f"input '{t['name']}'", shape=shape)
        else:
            names = [t["name"] for t in tensors]
            self._check_columns(names, "inputs")  # a repeated name is refused, not overwritten
            by_name = dict(zip(names, zip(tensors, values, strict=True), strict=True))
            columns = []
            for name in self.features:
                tensor, data = by_name[name]
                shape = _shape(tensor)
                if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                    raise BadRequest(f"input '{name}' has shape {shape}; use [rows] or [rows, 1]")
                columns.append(data)
            if len({len(c) for c in columns}) != 1:
                raise BadRequest("every input must have the same number of rows")
            matrix = self.matrix(columns, "inputs", by_column=True)
        requested = self._outputs(payload.get("outputs"))
        params = payload.get("parameters")
        all_binary = isinstance(params, dict) and params.get("binary_data_output") is True
        proba = self.predict(matrix)
        outputs = []
        if not requested or "probability" in requested:
            outputs.append(("probability", "FP64", proba))
        if "label" in requested:
            outputs.append(("label", "INT64", (proba >= self.bundle.threshold).astype(np.int64)))
        described, blobs = [], []
        for name, datatype, array in outputs:
            tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(array)]}
            binary = requested.get(name)
            if binary if binary is not None else all_binary:
                raw = array.astype(BINARY_DTYPES[datatype], copy=False).tobytes()
                tensor["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                tensor["data"] = array
            described.append(tensor)
        out: dict[str, Any] = {
            "model_name": self.bundle.name,
            "model_version": self.bundle.version,
            "outputs": described,
        }
        if "id" in payload:
            out["id"] = payload["id"]
        header = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        if not blobs:
            return 200, header, JSON_HEADERS
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(len(header)).encode()),
        ]
        return 200, b"".join([header, *blobs]), headers

    def v2_config(self) -> dict[str, Any]:
        """The model's configuration as Triton's model configuration extension shapes it
        (`tritonclient.http.InferenceServerClient.get_model_config`)."""
        features = len(self.features)
        return {
            "name": self.bundle.name,
            "platform": "mlgate",
            "backend": self.bundle.trees.engine,
            "version_policy": {"specific": {"versions": [self.bundle.version]}},
            "max_batch_size": self.limits.max_rows,
            "input": [
                {"name": "input-0", "data_type": "TYPE_FP64", "dims": [features]},
                *({"name": f, "data_type": "TYPE_FP64", "dims": [1]} for f in self.features),
            ],
            "output": [
                {"name": "probability", "data_type": "TYPE_FP64", "dims": [1]},
                {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
            ],
            "parameters": {
                "threshold": {"string_value": repr(self.bundle.threshold)},
                "features": {"string_value": ",".join(self.features)},
            },
        }

    @staticmethod
    def _outputs(outputs: Any) -> dict[str, bool | None]:
        """The requested OIP outputs' names, each with its `binary_data` parameter (None when
        not given), checked before scoring (nothing half done)."""
        if outputs is None:
            return {}
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise BadRequest(
                'outputs must be a list of {"name": "probability"} or {"name": "label"}'
            )
        requested: dict[str, bool | None] = {}
        for o in outputs:
            params = o.get("parameters")
            binary = params.get("binary_data") if isinstance(params, dict) else None
            requested[o["name"]] = binary if isinstance(binary, bool) else None
        unknown = requested.keys() - {"probability", "label"}
        if unknown:
            raise BadRequest(
                f"unknown outputs {sorted(unknown)}; this model has probability, label"
            )
        return requested

    # -- shared -------------------------------------------------------------------------------
    def _check_columns(self, given: list[Any], where: str) -> None:
        if not all(isinstance(g, str) for g in given):
            bad = next(g for g in given if not isinstance(g, str))
            raise BadRequest(
                f"{where}: column names must be strings (found {type(bad).__name__} "
                f"{_short(bad)}); GET /version lists the {len(self.features)} inputs"
            )
        if len(given) != len(self.features) or set(given) != self.index.keys():
            self._columns_error(given, where)

    def _columns_error(self, given: list[Any], where: str) -> None:
        missing = [f for f in self.features if f not in set(given)]
        extra = [str(g) for g in given if g not in self.index]
        duplicated = sorted({str(g) for g in given if given.count(g) > 1})
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if extra:
            parts.append(f"unknown {_few(extra)}")
        if duplicated:
            parts.append(f"repeated {_few(duplicated)}")
        raise BadRequest(
            f"{where}: columns do not match the model's signature: "
            f"{'; '.join(parts)}. GET /version lists the {len(self.features)} inputs"
        )

    def matrix(
        self,
        data: Any,
        where: str,
        columns: list[Any] | None = None,
        by_column: bool = False,
        shape: list[int] | None = None,
    ) -> np.ndarray:
        """A 2-D float64 array from JSON rows (or columns), checked: numbers only, rectangular,
        finite."""
        if isinstance(data, np.ndarray):  # an OIP binary tensor, already numbers
            if not data.size:
                raise BadRequest(f"{where} has no values; send at least one row")
        elif not isinstance(data, list) or not data:
            raise BadRequest(f"{where} must be a non-empty list of rows")
        # Rows, not values or columns, count against serve.max_rows: checked first where the
        # row count is known without building the array, and again on the array itself.
        rows = shape[0] if shape else (None if by_column else len(data))
        if rows is not None:
            self._check_rows(rows, where)
        if columns is not None:  # names first: a bad name is the clearer message
            if not isinstance(columns, list):
                raise BadRequest(f"{where}: columns must be a list of names")
            self._check_columns(columns, f"{where.rsplit('.', 1)[0]}.columns")
        try:  # categorical features: their text to the bundle's codes (issue 19)
            data = encode_json(
                self.bundle,
                data,
                columns=columns,
                by_column=by_column,
                width=shape[1] if shape and len(shape) == 2 else None,
                allow_missing=self.limits.allow_missing,
            )
        except CategoryError as exc:
            raise BadRequest(f"{where}: {exc}") from None
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # ragged, deep
            raise BadRequest(
                f"{where}: rows have different lengths or are not lists of numbers ({exc})"
            ) from None
        if array.dtype.kind in "fiub":  # JSON true/false count as 1/0, as in numpy and pandas
            array = array.astype(np.float64, copy=False)
        elif array.dtype.kind == "O":
            array = self._objects(array, where)
        else:
            raise BadRequest(f"{where}: values must be numbers (found {_kind(array)})")
        if shape is not None:  # OIP v2 sends a flat tensor and its shape
            array = array.reshape(shape)
        if array.ndim != 2:
            raise BadRequest(
                f"{where}: expected rows of {len(self.features)} numbers, "
                f"got an array of shape {list(array.shape)}"
            )
        if by_column:
            array = np.ascontiguousarray(array.T)
        self._check_rows(array.shape[0], where)
        if columns is not None:
            # Every row carries exactly one value per named column, or the values would be
            # matched to the wrong names (an extra value would silently shift them).
            if array.shape[1] != len(columns):
                raise BadRequest(
                    f"{where}: rows have {array.shape[1]} values but columns names "
                    f"{len(columns)}; send one value per column in each row"
                )
            if columns != self.features:
                array = array[:, [columns.index(name) for name in self.features]]
        if array.shape[1] != len(self.features):
            raise BadRequest(
                f"{where}: rows have {array.shape[1]} values; the model takes "
                f"{len(self.features)} ({_few(self.features)})"
            )
        if not self.limits.allow_missing and not np.isfinite(array).all():
            row, col = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise BadRequest(
                f"{where}: row {row}, column '{self.features[col]}' is null, NaN or infinite; "
                "the model was trained without missing values (serve.allow_missing=true to "
                "let XGBoost treat them as missing)"
            )
        if np.isinf(array).any():
            raise BadRequest(f"{where}: infinite values are not valid inputs")
        return array

    def _check_rows(self, rows: int, where: str) -> None:
        if rows > self.limits.max_rows:
            raise BadRequest(
                f"{where} has {rows} rows; serve.max_rows is "
                f"{self.limits.max_rows}: split the batch",
                413,
            )

    def _objects(self, array: np.ndarray, where: str) -> np.ndarray:
        flat = array.ravel()
        for value in flat:
            if value is not None and not isinstance(value, (int, float, np.number)):
                raise BadRequest(
                    f"{where}: values must be numbers (found {type(value).__name__}"
                    f" {_short(value)})"
                )
        try:
            values = [math.nan if v is None else float(v) for v in flat]
        except OverflowError as exc:  # an integer beyond float64
            raise BadRequest(f"{where}: a value is too large for a float64 ({exc})") from None
        return np.array(values, dtype=np.float64).reshape(array.shape)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        proba = self.bundle.predict(matrix)
        if self.metrics is None:  # the scoring process: the server counts and logs these
            self.scored.append((matrix, proba))
        else:
            self._record(len(matrix), matrix, proba)
        return proba

    def _record(self, rows: int, matrix: np.ndarray | None, proba: np.ndarray | None) -> None:
        assert self.metrics is not None
        self.metrics.rows.inc(rows)
        if self.log is not None and matrix is not None and proba is not None:
            self.log.record(matrix, proba)


# -- the scoring process: large bodies are parsed and scored here, off the server's GIL ---------
_SCORER: App | None = None


class _Warm:
    """Asks the scoring process to do nothing: it has started once it answers."""


def _scorer_start(bundle_dir: str, limits: Limits) -> None:
    global _SCORER  # noqa: PLW0603 - one scorer per scoring process, set at its start
    _SCORER = App(load_bundle(Path(bundle_dir)), limits, count=False)


def _scorer_call(name: Any, args: tuple[Any, ...], keep: bool = False) -> tuple[str, Any, Any]:
    """("ok", result, [(rows, matrix, probabilities), ...]) or ("refused", message, status);
    the matrices only when `keep` (the prediction log wants them): they are megabytes."""
    assert _SCORER is not None
    if isinstance(name, _Warm):
        return "ok", None, []
    _SCORER.scored = []
    try:
        result = getattr(_SCORER, name)(*args)
    except BadRequest as exc:
        return "refused", str(exc), exc.status
    scored = [(len(m), m if keep else None, p if keep else None) for m, p in _SCORER.scored]
    return "ok", result, scored


def _route_name(path: str) -> str:
    """The metrics label of a path (a fixed set, so clients cannot grow the label space)."""
    if path == "/invocations":
        return "invocations"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2_infer"
    if path in {"/ping", "/health", "/v2/health/live", "/v2/health/ready"} or path.endswith(
        "/ready"
    ):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path in {"/version", "/v2"} or path.startswith("/v2/models/"):
        return "metadata"
    return "other"


def _parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("empty body; send JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input '{tensor['name']}': shape must be a list of sizes")
    return shape


def _binary_size(tensor: dict[str, Any]) -> int | None:
    """The input's `parameters.binary_data_size` (binary tensor extension), or None."""
    params = tensor.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BadRequest(f"input '{tensor['name']}': parameters must be an object")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(
            f"input '{tensor['name']}': binary_data_size must be a byte count, got {_short(size)}"
        )
    return size


def _flat(tensor: dict[str, Any]) -> list[Any]:
    data = tensor["data"]
    if isinstance(data, np.ndarray):  # fastjson: already numbers, flat
        flat: Any = data
    elif not isinstance(data, list):
        raise BadRequest(f"input '{tensor['name']}': data must be a list")
    else:
        flat = (
            data
            if not data or not isinstance(data[0], list)
            else np.asarray(data, dtype=object).ravel().tolist()
        )
    expected = math.prod(_shape(tensor))
    if len(flat) != expected:
        raise BadRequest(
            f"input '{tensor['name']}': {len(flat)} values for shape {tensor['shape']} ({expected})"
        )
    return flat


def _printable(text: str) -> str:
    """A request target for the access log: control characters and quotes escaped, so that
    a client cannot forge log lines."""
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _short(value: Any) -> str:
    """A value quoted for an error message, cut to 40 characters."""
    return repr(str(value)[:40])


def _few(names: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(f"'{x}'" for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _kind(array: np.ndarray) -> str:
    return {"U": "text", "S": "bytes", "b": "booleans"}.get(array.dtype.kind, str(array.dtype))


def create_app() -> App:
    """uvicorn factory: the bundle and limits from the settings (MLGATE_SERVE_* variables)."""
    from mlgate.settings import load_settings, process_env

    settings = load_settings(env=process_env(), params_file=None)
    s, m = settings.serve, settings.monitor
    bundle = load_bundle(settings.path(s.bundle))
    log = None
    if settings.log_sink:
        from mlgate.serving.predlog import open_sink

        log = PredictionLog(
            open_sink(settings.log_sink, m.log_endpoint_url),
            bundle.name,
            bundle.version,
            bundle.features,
            batch_rows=m.log_batch_rows,
            flush_seconds=m.log_flush_seconds,
            max_pending_rows=m.log_max_pending_rows,
        )
    app = App(
        bundle,
        Limits(s.max_body_bytes, s.max_rows, s.allow_missing),
        log,
        bundle_dir=settings.path(s.bundle),
        access_log=sys.stderr if s.access_log else None,
        # set by `mlgate serve` for 2+ workers: /metrics sums them all
        metrics_dir=process_env().get("PROMETHEUS_MULTIPROC_DIR") or None,
    )
    if log is not None and app.metrics is not None:
        log.on_flush = app.metrics.sync_log
    return app


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """mlgate serve: serve a model bundle (MLflow scoring protocol, OIP v2, /metrics)."""
    from mlgate import cli

    parser = cli.stage_parser("serve", main.__doc__)
    parser.add_argument("--bundle", metavar="DIR", help="model bundle (serve.bundle)")
    parser.add_argument("--host", help="address to bind (serve.host)")
    parser.add_argument("--port", type=int, help="port (serve.port)")
    parser.add_argument("--workers", type=int, help="worker processes (serve.workers)")
    parser.add_argument(
        "--access-log",
        action="store_const",
        const=True,
        help="a line per request on stderr (serve.access_log)",
    )
    args = parser.parse_args(argv)

    def action() -> int:
        overrides = {
            "bundle": args.bundle,
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "access_log": "true" if args.access_log else None,
        }
        for key, value in overrides.items():
            if value is not None:
                args.overrides.append(f"serve.{key}={value}")
        settings = cli.settings_from(args, env)
        s = settings.serve
        bundle_dir = settings.path(s.bundle).resolve()
        bundle = load_bundle(bundle_dir)  # fail here, with the fix, not inside a worker
        # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the
        # previous handler: make that a no-op, so a stopped server exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        # The workers read their settings from the environment only: pass on the serve and
        # monitor sections whole, with the paths resolved here.
        from dataclasses import replace

        from mlgate.settings import section_env, set_process_env, unset_process_env

        set_process_env(
            section_env("serve", replace(s, bundle=bundle_dir))
            | section_env("monitor", replace(settings.monitor, log_sink=settings.log_sink))
        )
        # 2+ workers: prometheus-client's multiprocess mode, in a directory of this run's
        # own (values left by an earlier run would be summed in), removed when it stops.
        metrics_dir = _metrics_dir() if s.workers > 1 else None
        if metrics_dir:
            set_process_env({"PROMETHEUS_MULTIPROC_DIR": metrics_dir})
        else:  # prometheus-client checks the name's presence, not its value
            unset_process_env("PROMETHEUS_MULTIPROC_DIR")
        print(startup_line(bundle, s.host, s.port, s.workers), flush=True)
        try:
            _run_uvicorn(s)
        finally:
            if metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return 0

    return cli.run(action)


def _metrics_dir() -> str:
    """A fresh directory for prometheus-client's multiprocess files: in /dev/shm (memory, and
    writable in a read-only container) when it can, else the temporary directory."""
    from mlgate.errors import ConfigError

    # mkdtemp: a fresh private directory (0700, unpredictable name) even in a shared parent
    for parent in ("/dev/shm", None):  # noqa: S108
        try:
            return tempfile.mkdtemp(prefix="mlgate-metrics-", dir=parent)
        except OSError:
            continue
    raise ConfigError(
        "serve.workers above 1 needs a writable directory for the workers' shared metrics; "
        "neither /dev/shm nor the temporary directory is writable",
        fix="mount a tmpfs at /dev/shm or /tmp (docker run --tmpfs /tmp), or serve.workers=1",
    )


def _run_uvicorn(s: Any) -> None:
    import uvicorn

    from mlgate.serving.protocol import LimitedHttpToolsProtocol

    uvicorn.run(
        "mlgate.serving.app:create_app",
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        # httptools, plus the head size cap and read timeout it lacks (serve_protocol)
        http=functools.partial(
            LimitedHttpToolsProtocol,
            max_header_bytes=s.max_header_bytes,
            read_timeout=s.read_timeout_seconds,
        ),
        loop="uvloop" if _has("uvloop") else "asyncio",
        access_log=False,  # mlgate's own (serve.access_log): one line, with the duration
        log_level="warning",
        timeout_graceful_shutdown=int(s.graceful_seconds),
        server_header=False,
    )


def startup_line(bundle: Bundle, host: str, port: int, workers: int) -> str:
    """The one line `mlgate serve` prints when it starts."""
    address = f"[{host}]" if ":" in host else host
    return (
        f"mlgate serve: model {bundle.name} version {bundle.version} on "
        f"http://{address}:{port} with {workers} worker{'s' if workers != 1 else ''}, "
        f"engine {bundle.trees.engine}"
    )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
