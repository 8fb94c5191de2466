"""Log records as one JSON object per line (LOG_FORMAT=json) or plain text, on stdout.

The request id of the request being served (a context variable the request
middleware sets) goes into every record logged while it runs, so a database
error or a 500 can be matched with its request line. Records never carry
request bodies or headers: callers log ids, routes and counts only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from contextvars import ContextVar

import msgspec

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


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [request_id=...]`, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            line += f" request_id={request_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def formatter(log_format: str | None = None) -> logging.Formatter:
    """The formatter LOG_FORMAT names (text unless it says json).

    Also the factory of operations/logging.json, which uvicorn loads before
    the application, so its own start-up lines are formatted the same way.
    """
    if log_format is None:
        log_format = os.environ.get("LOG_FORMAT", "text").strip().lower()
    return JsonFormatter() if log_format == "json" else TextFormatter()


class RequestLines:
    """The request middleware's line per request, in the format of the records.

    Written around the logging module, which costs about 9 us a record
    (a LogRecord, a handler lock, a flush and a write per line: a fifth of the
    throughput of a fast route): the line is encoded here, and the lines of one
    event-loop turn go to stdout in one write, at the end of that turn.
    """

    ACCESS = "mailroom.access"

    def __init__(self) -> None:
        self.json = True
        self.pending: list[str] = []
        self._second = -1
        self._stamp = ""

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def add(self, request_id: str, fields: dict[str, object]) -> None:
        stamp = self._time(time.time())
        message = "{method} {route} {status} {duration_ms:.2f} ms".format_map(fields)
        if self.json:
            entry = {"time": stamp, "level": "INFO", "logger": self.ACCESS, "message": message}
            entry["request_id"] = request_id
            entry.update(fields)
            line = _ENCODER.encode(entry).decode()
        else:
            line = f"{stamp} INFO {self.ACCESS}: {message} request_id={request_id}"
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(line + "\n")

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
