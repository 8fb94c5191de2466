"""Push at scale on one worker: thousands of idle streams, fan-outs to 1,000, long-polls.

    uv run python bench/push_scale.py [streams, default 10000] [hold seconds, default 60]

One uvicorn worker, run as the image runs it (uvloop, service:HttpProtocol),
serves a throwaway database on the machine's PostgreSQL (BENCH_DATABASE_URL,
default postgresql://postgres@127.0.0.1:5432), with MAILROOM_AUTH=off: every
stream is a distinct agent, made by one COPY. The client is this process: raw
asyncio sockets (a protocol object per connection, no HTTP library), after
raising its file-descriptor limit (and so the server's, which inherits it).

1. `streams` SSE streams of as many agents, opened 200 at a time, then held
   for `hold` seconds with heartbeats every MAILROOM_STREAM_HEARTBEAT
   (BENCH_HEARTBEAT, default 15) seconds: the worker's RSS per stream, and its
   CPU time per second while they idle.
2. One message to 1,000 of them (the recipient_ids cap): the POST's latency,
   and when each stream had it; then 100 such messages back to back. Every
   stream must receive each message exactly once and in order.
3. SIGTERM: every stream must get its `event: shutdown` and a clean end.
4. On a new worker, `streams` long-polls (GET .../messages/unread?wait=60) of
   the same agents, then one message to each (1,000 recipients a POST): every
   poll must be answered with exactly its message, none twice.

Figures are the worker's own (/proc/PID/stat and status), the client's clock for
latencies. Exits non-zero when any stream or poll missed, doubled or reordered a
message; stops by itself (every wait is bounded) and drops its database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import temporary_database
from tests.servers import SHIPPED_OPTIONS, Server

FANOUT = 1000  # recipient_ids' cap
BACK_TO_BACK = 100
OPEN_AT_ONCE = 200
MESSAGE = re.compile(rb'event: message\ndata: \{"id":"([0-9a-f-]{36})"')
ITEM_ID = re.compile(rb'\{"id":"([0-9a-f-]{36})"')
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> str:
    return (
        f"p50 {statistics.median(values_ms):.0f} ms, p99 {percentile(values_ms, 0.99):.0f} ms,"
        f" max {max(values_ms):.0f} ms"
    )


class Worker:
    """The server process's own figures, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    async def settle(self, seconds: float = 60.0) -> None:
        """Until the worker uses under 5% of a core for a whole second (bounded)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            await asyncio.sleep(1.0)
            if self.cpu_seconds() - before < 0.05:
                return


class Stream(asyncio.Protocol):
    """One SSE stream: the message ids it received, in order, with their arrival times."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.tail = b""
        self.header_done = False
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.ids: list[bytes] = []
        self.arrived: list[float] = []
        self.heartbeats = 0
        self.shutdown = False
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        data = self.tail + data
        if not self.header_done:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.tail = data
                return
            if not data.startswith(b"HTTP/1.1 200"):
                self.error = data[: data.find(b"\r\n")].decode()
            self.header_done = True
        # Events end with a blank line, comments (heartbeats) with their own newline.
        ends = [
            found + len(end)
            for end in (b"\n\n", b": heartbeat\n", b": connected\n")
            if (found := data.rfind(end)) >= 0
        ]
        if not ends:
            self.tail = data
            return
        done, self.tail = data[: max(ends)], data[max(ends) :]
        for found in MESSAGE.finditer(done):
            self.ids.append(found.group(1))
            self.arrived.append(now)
        self.heartbeats += done.count(b": heartbeat\n")
        if b"event: shutdown" in done:
            self.shutdown = True
        if not self.opened.done() and b": connected\n" in done:
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = repr(exc)
        if not self.opened.done():
            self.opened.set_result(None)
            self.error = self.error or "closed before it opened"
        self.closed.set_result(None)


class Poll(asyncio.Protocol):
    """One long-poll: its whole response (the server closes the connection after it)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        self.answered_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.data:
            self.answered_at = time.perf_counter()
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set_result(None)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


async def open_all(port: int, protocols: list, wait_for: str | None) -> None:
    """Connect every protocol, OPEN_AT_ONCE at a time (the listen backlog is finite)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one(protocol: asyncio.Protocol) -> None:
        async with gate:
            await loop.create_connection(lambda: protocol, "127.0.0.1", port)
            if wait_for is not None:
                await asyncio.wait_for(getattr(protocol, wait_for), 60)

    await asyncio.gather(*(one(p) for p in protocols))


def seed_agents(url: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy("COPY agents (id, agent_name) FROM STDIN") as copy,
    ):
        for n, agent_id in enumerate(ids):
            copy.write_row((agent_id, f"push-{n}"))
    return ids


