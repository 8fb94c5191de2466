"""The echo runner: `echo` through an argv list, never a shell, with a timeout."""

from __future__ import annotations

import asyncio
import logging
import shutil

from starlette.requests import Request
from starlette.responses import Response

from handlers.bodies import decode, json_response
from handlers.http_errors import Timeout, TooManyRequests
from operations import metrics
from validation.requests import EchoRequest
from validation.responses import EchoResult

log = logging.getLogger("mailroom.echo")

ECHO = shutil.which("echo") or "/bin/echo"
# The environment of the child: nothing of ours leaks into it.
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def echo_argv(text: str) -> list[str]:
    """The argv that makes echo print exactly `text`.

    GNU echo takes an argument made only of -n, -e and -E letters as options,
    so a text starting with '-' is passed with -e and its dash as the escape
    \\x2d. The allowed characters include no backslash, so nothing else in the
    text can be read as an escape.
    """
    if text.startswith("-"):
        return [ECHO, "-e", "\\x2d" + text[1:]]
    return [ECHO, text]


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read until EOF, keeping at most `limit` bytes (the rest is drained)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)


async def run_command(argv: list[str], seconds: float, output_limit: int) -> tuple[int, bytes]:
    """Run argv; its exit status and (capped) stdout. Raises TimeoutError."""
    # The program and the argument count only: arguments are a client's text.
    log.debug("running %s with %d arguments", argv[0], len(argv) - 1)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=CHILD_ENV,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(seconds):
            stdout, _ = await asyncio.gather(
                _read_capped(process.stdout, output_limit),
                _read_capped(process.stderr, output_limit),
            )
            status = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return status, stdout


async def echo(request: Request) -> Response:
    """Print the validated message with echo and report what it wrote."""
    body = await decode(request, EchoRequest)
    settings = request.state.settings
    slots = request.state.echo_slots
    if slots.locked():
        raise TooManyRequests(
            f"{settings.echo_concurrency} echo commands are already running; retry shortly",
            {"Retry-After": "1"},
        )
    metrics.ECHO_RUNS.inc()
    try:
        async with slots:
            status, stdout = await run_command(
                echo_argv(body.message), settings.echo_timeout, settings.echo_output_limit
            )
    except TimeoutError:
        metrics.ECHO_FAILURES.inc()
        raise Timeout("Command execution timed out") from None
    if status != 0:
        metrics.ECHO_FAILURES.inc()
        return json_response(
            EchoResult(
                success=False,
                message=body.message,
                output=None,
                error=f"Command failed with return code {status}",
            )
        )
    output = stdout.decode("utf-8", errors="replace").removesuffix("\n")
    return json_response(EchoResult(success=True, message=body.message, output=output, error=None))
