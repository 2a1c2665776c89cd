"""CPU µs per single-row request through the server's HTTP protocol and app, in-process.

    python bench/serve_inproc.py BUNDLE_DIR [--requests 1000] [--rounds 5]

Feeds each request's bytes to mlgate's protocol (uvicorn's httptools protocol with mlgate's
limits and fast lane) on a uvloop loop, with a transport that keeps what is written: what the
server's Python does per request, without the socket, the kernel or the other processes of a
shared machine, which move wrk's rates by a factor of 2 between runs. For each body shape (MLflow's four
JSON shapes, CSV, OIP v2 JSON) of one generated row: the least CPU time (time.process_time)
per request over `--rounds` rounds. To compare two trees of the code, run it with each on
PYTHONPATH, interleaved (docs/performance.md, issue 20). Reports; asserts only that every
answer is a 200.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson


class Transport(asyncio.Transport):
    """Keeps what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def bodies(features: list[str], name: str) -> dict[str, tuple[bytes, bytes, bytes]]:
    """Shape: (path, content type, body) of one generated row."""
    row = np.round(np.random.default_rng(0).normal(size=len(features)), 6).tolist()
    js, inv = b"application/json", b"/invocations"
    return {
        "split": (inv, js, orjson.dumps({"dataframe_split": {"columns": features, "data": [row]}})),
        "records": (
            inv,
            js,
            orjson.dumps({"dataframe_records": [dict(zip(features, row, strict=True))]}),
        ),
        "instances": (inv, js, orjson.dumps({"instances": [row]})),
        "inputs": (
            inv,
            js,
            orjson.dumps({"inputs": {f: [v] for f, v in zip(features, row, strict=True)}}),
        ),
        "csv": (
            inv,
            b"text/csv",
            (",".join(features) + "\n" + ",".join(map(repr, row)) + "\n").encode(),
        ),
        "v2": (
            f"/v2/models/{name}/infer".encode(),
            js,
            orjson.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1, len(features)], "datatype": "FP64", "data": row}
                    ]
                }
            ),
        ),
    }


async def measure(bundle_dir: Path, requests: int, rounds: int) -> dict[str, float]:
    import uvicorn
    from uvicorn.server import ServerState

    from mlgate.serving.app import App
    from mlgate.serving.bundle import load_bundle
    from mlgate.serving.protocol import LimitedHttpToolsProtocol

    app = App(load_bundle(bundle_dir))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", server_header=False)
    config.load()
    protocol = LimitedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = Transport()
    protocol.connection_made(transport)
    figures = {}
    for shape, (path, kind, body) in bodies(app.bundle.features, app.bundle.name).items():
        request = (
            b"POST " + path + b" HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-type: " + kind
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip

        async def run(n: int, request: bytes = request) -> None:
            for _ in range(n):
                transport.out.clear()
                protocol.data_received(request)
                while not transport.out or not transport.out[-1].endswith(b"}"):
                    await asyncio.sleep(0)  # the ASGI path answers from a task

        await run(200)
        best = []
        for _ in range(rounds):
            start = time.process_time()
            await run(requests)
            best.append(1e6 * (time.process_time() - start) / requests)
        if b" 200 " not in transport.out[0]:
            raise AssertionError(f"{shape}: {b''.join(transport.out)[:300]!r}")
        figures[shape] = min(best)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import uvloop

    figures = uvloop.run(measure(args.bundle, args.requests, args.rounds))
    for shape, us in figures.items():
        print(f"{shape:10s} {us:7.1f} µs CPU per request")


if __name__ == "__main__":
    main()
