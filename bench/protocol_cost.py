"""Each HTTP protocol's own CPU time per request, without network, database or the service's app.

Usage: uv run python bench/protocol_cost.py [requests per run, default 20000] [rounds, default 5]

One kept-alive connection per run, fed the same GET request (as wrk sends it
in bench/protocols.sh) through a transport that drops what it is given, with
an app that answers at once: what remains is the protocol's parsing, its
request cycle and the ASGI task, on uvloop. The protocols take turns; each
line gives the median and every run, in microseconds of process CPU time per
request. It complements bench/protocols.sh, whose end-to-end figures a busy
machine disturbs far more.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service import HttpProtocol

REQUEST = (
    b"GET /users/1 HTTP/1.1\r\nHost: 127.0.0.1:8203\r\n"
    b"Authorization: Bearer bench-admin-0123456789abcdef0123456789abcdef\r\n\r\n"
)
PROTOCOLS = {
    "httptools": HttpToolsProtocol,
    "h11": H11Protocol,
    "service:HttpProtocol": HttpProtocol,
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


class Sink:
    """A transport that counts writes and drops them."""

    def __init__(self) -> None:
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8203), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(protocol: type[asyncio.Protocol], requests: int) -> float:
    config = Config(app=app, http=protocol, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    connection: Any = protocol(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
    sink = Sink()
    connection.connection_made(sink)
    started = time.process_time()
    for _ in range(requests):
        connection.data_received(REQUEST)
        await asyncio.gather(*state.tasks)
    spent = time.process_time() - started
    assert sink.writes >= requests, "not every request was answered"
    connection.connection_lost(None)
    return spent / requests * 1e6


async def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    runs: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    for _ in range(rounds):
        for name, protocol in PROTOCOLS.items():
            runs[name].append(await run(protocol, requests))
    base = statistics.median(runs["httptools"])
    print(f"{'protocol':22} {'us/request':>10} {'ratio':>6}  runs")
    for name, values in runs.items():
        median = statistics.median(values)
        listed = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:22} {median:10.1f} {median / base:6.2f}  {listed}")


if __name__ == "__main__":
    uvloop.run(main())
