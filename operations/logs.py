"""Log records as one JSON object per line (LOG_FORMAT=json) or plain text, on stdout.

The request id of the request being served (a context variable the request
middleware sets) goes into every record logged while it runs, so a database
error or a 500 can be matched with its request line. Records never carry
request bodies or headers: callers log ids, routes and counts only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from contextvars import ContextVar

import msgspec

from settings import load_settings

FORMATS = ("json", "text")
# The id of the request this task is serving, None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("mailroom_request_id", default=None)
# uvicorn's own loggers: routed through ours; its access log is replaced by the
# request middleware's line (one line per request, with the route template).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
UVICORN_ACCESS = "uvicorn.access"
_ENCODER = msgspec.json.Encoder()


def event(name: str, **fields: object) -> dict[str, object]:
    """The `extra` of a lifecycle record: `log.info("...", extra=event("startup"))`."""
    return {"fields": {"event": name, **fields}}


@functools.lru_cache(maxsize=2)
def _whole_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds; a second is formatted once, not once a line."""
    second = int(created)
    return f"{_whole_second(second)}.{int((created - second) * 1000):03d}Z"


def json_line(
    created: float,
    level: str,
    logger: str,
    message: str,
    request_id: str | None,
    fields: dict[str, object] | None,
    exception: str | None = None,
) -> str:
    """One record as a JSON object: time, level, logger, message, request_id, fields."""
    entry: dict[str, object] = {
        "time": _timestamp(created),
        "level": level,
        "logger": logger,
        "message": message,
    }
    if request_id is not None:
        entry["request_id"] = request_id
    if fields:
        entry.update(fields)
    if exception is not None:
        entry["exception"] = exception
    return _ENCODER.encode(entry).decode()


def text_line(
    created: float,
    level: str,
    logger: str,
    message: str,
    request_id: str | None,
    exception: str | None = None,
) -> str:
    """One record as `time LEVEL logger: message [request_id=...]`, for a terminal."""
    line = f"{_timestamp(created)} {level} {logger}: {message}"
    if request_id is not None:
        line += f" request_id={request_id}"
    if exception is not None:
        line += "\n" + exception
    return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record (json_line)."""

    def format(self, record: logging.LogRecord) -> str:
        return json_line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "request_id", None) or REQUEST_ID.get(),
            getattr(record, "fields", None),
            self.formatException(record.exc_info) if record.exc_info else None,
        )


class TextFormatter(logging.Formatter):
    """A readable line per record (text_line)."""

    def format(self, record: logging.LogRecord) -> str:
        return text_line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "request_id", None) or REQUEST_ID.get(),
            self.formatException(record.exc_info) if record.exc_info else None,
        )


def formatter(log_format: str | None = None) -> logging.Formatter:
    """The formatter LOG_FORMAT names (text unless it says json).

    Also the factory of operations/logging.json, which uvicorn loads before
    the application, so its own start-up lines are formatted the same way.
    """
    if log_format is None:
        log_format = load_settings().log_format
    return JsonFormatter() if log_format == "json" else TextFormatter()


class RequestLines:
    """The request middleware's line per request, in the format of the records.

    Written around the logging module, which costs about 9 us a record
    (a LogRecord, a handler lock, a flush and a write per line: a fifth of the
    throughput of a fast route): the line is assembled here from the text of
    its (method, route, status), made once per such triple, and the lines of
    one event-loop turn go to stdout in one write, at the end of that turn.
    """

    ACCESS = "mailroom.access"

    def __init__(self) -> None:
        self.json = True
        self.pending: list[str] = []
        # (method, route, status) -> the text around the duration and the request id.
        self._parts: dict[tuple[str, str, int], tuple[str, str, str]] = {}

    def add(
        self, request_id: str, key: tuple[str, str, int], seconds: float, principal: str | None
    ) -> None:
        """One request's line: `key` is (method, route template, status). `request_id` and
        `principal` need no escaping in JSON: the request layer's id is WELL_FORMED
        (operations/middleware.py), a principal "admin" or an agent's UUID."""
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = self._line_parts(*key)
        stamp = _timestamp(time.time())
        duration = f"{seconds * 1000:.2f}"
        if self.json:
            who = "null" if principal is None else f'"{principal}"'
            line = (
                f'{{"time":"{stamp}",{parts[1]} {duration} ms","request_id":"{request_id}",'
                f'{parts[2]}"duration_ms":{duration},"principal":{who}}}\n'
            )
        else:
            line = f"{stamp} INFO {self.ACCESS}: {parts[0]} {duration} ms request_id={request_id}\n"
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(line)

    def add_event(self, request_id: str, message: str, fields: dict[str, object]) -> None:
        """Another access-log line in the same write, e.g. an MCP tool call's."""
        now = time.time()
        if self.json:
            line = json_line(now, "INFO", self.ACCESS, message, request_id, fields)
        else:
            line = text_line(now, "INFO", self.ACCESS, message, request_id)
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(line + "\n")

    def _line_parts(self, method: str, route: str, status: int) -> tuple[str, str, str]:
        """The constant text of a line: the text message's start, and the JSON line's
        two constant stretches, in the key order of json_line()."""
        message = f"{method} {route} {status}"
        head = _ENCODER.encode({"level": "INFO", "logger": self.ACCESS, "message": message})
        fields = _ENCODER.encode({"method": method, "route": route, "status": status})
        # head without its closing quote and brace (the duration follows), fields
        # without braces (the duration and principal follow).
        return message, head.decode()[1:-2], fields.decode()[1:-1] + ","

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        if lines:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()


REQUEST_LINES = RequestLines()


def configure(level: str, log_format: str) -> None:
    """Log to stdout in `log_format` unless logging is configured already
    (uvicorn's --log-config, pytest's capture); uvicorn's loggers go the same way
    and its access log is silenced: the request middleware writes that line."""
    REQUEST_LINES.json = log_format == "json"
    logging.getLogger("mailroom").setLevel(level)
    # The MCP SDK logs each stateless request at INFO ("Terminating session"); the
    # request middleware's line and the tool call's line already say what happened.
    logging.getLogger("mcp").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger(UVICORN_ACCESS).disabled = True
