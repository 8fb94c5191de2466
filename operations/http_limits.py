"""Bounds on what one HTTP connection may make a worker hold: its request head and body.

uvicorn's httptools protocol has none of them: it buffers a header of any size
(a 100 MB one kept the worker busy for tens of seconds while every other
request waited, and its listener declared the database down), and it keeps a
connection open for as long as a client sends one header line, or one body
byte, every few seconds. BoundedHttpToolsProtocol adds the four bounds and
keeps httptools' speed; uvicorn's h11 protocol bounds only the head's size and
is several times slower per request (bench/protocol_cost.py, bench/protocols.sh
and bench/headers.py measure them; docs/hardening-notes.md has the figures).

Each bound answers in JSON, as the service does: 431 for a head over the size
or the count (before the request reaches the app), 408 for a head or a body
that did not arrive in time; a connection that never sent a request is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, NamedTuple

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("mailroom.http")

# After a refusal the client may still be sending (a 100 MB header): its bytes
# are read and dropped for a moment, so that it reads the answer rather than a
# connection reset, then the connection is closed.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
# A header line's bytes besides its name and value (": " and CRLF), and the
# head's besides its method, target and header lines (two spaces, "HTTP/1.1",
# the request line's CRLF and the blank line's).
LINE_OVERHEAD = 4
HEAD_OVERHEAD = 14
# At shutdown a connection whose request has not arrived yet (accepted a moment
# before SIGTERM, its client about to send) is given this long, at most, to send
# it; it is answered and closed. An idle keep-alive connection is closed at once.
SHUTDOWN_GRACE_SECONDS = 2.0


class Limits(NamedTuple):
    """The bounds, from the service's settings."""

    head_bytes: int  # request line, header lines, blank line (MAILROOM_MAX_HEADER_BYTES)
    headers: int  # header fields (MAILROOM_MAX_HEADERS)
    head_seconds: float  # from the connection or the head's first byte (MAILROOM_HEADER_TIMEOUT)
    body_seconds: float  # from the end of the head to the end of the body (MAILROOM_BODY_TIMEOUT)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `limits` on the request head and body.

    A subclass sets `limits`; uvicorn runs it with `--http module:Class`.
    A request whose head and body arrive in one read, as almost all do, costs
    no timer: one is armed only while a head or a body is incomplete.
    """

    limits: ClassVar[Limits]
    # Slots, not the instance's dict: uvicorn's attributes fill that dict to the brim of
    # its size, and seven more made every connection grow it (1.5 KB each, by tracemalloc).
    __slots__ = (
        "_deadline",
        "_deferred",
        "_discarded",
        "_draining",
        "_head",
        "_refusal",
        "_uncounted",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: int | None = 0  # bytes of the head being received; None during a body
        # A head begun in the middle of a read (pipelined) was not counted by data_received.
        self._uncounted = False
        self._refusal: tuple[int, str] | None = None
        self._deferred: tuple[int, str] | None = None  # a refusal after earlier answers
        self._discarded: int | None = None  # bytes dropped after a refusal
        self._deadline: asyncio.TimerHandle | None = None
        self._draining = False  # shutting down: the request being received is the last

    # A connection that sends no request is closed after head_seconds too.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_seconds, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarded is not None:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES and self._deferred is None:
                self.transport.close()
            return
        if self._head is not None:
            self._head += len(data)
        self._uncounted = False
        super().data_received(data)
        if self.transport.is_closing() or self._discarded is not None:
            return
        if self._refusal is not None:
            self._refuse(*self._refusal)
        elif self._head is not None:
            if self._head > self.limits.head_bytes:
                # Refused before the parser buffers more: httptools copies a growing
                # header value on every read, which is what stalled the worker.
                self._refuse(431, self._too_large())
            elif self._head and self._deadline is None:
                self._arm(self.limits.head_seconds, self._head_late)
        elif self._deadline is None:
            self._arm(self.limits.body_seconds, self._body_late)

    # Parser callbacks. A head that arrived whole (in reads of at most the limit and one
    # more) is measured once it is complete, unless the bytes received since it began
    # are already within the limit. Once refused, the rest of the read is parsed but
    # reaches neither uvicorn nor the app; data_received answers after it.
    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        received, self._head = self._head or 0, None
        headers = self.headers
        if (self._uncounted or received > self.limits.head_bytes) and (
            self._head_size() > self.limits.head_bytes
        ):
            self._refusal = (431, self._too_large())
        elif len(headers) > self.limits.headers:
            self._refusal = (
                431,
                f"Request has more than {self.limits.headers} header fields "
                "(MAILROOM_MAX_HEADERS); send fewer",
            )
        else:
            super().on_headers_complete()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        self._head = 0
        self._uncounted = True
        if self._refusal is None:
            super().on_message_complete()

    def _head_size(self) -> int:
        """The head's bytes as sent: request line, header lines and the blank line."""
        size = len(self.parser.get_method()) + len(self.url) + HEAD_OVERHEAD
        return size + sum(len(n) + len(v) + LINE_OVERHEAD for n, v in self.headers)

    def _too_large(self) -> str:
        return (
            f"Request line and headers are larger than {self.limits.head_bytes} bytes "
            "(MAILROOM_MAX_HEADER_BYTES); send smaller headers"
        )

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown closes every connection with no request in
        progress, including one accepted just before it whose client has not sent
        its request yet (it reads a close, unanswered). Such a connection, and one
        whose next head is arriving, may finish that request instead, as Go's
        http.Server.Shutdown lets new connections do; the head timer, shortened to
        the grace, closes a silent one."""
        waiting = self.cycle is None or (self.cycle.response_complete and self._head)
        if not waiting or self.transport.is_closing() or self._discarded is not None:
            super().shutdown()
            return
        self._draining = True
        self._arm(min(self.limits.head_seconds, SHUTDOWN_GRACE_SECONDS), self._head_late)

    # Deadlines --------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._head:  # no request started: an idle connection, closed quietly
            self.transport.close()
            return
        if self._draining:
            self._refuse(503, "The server is shutting down; send the request again")
            return
        seconds = self.limits.head_seconds
        self._refuse(
            408,
            f"The request line and headers did not arrive within {seconds:g} s "
            "(MAILROOM_HEADER_TIMEOUT); send them at once",
        )

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        seconds = self.limits.body_seconds
        if self.cycle is not None and not self.cycle.response_started:
            # The app waits for the body: it sees a disconnect, its answer goes nowhere.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._answer(
                408,
                f"The request body did not arrive within {seconds:g} s of the headers "
                "(MAILROOM_BODY_TIMEOUT); send it at once",
            )
        else:
            log.warning(
                "closed %s: its request body was incomplete after %g s", self._peer(), seconds
            )
            self.transport.close()

    # Refusals ----------------------------------------------------------------

    def _refuse(self, status: int, detail: str) -> None:
        """Refuse the request being received, once the answers to the (pipelined) ones
        before it are sent; what arrives meanwhile and after is dropped."""
        self._discarded = 0
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            self._deferred = (status, detail)
            self.flow.pause_reading()
        else:
            self._answer(status, detail)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred is None or self.pipeline or self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # every earlier answer sent
            deferred, self._deferred = self._deferred, None
            self._answer(*deferred)

    def _answer(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON detail, then drop what arrives until the connection ends."""
        self._discarded = 0
        log.warning("answered %d to %s and closed: %s", status, self._peer(), detail)
        body = msgspec.json.encode({"detail": detail})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER_SECONDS, self.transport.close)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
