"""The model server's HTTP protocol: uvicorn's httptools protocol with two limits it lacks.

uvicorn's `h11_max_incomplete_event_size` caps the head only under h11; under httptools (the fast
parser mlgate serves with) a request head may grow without bound (a 64 MB header took 13 s and
stalled /ping for 7 s), and a client that sends part of a request and stops holds its connection
forever (uvicorn's keep-alive timeout only starts after a response). This subclass adds:

- `max_header_bytes` (serve.max_header_bytes): the request line and headers together; over it the
  client gets 431 and the connection is closed, before the rest is read.
- `read_timeout` (serve.read_timeout_seconds): from a connection's first byte (or the end of the
  previous response) until the whole request, head and body, has arrived. A request still
  incomplete then gets 408 (if nothing was answered yet) and the connection is closed.

And a fast lane for the requests that matter at single-row traffic: a small POST (a
Content-Length under `App.lane_bytes`, 64 KiB, and within serve.max_body_bytes) to an inference
path of the app (`App.lanes`: `/invocations`, `/v2/models/{name}[/versions/{v}]/infer`) over
HTTP/1.1, with nothing else in flight on its connection, is answered by `App.answer` as soon as
its last byte arrives, in one write: no ASGI task, event, scope or messages per request (measured
in-process, uvicorn's path cost about as much CPU as parsing and scoring the row). `App.answer`
runs the same checks, scoring, errors, metrics and access log as the ASGI path. Anything else
(other routes and methods, chunked or larger bodies, `Expect: 100-continue`, HTTP/1.0,
upgrades, `X-Forwarded-For`, pipelined requests behind a slow one, a client that does not read
its answers) takes uvicorn's ASGI path as before.

Everything else is uvicorn's own code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class _Lane:
    """Stands for uvicorn's request cycle while a fast-lane request is read, for the code that
    looks at `self.cycle` meanwhile (connection_lost, shutdown, the read timeout)."""

    def __init__(self, route: str, path: bytes, query: bytes) -> None:
        self.route, self.path, self.query = route, path, query
        self.body: list[bytes] = []
        self.response_started = False
        self.response_complete = False
        self.keep_alive = True  # uvicorn's shutdown sets it False: answer, then close
        self.disconnected = False
        self.message_event = _NO_EVENT  # connection_lost calls message_event.set()


class _NoEvent:
    """Nothing waits on a fast-lane request (a shared object: a `_Lane` that referred to
    itself would be a reference cycle, garbage for the cyclic collector at every request)."""

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks: the request head is over the limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a request head size cap and a request read timeout."""

    def __init__(
        self, *args: Any, max_header_bytes: int = 16384, read_timeout: float = 30.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout
        self._head_bytes = 0
        self._in_head = True
        self._read_timer: asyncio.TimerHandle | None = None
        # The app's fast lane (App.lanes / App.answer), under uvicorn's middleware if any
        app = self.app
        while not hasattr(app, "lanes") and hasattr(app, "app"):
            app = app.app
        self._fast_app: Any = app if hasattr(app, "lanes") else None
        self._fast_limit: int = app.lane_bytes if self._fast_app is not None else 0
        self._fast: _Lane | None = None  # the fast-lane request being read

    # -- timers ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        answered = self.cycle is not None and self.cycle.response_started
        if not answered:
            self._reply_and_close(
                408,
                f"request not received within {self.read_timeout:g} s (serve.read_timeout_seconds)",
            )
        else:
            self.transport.close()

    # -- head size ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and not self.transport.is_closing():
            self._arm()  # a new request on a kept-alive connection
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._too_large()
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._too_large()  # still no end of the head in sight: do not buffer more

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_header_bytes:
            raise HeadTooLarge()
        self._in_head = False
        lane = self._lane() if self._fast_app is not None else None
        if lane is None:
            super().on_headers_complete()
        else:
            self._fast = lane
            self.cycle = lane  # type: ignore[assignment]  # stands in for uvicorn's cycle

    def on_body(self, body: bytes) -> None:
        if self._fast is not None:
            self._fast.body.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()  # the request is in; the next one re-arms on its first byte
        if self._fast is not None:
            lane, self._fast = self._fast, None
            try:
                self._answer(lane)
            except Exception as exc:  # a bug (App.answer answers every request error itself)
                self.logger.error("Exception in mlgate's fast lane", exc_info=exc)
                self.transport.close()
        else:
            super().on_message_complete()

    # -- the fast lane --------------------------------------------------------------------------
    def _lane(self) -> _Lane | None:
        """A `_Lane` when this request, its head just parsed, takes the fast lane."""
        if (
            self.parser.get_method() != b"POST"
            or self.parser.get_http_version() != "1.1"
            or self.parser.should_upgrade()
            or self.expect_100_continue
            or self.flow.write_paused  # a client not reading its answers: uvicorn's drain
            or self.limit_concurrency is not None
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
        ):
            return None
        path, _, query = self.url.partition(b"?")
        route = self._fast_app.lanes.get(path)
        if route is None:
            return None
        length = -1
        for name, value in self.headers:
            if name == b"content-length":
                if length >= 0 or not value.isdigit():
                    return None
                length = int(value)
            elif name in (b"transfer-encoding", b"x-forwarded-for"):
                return None  # chunked: uvicorn's path; proxied: its client address
        if not 0 <= length < self._fast_limit:
            return None
        return _Lane(route, path, query)

    def _answer(self, lane: _Lane) -> None:
        body = lane.body[0] if len(lane.body) == 1 else b"".join(lane.body)
        status, payload, headers = self._fast_app.answer(
            lane.route, lane.path.decode("ascii"), lane.query, self.headers, body, self.client
        )
        keep_alive = lane.keep_alive and self.parser.should_keep_alive()
        out = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            out += (name, b": ", value, b"\r\n")
        out += (b"content-length: ", str(len(payload)).encode(), b"\r\n")
        if not keep_alive:
            out.append(b"connection: close\r\n")
        out += (b"\r\n", payload)
        lane.response_started = lane.response_complete = True
        self.transport.write(b"".join(out))  # one write, one segment for a small answer
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # counts it, arms the keep-alive timeout

    def _too_large(self) -> None:
        self._reply_and_close(
            431,
            f"request head over {self.max_header_bytes} bytes (serve.max_header_bytes); "
            "send fewer or smaller headers",
        )

    def _reply_and_close(self, status: int, message: str) -> None:
        body = ('{"error_code": "BAD_REQUEST", "message": "' + message + '"}').encode()
        line = STATUS_LINE.get(status) or f"HTTP/1.1 {status} \r\n".encode()
        self.transport.write(
            line
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()
        self._disarm()
