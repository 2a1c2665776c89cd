"""An HTTP proxy in front of a real server, for tests of what a slow network or a busy server
does to a standard client: every request is forwarded as it is, through `around`, which may
hold it before it is sent on, or hold its answer after the server has committed it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests

# Send on: the answer of the server, once the request has been forwarded.
SendOn = Callable[[], requests.Response]
# around(method, path, send_on) -> the answer to give the client.
Around = Callable[[str, str, SendOn], requests.Response]
HOP = {"host", "content-length", "connection", "transfer-encoding", "content-encoding"}


def start(target: str, around: Around) -> tuple[str, Callable[[], None]]:
    """A proxy to `target` on a free loopback port; returns its URI and its shutdown."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}

            def send_on() -> requests.Response:
                return requests.request(
                    self.command, target + self.path, data=body, headers=headers, timeout=120
                )

            answer = around(self.command, self.path, send_on)
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            try:
                self.wfile.write(answer.content)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: expected
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{proxy.server_port}", proxy.shutdown


@contextmanager
def listing(target: str) -> Iterator[tuple[str, list[str]]]:
    """A proxy to `target` that lists each request it forwards as "METHOD /path" (without the
    query): its URI and the list, which grows while the proxy runs."""
    seen: list[str] = []

    def around(method: str, path: str, send_on: SendOn) -> requests.Response:
        seen.append(f"{method} {path.partition('?')[0]}")
        return send_on()

    uri, shutdown = start(target, around)
    try:
        yield uri, seen
    finally:
        shutdown()
