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

Everything else is uvicorn's own code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()  # the request is in; the next one re-arms on its first byte
        super().on_message_complete()

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
