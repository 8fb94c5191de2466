"""SIGTERM under load: every request the server accepted is answered, and it exits cleanly.

Usage: uv run python bench/sigterm.py

One replica (the image's HTTP protocol, service:HttpProtocol) on a throwaway
embedded cluster; eight clients post messages (one connection per request, so
"accepted" is unambiguous) while a stream is open. After 2 s the clients stop
sending requests on new connections and, at the same moment, the replica gets
SIGTERM: the order Kubernetes follows (the preStop sleep takes the pod out of
the Service, then SIGTERM), so no request races the close of the listening
socket, while those already sent are in flight. A client connects before it
counts a request as sent, so every request sent went over a connection made
before SIGTERM. On a busy machine some of those connections are still in the
kernel's accept queue at SIGTERM, and some requests are sent only after it (a
client delayed between its connect and its send): the server answers those too
(operations/termination.py, operations/http_limits.py).

Prints the requests in flight at SIGTERM, the requests answered (by status),
those refused at connect (never accepted), those whose connection closed
without an answer, how many messages the database holds, the stream's last
event, and the exit time and status. Fails unless requests were in flight at
SIGTERM, every request sent was answered 201 (or refused at connect), the
database holds exactly the 201s, the stream ended with its final event, the
process exited 0 or by the SIGTERM uvicorn re-raises (tini -e 143 maps that to
0), and its output holds no traceback.
"""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import SHIPPED_OPTIONS, Cluster, Server

CLIENTS = 8
LOAD_SECONDS = 2
REFUSED = "refused at connect"


def exchange(connection: socket.socket, request: bytes) -> str:
    """Send one request; the response's status, or how the connection ended without one."""
    response = b""
    try:
        connection.sendall(request)
        while chunk := connection.recv(65536):
            response += chunk
    except OSError as error:
        return f"closed unanswered: {type(error).__name__}"
    if not response.startswith(b"HTTP/1.1 "):
        return "closed unanswered: no response"
    return response.split(b" ", 2)[1].decode()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mailroom-sigterm-"))
    cluster = Cluster(work / "pgdata")
    replica = Server(cluster.url, work / "replica", *SHIPPED_OPTIONS)
    replica.wait_healthy()
    agent = httpx.post(replica.base_url + "/agents", json={"agent_name": "s"}).json()["id"]
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stopping = threading.Event()
    in_flight = [0]
    final_event: list[str] = []

    def listen() -> None:
        # A stream cut off shows as a last event other than `shutdown`.
        with (
            contextlib.suppress(httpx.TransportError),
            httpx.Client(base_url=replica.base_url, timeout=30) as http,
            http.stream("GET", f"/agents/{agent}/messages/stream") as response,
        ):
            for line in response.iter_lines():
                if line.startswith("event:"):
                    final_event[:] = [line]

    body = json.dumps({"content": "load", "recipient_ids": [agent]}).encode()
    request = (
        b"POST /messages HTTP/1.1\r\nHost: mailroom\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    def client() -> None:
        while True:
            # Connected first, then counted: a request is only sent on a connection made
            # before the clients stop (and so before SIGTERM), as behind a load balancer.
            try:
                connection = socket.create_connection(("127.0.0.1", replica.port), timeout=30)
            except ConnectionRefusedError:
                with lock:
                    outcomes[REFUSED] += 1
                return
            with connection:
                with lock:
                    if stopping.is_set():
                        return
                    in_flight[0] += 1
                outcome = exchange(connection, request)
            with lock:
                in_flight[0] -= 1
                outcomes[outcome] += 1

    threads = [threading.Thread(target=listen, daemon=True)]
    threads += [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    with lock:  # no request starts from here on; those under way are in flight
        stopping.set()
        sent_at_sigterm = in_flight[0]
    started = time.monotonic()
    code = replica.terminate(seconds=30)
    exit_seconds = time.monotonic() - started
    for thread in threads[1:]:
        thread.join()
    threads[0].join(5)
    unanswered = sum(n for outcome, n in outcomes.items() if outcome.startswith("closed"))
    answered = {k: n for k, n in outcomes.items() if k.isdigit()}
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM messages WHERE content = 'load'").fetchone()
    stored = row[0] if row else 0
    traceback = "Traceback" in replica.output()
    print(f"requests in flight at SIGTERM: {sent_at_sigterm}")
    print(f"answered: {answered}")
    print(f"refused at connect: {outcomes[REFUSED]}")
    closed = {k: n for k, n in outcomes.items() if k.startswith("closed")}
    print(f"closed unanswered: {unanswered} {closed if closed else ''}".rstrip())
    print(f"messages stored: {stored} (answered 201: {answered.get('201', 0)})")
    print(f"stream's last event: {final_event[0] if final_event else 'none'}")
    print(f"exit after SIGTERM: {exit_seconds:.2f} s, status {code}")
    print(f"traceback in the replica's output: {'yes' if traceback else 'no'}")
    failed = {
        "no request was in flight at SIGTERM": sent_at_sigterm == 0,
        f"{unanswered} requests closed without an answer": unanswered > 0,
        f"statuses other than 201: {answered}": set(answered) != {"201"},
        "the database does not hold exactly the 201s": stored != answered.get("201"),
        "the stream did not end with `event: shutdown`": final_event != ["event: shutdown"],
        f"exit status {code}": code not in (0, -signal.SIGTERM),
        f"a traceback in {replica.stdout_path.parent}": traceback,
    }
    failures = [reason for reason, failing in failed.items() if failing]
    if failures:
        raise SystemExit("FAIL: " + "; ".join(failures))
    print("PASS")


if __name__ == "__main__":
    main()