@contextlib.asynccontextmanager
async def sender(replica: Server) -> AsyncIterator[httpx.AsyncClient]:
    """The client of the POSTs, its connection made and warm before any is timed: a new
    httpx client's first request costs it 100 ms or more of its own (measured on this
    machine: 137 ms, then 4 ms), which the delivery times would otherwise count."""
    async with httpx.AsyncClient(base_url=replica.base_url, timeout=60) as http:
        (await http.get("/health")).raise_for_status()
        yield http


async def send(http: httpx.AsyncClient, recipients: list[str], text: str) -> tuple[bytes, float]:
    started = time.perf_counter()
    response = await http.post("/messages", json={"content": text, "recipient_ids": recipients})
    response.raise_for_status()
    return response.json()["id"].encode(), started


async def streams_phase(replica: Server, agents: list[str], hold: float) -> bool:
    worker = Worker(replica.process.pid)
    await worker.settle(10)
    rss_before, started = worker.rss_bytes(), time.perf_counter()
    streams = [Stream(get(f"/agents/{a}/messages/stream")) for a in agents]
    await open_all(replica.port, streams, "opened")
    failed = [s.error for s in streams if s.error]
    print(
        f"opened {len(streams) - len(failed)} of {len(streams)} streams in "
        f"{time.perf_counter() - started:.1f} s; errors: {len(failed)} {failed[:3]}"
    )
    await worker.settle(30)
    rss_open = worker.rss_bytes()
    print(
        f"worker RSS {rss_before / 2**20:.1f} MB -> {rss_open / 2**20:.1f} MB: "
        f"{(rss_open - rss_before) / len(streams) / 1024:.1f} KB per open stream"
    )
    cpu, heartbeats = worker.cpu_seconds(), sum(s.heartbeats for s in streams)
    await asyncio.sleep(hold)
    idle_cpu = worker.cpu_seconds() - cpu
    beats = sum(s.heartbeats for s in streams) - heartbeats
    rss_held = worker.rss_bytes()
    print(
        f"held {hold:.0f} s: worker CPU {idle_cpu:.2f} s ({idle_cpu / hold:.1%} of a core), "
        f"{beats} heartbeats received ({idle_cpu / max(beats, 1) * 1e6:.0f} us of CPU each), "
        f"RSS {rss_held / 2**20:.1f} MB; streams closed meanwhile: "
        f"{sum(s.closed.done() for s in streams)}"
    )

    group = agents[:FANOUT]  # all of them when there are fewer
    targets = streams[:FANOUT]
    ok = True
    async with sender(replica) as http:
        cpu = worker.cpu_seconds()
        message_id, sent_at = await send(http, group, "fan-out")
        acknowledged = time.perf_counter()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(s.ids for s in targets):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        arrivals = [(s.arrived[0] - sent_at) * 1000 for s in targets if s.ids]
        print(
            f"one message to {len(group)}: POST {(acknowledged - sent_at) * 1000:.0f} ms; "
            f"delivered to {len(arrivals)} streams, from the POST's start {summary(arrivals)}; "
            f"worker CPU {worker.cpu_seconds() - cpu:.2f} s"
        )

        cpu = worker.cpu_seconds()
        sends: list[tuple[bytes, float, float]] = []
        began = time.perf_counter()
        for n in range(BACK_TO_BACK):
            message_id_n, sent_at_n = await send(http, group, f"burst {n}")
            sends.append((message_id_n, sent_at_n, time.perf_counter()))
        posted = time.perf_counter()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110
            len(s.ids) >= 1 + BACK_TO_BACK for s in targets
        ):
            await asyncio.sleep(0.01)
        last = max(s.arrived[-1] for s in targets)
        expected = [message_id] + [m for m, _, _ in sends]
        wrong = sum(s.ids != expected for s in targets)
        per_message = []
        for index, (_, sent_at_n, _) in enumerate(sends, start=1):
            per_message += [
                (s.arrived[index] - sent_at_n) * 1000 for s in targets if len(s.arrived) > index
            ]
        posts = [(done - start) * 1000 for _, start, done in sends]
        print(
            f"{BACK_TO_BACK} such messages back to back: POSTs {summary(posts)}, all posted "
            f"in {posted - began:.1f} s, last delivery {last - began:.1f} s after the first "
            f"POST; each delivery from its POST's start {summary(per_message)}; worker CPU "
            f"{worker.cpu_seconds() - cpu:.2f} s; streams with a missing, doubled or "
            f"reordered message: {wrong}"
        )
        ok = ok and wrong == 0 and len(arrivals) == len(group)
        others = sum(bool(s.ids) for s in streams[FANOUT:])
        ok = ok and others == 0
        if others:
            print(f"FAIL: {others} streams outside the recipients received a message")

    began = time.perf_counter()
    replica.process.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.closed for s in streams)), 60)
    ended = time.perf_counter()
    clean = sum(s.closed.done() and s.shutdown for s in streams)
    code = await asyncio.to_thread(replica.process.wait, 60)
    print(
        f"SIGTERM: {clean} of {len(streams)} streams got `event: shutdown` and were closed "
        f"within {ended - began:.1f} s; the worker exited with {code} after "
        f"{time.perf_counter() - began:.1f} s"
    )
    # uvicorn ends by re-raising the signal it caught: -15 is its clean exit.
    return ok and clean == len(streams) and code in (0, -signal.SIGTERM)


