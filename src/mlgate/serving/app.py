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
  multiprocess mode when `mlgate serve` runs 2+ workers; mlgate.serving.metrics).

This module is the routing, the limits (body size, methods, content types), the offloading to the
scoring process and `main`. Each request format is a module of mlgate.serving.formats (parse a
body, render the answer), picked by route and content type from its registry `FORMATS`; the
column, row and value checks they share are mlgate.serving.matrix.

Bodies of 64 KiB or more are parsed and scored off the event loop: on a thread of the worker
when C reads them (the JSON reader of mlgate.serving.fastjson and the trees let go of the GIL;
OIP's binary tensors are numpy views), else in a scoring process each worker starts (orjson and
the CSV reader hold the GIL: on a thread they would stall /ping); `serve.access_log` writes a
line per request.

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
import functools
import gc
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs

import numpy as np
import orjson

from mlgate.serving.bundle import Bundle, check_expected, load_bundle
from mlgate.serving.formats import FORMATS, content_types, oip
from mlgate.serving.formats.base import JSON_HEADERS, Request, Response
from mlgate.serving.matrix import BadRequest, Limits, Matrices, NeedsProcess, released_gil_only
from mlgate.serving.memory import keep_freed_memory
from mlgate.serving.metrics import Metrics
from mlgate.serving.predlog import PredictionLog

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Bodies at least this big are parsed and scored off the event loop (in the scoring process,
# App._offload), so that /ping and small requests keep answering meanwhile (parsing a 10 MB
# body takes from tens to hundreds of milliseconds).
OFFLOAD_BYTES = 64 * 1024
# Formats whose large bodies are read by C (mlgate.serving.fastjson, numpy's frombuffer) or
# else by `parse_json`, which refuses them on a scoring thread (App._released_gil).
RELEASED_GIL_FORMATS = {"mlflow-json", "oip"}


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
        freeze: bool = False,
    ) -> None:
        """`bundle_dir`: large bodies are parsed and scored in a process of their own that
        loads it (without it: on a thread, which still holds the GIL while parsing JSON).
        `access_log`: a line per request written there. `metrics_dir`: prometheus-client's
        multiprocess directory, so that /metrics sums every worker. `count=False` is the
        scoring process: it counts nothing and hands its scored rows back. `freeze`: once
        started, move every object alive into the collector's permanent generation
        (`gc.freeze`), so that its full collections, which scanned the whole heap (modules,
        numpy, the server: 60 ms once in 11,000 requests), stop pausing requests."""
        self.bundle = bundle
        self.limits = limits or Limits()
        self.checks = Matrices(bundle, self.limits)
        self.log = log
        self.metrics = Metrics(bundle, log.stats if log else None, metrics_dir) if count else None
        self.scored: list[tuple[np.ndarray, np.ndarray]] = []  # count=False: what was scored
        self.ready = True
        self.bundle_dir = bundle_dir
        self.access_log = access_log
        self._pid = os.getpid()
        self._executor: Executor | None = None  # the scoring process, made at startup
        self._threads: Executor | None = None  # made for the first large body
        self.freeze = freeze
        prefix = f"/v2/models/{bundle.name}"
        self.v2_model_paths = {prefix, f"{prefix}/versions/{bundle.version}"}
        # The fast lane (mlgate.serving.protocol): small POSTs to these exact paths are
        # answered by `answer`, without an ASGI task and its messages.
        self.lanes = {
            b"/invocations": "invocations",
            **{f"{p}/infer".encode(): "v2_infer" for p in sorted(self.v2_model_paths)},
        }
        # bodies under this: larger ones go to the scoring process, or are refused (413)
        self.lane_bytes = min(OFFLOAD_BYTES, self.limits.max_body_bytes + 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        try:
            status, body, headers = await self._dispatch(scope, receive)
        except Exception as exc:  # a 4xx, or a bug answered 500 (_failure)
            status, body, headers = self._failure(scope["path"], exc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self._finish(
            start,
            _route_name(scope["path"]),
            status,
            len(body),
            scope["method"],
            scope["path"],
            scope.get("query_string") or b"",
            scope.get("client"),
        )

    def answer(
        self,
        route: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        client: tuple[str, int] | None,
    ) -> Response:
        """A whole small POST to an inference route (`route`, from `self.lanes`), answered
        without ASGI: the fast lane of mlgate.serving.protocol. The same checks, scoring,
        errors, metrics and access log as the ASGI path (`__call__`)."""
        start = time.perf_counter()
        try:
            response = self.score(route, self._request(route, headers, query, body))
        except Exception as exc:  # a 4xx, or a bug answered 500 (_failure)
            response = self._failure(path, exc)
        self._finish(start, route, response[0], len(response[1]), "POST", path, query, client)
        return response

    def _failure(self, path: str, exc: Exception) -> Response:
        """The answer to a request that raised: its 4xx, or a 500 naming the bug."""
        if isinstance(exc, BadRequest):
            return (
                exc.status,
                orjson.dumps(self._error_body(path, str(exc), exc.status)),
                JSON_HEADERS,
            )
        # a bug, not the client's fault: say so, keep serving
        error = {"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}
        return 500, orjson.dumps(error), JSON_HEADERS

    def _finish(
        self,
        start: float,
        route: str,
        status: int,
        size: int,
        method: str,
        path: str,
        query: bytes,
        client: Any,
    ) -> None:
        """Count an answered request, and write its access log line."""
        seconds = time.perf_counter() - start
        if self.metrics is not None:  # None only in the scoring process, which serves no HTTP
            self.metrics.observe(route, status, seconds)
        if self.access_log is not None:
            target = path + ("?" + query.decode("latin-1") if query else "")
            self.access_log.write(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid={self._pid} {(client or '-')[0]} "
                f'"{method} {_printable(target[:512])}" {status} {size} '
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
                if self.freeze:  # everything loaded: the heap the collector need not scan
                    gc.collect()
                    gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                if self.log is not None:
                    self.log.close()  # in-flight requests are done: write what waits
                for pool in (self._executor, self._threads):
                    if pool is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                self._executor = self._threads = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        if path == "/invocations":
            self._method(method, "POST")
            return await self._infer("invocations", scope, receive)
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
            assert self.metrics is not None  # the scoring process serves no HTTP
            return (
                200,
                self.metrics.render(),
                [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
            )
        if path == "/v2":
            self._method(method, "GET")
            return 200, orjson.dumps(oip.server_metadata(self.bundle)), JSON_HEADERS
        if path == "/v2/repository/index":  # Triton's model repository extension
            self._method(method, "POST", "GET")
            return 200, orjson.dumps(oip.repository_index(self.bundle)), JSON_HEADERS
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

    async def _v2(self, method: str, path: str, scope: Scope, receive: Receive) -> Response:
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
            return 200, orjson.dumps(oip.config(self.bundle, self.limits)), JSON_HEADERS
        self._method(method, "POST")
        return await self._infer("v2_infer", scope, receive)

    async def _infer(self, route: str, scope: Scope, receive: Receive) -> Response:
        """Read the body (serve.max_body_bytes), check its content type against the formats
        registered for `route`, then parse and score it in its format, off the event loop when
        it is large."""
        body = await self._body(scope, receive)
        request = self._request(route, scope["headers"], scope.get("query_string", b""), body)
        response: Response = await self._offload(body, self.score, route, request)
        return response

    def _request(
        self, route: str, headers: list[tuple[bytes, bytes]], query: bytes, body: bytes
    ) -> Request:
        """What a format sees of a request, once its content type is one `route` takes."""
        names = dict(headers)
        kind = self._content_type(names, content_types(route))
        return Request(body, kind, names, parse_qs(query.decode()) if query else {})

    async def _offload(self, body: bytes, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, off the event loop when the body is large: parsing and scoring 10 MB
        takes long enough to starve every other connection (a /ping waited 2.6 s). orjson
        holds the GIL while it parses, so a thread would not free the loop for it: the scoring
        process does. What C reads (`_released_gil`) goes to a thread of this process."""
        if len(body) < OFFLOAD_BYTES:
            return fn(*args)
        loop = asyncio.get_running_loop()
        if self.bundle_dir is None:  # an App made in-process (tests): a thread will do
            return await loop.run_in_executor(self._thread_pool(), fn, *args)
        if self._released_gil(*args):  # read by C that lets go of the GIL: a thread will do
            try:
                return await loop.run_in_executor(self._thread_pool(), _released, fn, args)
            except NeedsProcess:  # only orjson can read it: the scoring process's turn
                pass
        outcome, result, scored = await self._in_pool(fn.__name__, args, keep=self.log is not None)
        if outcome == "refused":
            raise BadRequest(result, scored)
        for rows, matrix, proba in scored:
            self._record(rows, matrix, proba)
        return result

    def _released_gil(self, route: Any = None, request: Any = None, *_: Any) -> bool:
        """Whether a large request can be scored on a thread of this process instead of the
        scoring process: its body is JSON or binary tensors (CSV is parsed in Python), the
        bundle carries the C JSON reader (the compiled engine) and no categories (their text
        is encoded in Python). On the thread, the C reader and the trees let go of the GIL;
        a body that needs orjson raises NeedsProcess there (matrix.released_gil_only) and
        goes to the scoring process. This spares the 10,000-row request the copies of its
        body through a pipe and back (about a fifth of its CPU)."""
        if not isinstance(request, Request) or (route, request.content_type) not in FORMATS:
            return False
        return (
            FORMATS[route, request.content_type].name in RELEASED_GIL_FORMATS
            and getattr(self.bundle.trees, "json_numbers", None) is not None
            and not self.bundle.categories
        )

    def _thread_pool(self) -> Executor:
        """One scoring thread, as there is one scoring process: large requests take turns
        (with two, two 10 MB requests and their trees' threads took both cores from the event
        loop, and /ping's p99 doubled)."""
        if self._threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(1, thread_name_prefix="mlgate-score")
        return self._threads

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
    def _method(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise BadRequest(f"method {method} not allowed here; use {' or '.join(allowed)}", 405)

    @staticmethod
    def _content_type(headers: Mapping[bytes, bytes], allowed: Sequence[str]) -> str:
        raw = headers.get(b"content-type", b"").decode("latin-1")
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

    # -- scoring: any registered format -------------------------------------------------------
    def score(self, route: str, request: Request) -> Response:
        """Parse `request` in its format (FORMATS, by route and content type), score the
        checked matrix and render the format's response."""
        fmt = FORMATS[route, request.content_type]
        parsed = fmt.parse(request, self.checks)
        return fmt.render(parsed, self.predict(parsed.matrix), self.bundle)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        proba: np.ndarray = self.bundle.predict(matrix)
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
    keep_freed_memory()
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


def _released(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """`fn(*args)` on a scoring thread: a body only orjson can read raises NeedsProcess."""
    with released_gil_only():
        return fn(*args)


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


def _printable(text: str) -> str:
    """A request target for the access log: control characters and quotes escaped, so that
    a client cannot forge log lines."""
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def create_app() -> App:
    """uvicorn factory: the bundle and limits from the settings (MLGATE_SERVE_* variables)."""
    from mlgate.settings import load_settings, process_env, prometheus_multiproc_dir

    keep_freed_memory()  # this worker's process: before the bundle and the first request

    settings = load_settings(env=process_env(), params_file=None)
    s, m = settings.serve, settings.monitor
    bundle = load_bundle(settings.path(s.bundle))
    check_expected(bundle, s.model_sha256)
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
        metrics_dir=prometheus_multiproc_dir(process_env()),
        freeze=True,
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
        check_expected(bundle, s.model_sha256)  # the image's own model, or no start
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
        # uvicorn calls it as a protocol factory (its type says class; a partial works alike)
        http=functools.partial(  # type: ignore[arg-type]
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
