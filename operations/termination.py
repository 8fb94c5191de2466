"""What a worker does when SIGTERM or SIGINT arrives, before uvicorn's own shutdown.

uvicorn waits for open responses before it runs the lifespan's shutdown, so the
service ends its streams and long-polls itself (the callback). And uvicorn
closes its listening socket at its next tick after the signal: a connection
the kernel completed a moment before, still in the accept queue, is then reset
unanswered. So uvicorn's handler runs only once the queue is empty (the
listening socket no longer readable), within ACCEPT_SECONDS: a proxy's last
connections before SIGTERM are answered, not reset. A second signal goes to
uvicorn at once (a second Ctrl-C forces the exit).
"""

from __future__ import annotations

import asyncio
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

ACCEPT_SECONDS = 1.0  # at most, while new connections keep arriving
ACCEPT_POLL_SECONDS = 0.005


def call_on_termination(callback: Callable[[], None]) -> None:
    """Run `callback` on the event loop when SIGTERM or SIGINT arrives, then the
    server's own handler (uvicorn's, which stops accepting and drains requests)
    once the connections already made are accepted.

    Only in the main thread, and only over a handler the server installed: under
    a test client there is none and nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    signalled = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
            if signalled.is_set():
                previous(number, frame)
                return
            signalled.set()
            loop.call_soon_threadsafe(callback)
            loop.call_soon_threadsafe(
                loop.create_task, accepted_then(listeners(previous), previous, number, frame)
            )

        signal.signal(signum, handler)


def listeners(handler: Any) -> list[int]:
    """The listening sockets of the uvicorn server whose signal handler is `handler`
    (its bound `handle_exit`); none for another server."""
    servers = getattr(getattr(handler, "__self__", None), "servers", None) or []
    return [sock.fileno() for server in servers for sock in getattr(server, "sockets", ())]


async def accepted_then(
    sockets: list[int], handler: Callable[[int, FrameType | None], Any], *args: Any
) -> None:
    """Call `handler(*args)` once no connection waits in the accept queue of `sockets`."""
    deadline = time.monotonic() + ACCEPT_SECONDS
    while sockets and time.monotonic() < deadline:
        try:
            waiting, _, _ = select.select(sockets, [], [], 0)
        except (OSError, ValueError):  # a socket already closed
            break
        if not waiting:
            break
        await asyncio.sleep(ACCEPT_POLL_SECONDS)  # the loop accepts them meanwhile
    handler(*args)