async def polls_phase(replica: Server, agents: list[str]) -> bool:
    worker = Worker(replica.process.pid)
    await worker.settle(10)
    rss_before, started = worker.rss_bytes(), time.perf_counter()
    polls = [Poll(get(f"/agents/{a}/messages/unread?wait=60")) for a in agents]
    # A poll's first read needs a pooled connection within MAILROOM_POOL_TIMEOUT: 10,000
    # arriving in the same second would wait behind each other for 10 of them, so they
    # come 1,000 at a time, each thousand once the worker is idle again.
    for start in range(0, len(polls), FANOUT):
        await open_all(replica.port, polls[start : start + FANOUT], None)
        await worker.settle(30)
    early = sum(p.done.done() for p in polls)
    print(
        f"{len(polls)} long-polls waiting after {time.perf_counter() - started:.1f} s "
        f"({early} answered before any message); worker RSS {rss_before / 2**20:.1f} MB -> "
        f"{worker.rss_bytes() / 2**20:.1f} MB"
    )
    expected: dict[int, bytes] = {}
    began = time.perf_counter()
    async with sender(replica) as http:
        for start in range(0, len(agents), FANOUT):
            message_id, _ = await send(http, agents[start : start + FANOUT], f"poll {start}")
            for index in range(start, min(start + FANOUT, len(agents))):
                expected[index] = message_id
    posted = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(p.done for p in polls)), 70)
    right, statuses = 0, collections.Counter()
    for index, poll in enumerate(polls):
        statuses[bytes(poll.data[9:12]).decode() or "none"] += 1
        body = bytes(poll.data)
        if body.startswith(b"HTTP/1.1 200") and ITEM_ID.findall(body) == [expected[index]]:
            right += 1
    answered = [(p.answered_at - began) * 1000 for p in polls if p.answered_at]
    print(
        f"{-(-len(agents) // FANOUT)} POSTs of up to {FANOUT} recipients"
        f" in {posted - began:.1f} s; "
        f"{right} of {len(polls)} polls answered with exactly their message (none twice); "
        f"answers from the first POST's start {summary(answered)}; statuses {dict(statuses)}"
    )
    replica.stop()
    return right == len(polls)


async def run(url: str, count: int, hold: float, heartbeat: str, work: Path) -> bool:
    variables = {"MAILROOM_STREAM_HEARTBEAT": heartbeat}
    replica = Server(url, work / "streams", *SHIPPED_OPTIONS, **variables)
    try:
        await asyncio.to_thread(replica.wait_healthy)  # the migrations have run
        agents = seed_agents(url, count)
        streams_ok = await streams_phase(replica, agents, hold)
    finally:
        replica.stop()
    with psycopg.connect(url) as conn:  # the streams' messages would answer the polls at once
        conn.execute("TRUNCATE message_recipients, messages CASCADE")
    replica = Server(url, work / "polls", *SHIPPED_OPTIONS, **variables)
    try:
        await asyncio.to_thread(replica.wait_healthy)
        polls_ok = await polls_phase(replica, agents)
    finally:
        replica.stop()
    return streams_ok and polls_ok


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    hold = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    heartbeat = os.environ.get("BENCH_HEARTBEAT", "15")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1000  # per process: the client's ends here, the worker's (it inherits) there
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted), hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        raise SystemExit(f"the hard file-descriptor limit ({hard}) is under {wanted}")
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    work = Path(tempfile.mkdtemp(prefix="mailroom-push-"))
    print(f"{count} agents, one worker, MAILROOM_AUTH=off, heartbeat {heartbeat} s")
    with temporary_database(server.rstrip("/") + "/postgres", "mailroom_push") as url:
        ok = asyncio.run(run(url, count, hold, heartbeat, work))
    print("PASS" if ok else f"FAIL (the workers' logs are in {work})")
    if not ok:
        raise SystemExit(1)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
