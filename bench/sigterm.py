"""SIGTERM under load: every request the server accepted is answered.

Usage: uv run python bench/sigterm.py

One replica on a throwaway embedded cluster; eight clients post messages
(one connection per request, so "accepted" is unambiguous) while a stream is
open; after 2 s the replica gets SIGTERM. Prints the requests answered (by
status), the requests refused at connect (after the listening socket closed),
the requests whose connection closed without an answer, how many messages the
database holds (it must equal the 201s: a request the service started was
finished and answered, one it closed unanswered was never run), whether the
stream ended with its final event, and the exit time and code.

Without a load balancer in front, a request racing the close of the listening
socket can be dropped by uvicorn before it reads it (its connection has no
request cycle yet): that is not an in-flight request, and the message count
shows it was not run. In Kubernetes the preStop sleep takes the pod out of the
Service before SIGTERM, so no request races it.
"""

from __future__ import annotations

import collections
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, Cluster, Server

CLIENTS = 8


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mailroom-sigterm-"))
    cluster = Cluster(work / "pgdata")
    replica = Server(cluster.url, work / "replica", *BENCH_OPTIONS)
    replica.wait_healthy()
    agent = httpx.post(replica.base_url + "/agents", json={"agent_name": "s"}).json()["id"]
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stopping = threading.Event()
    final_event: list[str] = []

    def listen() -> None:
        with (
            httpx.Client(base_url=replica.base_url, timeout=30) as http,
            http.stream("GET", f"/agents/{agent}/messages/stream") as response,
        ):
            for line in response.iter_lines():
                if line.startswith("event:"):
                    final_event[:] = [line]

    def client() -> None:
        while not stopping.is_set():
            try:
                response = httpx.post(
                    replica.base_url + "/messages",
                    json={"content": "load", "recipient_ids": [agent]},
                    headers={"Connection": "close"},
                    timeout=30,
                )
                outcome = str(response.status_code)
            except httpx.ConnectError:
                outcome = "refused at connect"
                stopping.set()
            except httpx.TransportError as error:
                outcome = f"closed unanswered: {type(error).__name__}"
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=listen, daemon=True)]
    threads += [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    started = time.monotonic()
    replica.process.send_signal(signal.SIGTERM)
    code = replica.process.wait(timeout=30)
    exit_seconds = time.monotonic() - started
    stopping.set()
    for thread in threads[1:]:
        thread.join()
    threads[0].join(5)
    unanswered = sum(n for outcome, n in outcomes.items() if outcome.startswith("closed"))
    answered = {k: n for k, n in outcomes.items() if k.isdigit()}
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        stored = conn.execute("SELECT count(*) FROM messages WHERE content = 'load'").fetchone()
    failed = (stored[0] if stored else 0) - answered.get("201", 0)
    print(f"answered: {answered}")
    print(f"refused at connect: {outcomes['refused at connect']}")
    print(f"closed unanswered before the service read them: {unanswered}")
    print(f"messages stored: {stored[0] if stored else 0}")
    print(f"in-flight requests failed (stored but not answered 201): {failed}")
    print(f"stream's last event: {final_event[0] if final_event else 'none'}")
    print(f"exit after SIGTERM: {exit_seconds:.2f} s, code {code} (uvicorn re-raises SIGTERM)")
    if failed or set(answered) != {"201"} or final_event != ["event: shutdown"]:
        raise SystemExit("FAIL")
    print("PASS")


if __name__ == "__main__":
    main()
