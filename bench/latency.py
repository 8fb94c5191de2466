"""Push delivery latency: a message posted to one replica, received on a stream held on another.

Usage: uv run python bench/latency.py [messages, default 1000]

Starts two service processes on a database (BENCH_DATABASE_URL, or a
throwaway embedded cluster), opens GET /agents/{id}/messages/stream on
replica B and posts the messages one by one to replica A. The latency of a
message is the time from A's 201 response being read to B's event being
read. Prints median, p90, p99 and max, and the p99 against the 50 ms target:
reported, not enforced (a timing on a shared machine is a measurement, not a
test). Fails when an event is lost, duplicated or reordered: unless every
message arrived exactly once, in the order it was sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, Cluster, Server

# After the last event, how long an extra one (a duplicate) has to show up.
SETTLE_SECONDS = 1.0
TARGET_P99_MS = 50.0  # the target on this machine: reported, not enforced


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    work = Path(tempfile.mkdtemp(prefix="mailroom-latency-"))
    url = os.environ.get("BENCH_DATABASE_URL") or Cluster(work / "pgdata").url
    replicas = [Server(url, work / f"replica-{name}", *BENCH_OPTIONS) for name in "ab"]
    try:
        for replica in replicas:
            replica.wait_healthy()
        a, b = replicas
        agent = httpx.post(a.base_url + "/agents", json={"agent_name": "latency"}).json()["id"]
        received: dict[str, float] = {}
        order: list[str] = []
        ready, arrived = threading.Event(), threading.Event()

        def listen() -> None:
            with (
                httpx.Client(base_url=b.base_url, timeout=httpx.Timeout(30)) as client,
                client.stream("GET", f"/agents/{agent}/messages/stream") as response,
            ):
                ready.set()
                # It reads on after the last message (a duplicate may follow) until the
                # replica stops; an early end shows as missing messages.
                kind = "message"
                with contextlib.suppress(httpx.TransportError):
                    for line in response.iter_lines():
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line == "":
                            kind = "message"
                        elif line.startswith("data:") and kind == "message":
                            message_id = json.loads(line[5:])["id"]
                            received[message_id] = time.perf_counter()
                            order.append(message_id)
                            if len(order) >= count:
                                arrived.set()

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        ready.wait(10)
        time.sleep(0.2)
        acknowledged: dict[str, float] = {}
        sent: list[str] = []
        with httpx.Client(base_url=a.base_url, timeout=10) as http:
            for n in range(count):
                response = http.post(
                    "/messages", json={"content": f"latency {n}", "recipient_ids": [agent]}
                )
                acknowledged[response.json()["id"]] = time.perf_counter()
                sent.append(response.json()["id"])
        arrived.wait(30)
        time.sleep(SETTLE_SECONDS)
        order = list(order)  # what the stream delivered by now; the reader may go on
        latencies = [(received[m] - acknowledged[m]) * 1000 for m in sent if m in received]
        print(f"messages sent {count}, received {len(order)}, distinct {len(set(order))}")
        print(f"in order: {order == sent}")
        if latencies:
            p99 = percentile(latencies, 0.99)
            print(
                "delivery latency from the POST's 201 to the event on the other replica (ms): "
                f"median {statistics.median(latencies):.2f}, "
                f"p90 {percentile(latencies, 0.9):.2f}, p99 {p99:.2f}, max {max(latencies):.2f}"
            )
            # Reported, not enforced (see the docstring).
            verdict = "over" if p99 > TARGET_P99_MS else "within"
            print(f"p99 {verdict} the {TARGET_P99_MS:.0f} ms target (reported, not enforced)")
        if order != sent:
            raise SystemExit("FAIL: the stream did not deliver every message once, in order")
        print("PASS")
    finally:
        for replica in replicas:
            replica.stop()


if __name__ == "__main__":
    main()
