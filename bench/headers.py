"""The review's header scenarios before and after the bounds: a huge header, a slow head and body.

Usage: uv run python bench/headers.py [--header-mb 100] [--slow-seconds 60] [--only NAME]

One replica at a time on a throwaway embedded cluster, served by each of:
"httptools" (uvicorn's plain httptools protocol, as before the bounds),
"h11" (uvicorn's h11 protocol with its default 16 KiB head limit) and
"shipped" (`--http service:HttpProtocol`, as the Containerfile runs it). For each:

- one request whose header is `--header-mb` MB, sent as fast as the server
  reads it: the seconds until the server answers or cuts it off, and how;
- meanwhile GET /health/live in a loop (the longest wait is the stall other
  requests see) and GET /health in a loop (503 there means the listener
  declared the database down while PostgreSQL was fine), and the listener's
  log lines;
- the replica's peak memory (VmHWM);
- then, together, a client sending one header line every 2 s and one sending
  a declared 1,000-byte body one byte every 2 s, for at most `--slow-seconds`:
  how long the server kept each open.

Everything is local (127.0.0.1) and bounded: each scenario stops after its
own limit, the replicas and the cluster are stopped at the end.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import Cluster, Server

PROTOCOLS = {"httptools": "httptools", "h11": "h11", "shipped": "service:HttpProtocol"}
CHUNK = b"a" * (1 << 20)
HUGE_LIMIT = 120.0  # seconds the huge header may take before the bench gives up on it
PROBE_TIMEOUT = 30.0
SLOW_INTERVAL = 2.0
# What the listener logs: its connection lost, the database declared down, a check
# made again because the loop stalled, a stall of a second or more.
LISTENER_LINES = {
    "lost": "listening connection lost",
    "down": "database unreachable",
    "re-checked": "while the event loop was stalled",
    "stalls": "event loop stalled for",
}


class Answer:
    """Reads a raw connection in the background: when the server first answered or closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.at: float | None = None
        self.first_line = ""
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
            self.first_line = "reset"
        self.at = time.perf_counter()
        if data:
            self.first_line = "status " + data.split(b" ", 2)[1].decode(errors="replace")
        elif not self.first_line:
            self.first_line = "closed"
        self.done.set()


def huge_header(port: int, megabytes: int) -> tuple[float, str]:
    """Seconds from the first byte until the server answered or cut the connection, and how."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HUGE_LIMIT)
    answer = Answer(sock)
    started = time.perf_counter()
    try:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: bench\r\nX-Big: ")
        for _ in range(megabytes):
            if answer.done.is_set():
                break
            sock.sendall(CHUNK)
        else:
            sock.sendall(b"\r\n\r\n")
    except OSError:
        pass  # cut off while sending: the answer (or the reset) says how
    answer.done.wait(HUGE_LIMIT)
    sock.close()
    if answer.at is None:
        return HUGE_LIMIT, "no answer"
    return answer.at - started, answer.first_line


def slow_client(port: int, head: bytes, drip: list[bytes], seconds: float) -> tuple[float, str]:
    """Send `head`, then one item of `drip` every 2 s; how long the server kept it open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 10)
    answer = Answer(sock)
    started = time.perf_counter()
    try:
        sock.sendall(head)
        for item in drip:
            if answer.done.wait(SLOW_INTERVAL) or time.perf_counter() - started > seconds:
                break
            sock.sendall(item)
    except OSError:
        pass
    answer.done.wait(max(0.0, seconds - (time.perf_counter() - started)))
    sock.close()
    if answer.at is None:
        return time.perf_counter() - started, "still open"
    return answer.at - started, answer.first_line


class Probe:
    """GET `path` in a loop on its own thread: the longest wait and the statuses seen."""

    def __init__(self, base_url: str, path: str, pause: float) -> None:
        self.base_url, self.path, self.pause = base_url, path, pause
        self.longest = 0.0
        self.statuses: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=PROBE_TIMEOUT) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status = str(http.get(self.path).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                self.longest = max(self.longest, time.perf_counter() - started)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                time.sleep(self.pause)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(PROBE_TIMEOUT + 1)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(name: str, cluster_url: str, work: Path, megabytes: int, slow: float) -> dict[str, str]:
    options = ("--no-access-log", "--loop", "uvloop", "--http", PROTOCOLS[name])
    replica = Server(cluster_url, work / name, *options)
    figures: dict[str, str] = {}
    try:
        replica.wait_healthy()
        idle_rss = peak_rss_mb(replica.process.pid)
        live = Probe(replica.base_url, "/health/live", 0.02)
        ready = Probe(replica.base_url, "/health", 0.1)
        time.sleep(1.0)
        seconds, how = huge_header(replica.port, megabytes)
        time.sleep(2.0)  # a listener check that failed late shows up here
        live.finish()
        ready.finish()
        figures[f"{megabytes} MB header: answered after"] = f"{seconds:.2f} s, {how}"
        figures["  longest GET /health/live meanwhile"] = f"{live.longest:.2f} s"
        figures["  GET /health meanwhile (listener)"] = ", ".join(
            f"{count}x {status}" for status, count in sorted(ready.statuses.items())
        )
        log = replica.output()
        figures["  listener log lines"] = ", ".join(
            f"{name} {log.count(text)}" for name, text in LISTENER_LINES.items()
        )
        figures["  peak RSS (idle before)"] = (
            f"{peak_rss_mb(replica.process.pid):.0f} MB ({idle_rss:.0f} MB)"
        )
        results: dict[str, tuple[float, str]] = {}
        header_lines = [b"X-Slow-%d: 1\r\n" % i for i in range(int(slow / SLOW_INTERVAL) + 1)]
        body = [b"x"] * 1000
        clients = {
            "slow header (a line every 2 s)": (
                b"GET /health/live HTTP/1.1\r\nHost: bench\r\n",
                header_lines,
            ),
            "slow body (a byte every 2 s)": (
                b"POST /messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n",
                body,
            ),
        }
        threads = [
            threading.Thread(
                target=lambda key=key, head=head, drip=drip: results.__setitem__(
                    key, slow_client(replica.port, head, drip, slow)
                )
            )
            for key, (head, drip) in clients.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(slow + 15)
        for key, (seconds, how) in results.items():
            figures[key] = f"open {seconds:.1f} s, {how}"
    finally:
        replica.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header-mb", type=int, default=100)
    parser.add_argument("--slow-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=list(PROTOCOLS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailroom-headers-"))
    cluster = Cluster(work / "pgdata")
    names = [args.only] if args.only else list(PROTOCOLS)
    columns = {}
    for name in names:
        print(f"== {name}: --http {PROTOCOLS[name]}", file=sys.stderr)
        columns[name] = run(name, cluster.url, work, args.header_mb, args.slow_seconds)
    rows = list(next(iter(columns.values())))
    width = max(map(len, rows))
    print(f"{'':{width}}  " + "  ".join(f"{name:34}" for name in columns))
    for row in rows:
        print(f"{row:{width}}  " + "  ".join(f"{columns[n].get(row, ''):34}" for n in columns))
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
