"""Where a request's microseconds go: GET /users/1 through each layer, in process, by CPU time.

    uv run python bench/request_cost.py [requests per round, default 200] [rounds, default 40]

The app runs as it ships (auth on, a request made with the admin key, metrics
and the JSON request line, the latter written to /dev/null) on a throwaway
database of the machine's PostgreSQL (BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432). Each variant is called directly as an
ASGI app, with no socket and no server, and costs the CPU time of this process
(`time.process_time`) per request: the database's own time is not in it, the
client side of psycopg is. Peeling one layer at a time says what each costs;
the variants alternate in short rounds, in a new random order each round, and
the median round counts, so a machine busy with other work moves every
variant alike.

The ceiling app of ../shared/bench/ceilings (BENCH_CEILING) is measured the
same way when that folder is given: its cost over mailroom's is the share of
the ceiling that mailroom's GET /users/1 can reach, server CPU being the
bottleneck of a one-worker run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.requests import Request  # noqa: E402
from starlette.routing import Router  # noqa: E402

import service  # noqa: E402
from access.authentication import guard  # noqa: E402
from access.rules import admin_only  # noqa: E402
from handlers import users  # noqa: E402
from operations.logs import RequestLines  # noqa: E402
from operations.middleware import RequestLayer  # noqa: E402
from settings import Settings  # noqa: E402
from tests.helpers import temporary_database  # noqa: E402

ADMIN = "bench-admin-" + secrets.token_urlsafe(24)
Asgi = Callable[..., Any]
USERS_ROUTE = next(route for route in service.ROUTES if route.path == "/users/{user_id}")
FIXED_BODY = b'{"id":1,"name":"user-1"}'
FIXED_HEADERS = [(b"content-length", b"24"), (b"content-type", b"application/json")]


def scope_for(state: dict[str, Any], app: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/users/1",
        "raw_path": b"/users/1",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {ADMIN}".encode()),
            (b"accept", b"*/*"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
        "app": app,
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def fixed_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering what GET /users/1 answers, with no work at all."""
    scope["route"] = USERS_ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": FIXED_HEADERS})
    await send({"type": "http.response.body", "body": FIXED_BODY})


def variants(app: Any, state: dict[str, Any], ceiling: Any) -> dict[str, Callable[[], Any]]:
    """name -> a coroutine function making one request through that stack."""
    router = Router(routes=service.ROUTES)

    def layer(inner: Asgi) -> RequestLayer:
        return RequestLayer(inner, service.EXCEPTION_HANDLERS, app.proxies)

    guarded = guard(users.get_user, admin_only, None)
    stacks: dict[str, tuple[Asgi, Any]] = {
        "the app as it ships": (app, app),
        "the router alone (no request layer)": (router, app),
        # No database: the layer's own cost, without the noise of a query.
        "our request layer around a fixed answer": (layer(fixed_answer), app),
        "a fixed answer alone": (fixed_answer, app),
    }
    calls: dict[str, Callable[[], Any]] = {}

    async def discard(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    for name, (asgi, owner) in stacks.items():

        async def call(asgi: Asgi = asgi, owner: Any = owner) -> None:
            await asgi(scope_for(state, owner), receive, discard)

        calls[name] = call

    access_log = logging.getLogger(RequestLines.ACCESS)

    async def without_request_line() -> None:
        access_log.disabled = True
        try:
            await app(scope_for(state, app), receive, discard)
        finally:
            access_log.disabled = False

    calls["the app without its request line"] = without_request_line

    async def handler_with_guard() -> None:
        scope = scope_for(state, app)
        scope["path_params"] = {"user_id": "1"}
        await guarded(Request(scope, receive))

    async def handler_alone() -> None:
        scope = scope_for(state, app)
        scope["path_params"] = {"user_id": "1"}
        await users.get_user(Request(scope, receive))

    calls["the handler behind its guard (admin key)"] = handler_with_guard
    calls["the handler alone"] = handler_alone
    if ceiling is not None:

        async def ceiling_call() -> None:
            await ceiling(scope_for({}, ceiling), receive, discard)

        calls["ceiling: Starlette + psycopg + msgspec"] = ceiling_call
    return calls


def load_ceiling(folder: str | None, url: str) -> Any:
    if not folder:
        return None
    os.environ["DATABASE_URL"] = url
    spec = importlib.util.spec_from_file_location("users_app", Path(folder) / "users_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


async def measure(url: str, per_round: int, rounds: int) -> None:
    settings = Settings(database_url=url, admin_token=ADMIN, log_format="json")
    app = service.create_app(settings)
    ceiling = load_ceiling(os.environ.get("BENCH_CEILING"), url)
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - the request lines go nowhere
    async with contextlib.AsyncExitStack() as stack:
        state = await stack.enter_async_context(app.router.lifespan_context(app))
        if ceiling is not None:
            await stack.enter_async_context(ceiling.router.lifespan_context(ceiling))
        stack.enter_context(contextlib.redirect_stdout(devnull))
        calls = variants(app, state, ceiling)
        costs: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():  # warm up: prepared statements, caches, label children
            for _ in range(200):
                await call()
        order = list(calls.items())
        for _ in range(rounds):
            random.shuffle(order)  # no variant always runs first, or right after another
            for name, call in order:
                started = time.process_time()
                for _ in range(per_round):
                    await call()
                costs[name].append((time.process_time() - started) / per_round * 1e6)
    devnull.close()
    medians = {name: statistics.median(values) for name, values in costs.items()}
    full = medians["the app as it ships"]
    print(f"CPU time per GET /users/1, median of {rounds} rounds of {per_round} requests")
    print("| stack | us per request | difference to the app as it ships |")
    print("| --- | --- | --- |")
    for name, cost in medians.items():
        print(f"| {name} | {cost:.1f} | {cost - full:+.1f} |")
    if ceiling is not None:
        share = medians["ceiling: Starlette + psycopg + msgspec"] / full
        print(
            f"\nmailroom's GET /users/1 costs the ceiling's CPU x {1 / share:.2f}: {share:.0%}"
            " of the ceiling's throughput when the worker's core is the limit"
        )


def main() -> None:
    per_round = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    # The ceiling reads the same users table; mailroom's migration creates and seeds it.
    with temporary_database(server.rstrip("/") + "/postgres", "mailroom_cost") as url:
        asyncio.run(measure(url, per_round, rounds))


if __name__ == "__main__":
    main()
