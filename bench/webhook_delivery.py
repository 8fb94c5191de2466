"""Webhook delivery: send-to-receipt latency, deliveries per second, an outage, the send path.

Usage: uv run python bench/webhook_delivery.py [messages, default 1000]

Starts one service replica (MAILROOM_WEBHOOK_ALLOW_PRIVATE=on, a compressed
retry schedule) on a database (BENCH_DATABASE_URL, or a throwaway embedded
cluster) and the tests' receiver (tests/webhook_receiver.py, which verifies
every signature with the standardwebhooks package) in its own process. Four
sender threads post the messages to one agent whose webhook is the receiver.

0. 200 messages, one every 50 ms: send-to-receipt latency (from the POST's
   201 to the receiver's arrival stamp) p50/p99.
1. Receiver up, four senders as fast as they can: the same latency (now
   mostly time in the queue) and deliveries per second.
2. The receiver is stopped after a third of the messages and started again
   10 s later: every message arrives, and how long after its return.
3. The send path: POST /messages per second to an agent with a webhook and
   to one without, and the replica's CPU time per message in each case.

Fails when a message is not delivered or arrives with a bad signature.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, ROOT, Cluster, Server, free_port

SENDERS = 4
PACED = 200
SCHEDULE = "0,0.5,1,1,2,2,2,2,2,5,5,5,5"  # about 35 s of retries: outlives the 10 s outage
OUTAGE_SECONDS = 10.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Receiver:
    """tests/webhook_receiver.py in its own process; stopped and started on one port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.directory / "ready").unlink(missing_ok=True)
        script = str(ROOT / "tests" / "webhook_receiver.py")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, script, str(self.port), str(self.directory)]
        )
        while not (self.directory / "ready").exists():
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def received(self) -> list[dict]:
        path = self.directory / "received.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def send_all(
    base_url: str, agent: str, count: int, label: str, after: Callable[[int], None] | None = None
) -> tuple[dict[str, float], float]:
    """Post `count` messages from SENDERS threads; (message id -> time of its 201, seconds)."""
    acknowledged: dict[str, float] = {}
    lock = threading.Lock()
    counter = iter(range(count))

    def sender() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                response = http.post(
                    "/messages", json={"content": f"{label} {n}", "recipient_ids": [agent]}
                )
                if response.status_code != 201:
                    raise SystemExit(f"FAIL: POST /messages answered {response.status_code}")
                with lock:
                    acknowledged[response.json()["id"]] = time.time()
                if after is not None:
                    after(n)

    started = time.perf_counter()
    with ThreadPoolExecutor(SENDERS) as pool:
        for future in [pool.submit(sender) for _ in range(SENDERS)]:
            future.result()
    return acknowledged, time.perf_counter() - started


def wait_delivered(receiver: Receiver, wanted: set[str], seconds: float) -> dict[str, float]:
    """Message id -> first arrival, once every wanted message arrived (or fail)."""
    deadline = time.monotonic() + seconds
    while True:
        arrived: dict[str, float] = {}
        for record in receiver.received():
            if record["valid"] is not True:
                raise SystemExit(f"FAIL: a bad signature: {record['valid']}")
            message = record["body"]["data"]["id"]
            arrived.setdefault(message, record["at"])
        if wanted <= arrived.keys():
            return arrived
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {len(wanted - arrived.keys())} messages never arrived")
        time.sleep(0.1)


def register(base_url: str, name: str, receiver: Receiver | None) -> str:
    body: dict[str, str] = {"agent_name": name}
    if receiver is not None:
        body["webhook_url"] = receiver.url
    agent = httpx.post(base_url + "/agents", json=body).json()
    if receiver is not None:
        (receiver.directory / "secret").write_text(agent["webhook_secret"])
    return agent["id"]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    work = Path(tempfile.mkdtemp(prefix="mailroom-webhooks-"))
    url = os.environ.get("BENCH_DATABASE_URL") or Cluster(work / "pgdata").url
    replica = Server(
        url,
        work / "replica",
        *BENCH_OPTIONS,
        MAILROOM_WEBHOOK_ALLOW_PRIVATE="on",
        MAILROOM_WEBHOOK_RETRY_SCHEDULE=SCHEDULE,
        LOG_LEVEL="WARNING",
    )
    receivers: list[Receiver] = []
    try:
        replica.wait_healthy()
        base = replica.base_url

        # 0. Paced: one message every 50 ms, below what the machine delivers, so the
        # latency is a message's own and not the queue's.
        paced = Receiver(work / "paced")
        paced.directory.mkdir()
        receivers.append(paced)
        paced.start()
        agent = register(base, "bench-paced", paced)
        acknowledged = {}
        with httpx.Client(base_url=base, timeout=30) as http:
            for n in range(PACED):
                response = http.post(
                    "/messages", json={"content": f"paced {n}", "recipient_ids": [agent]}
                )
                acknowledged[response.json()["id"]] = time.time()
                time.sleep(0.05)
        arrived = wait_delivered(paced, set(acknowledged), 60)
        latencies = [(arrived[m] - acknowledged[m]) * 1000 for m in acknowledged]
        print(
            f"0. {PACED} messages, one every 50 ms: send-to-receipt (ms) p50 "
            f"{statistics.median(latencies):.1f}, p99 {percentile(latencies, 0.99):.1f}"
        )

        # 1. Receiver up, as fast as four senders post.
        steady = Receiver(work / "steady")
        steady.directory.mkdir()
        receivers.append(steady)
        steady.start()
        agent = register(base, "bench-steady", steady)
        started = time.time()
        acknowledged, _ = send_all(base, agent, count, "steady")
        arrived = wait_delivered(steady, set(acknowledged), 120)
        latencies = [(arrived[m] - acknowledged[m]) * 1000 for m in acknowledged]
        span = max(arrived.values()) - started
        duplicates = len(steady.received()) - len(arrived)
        print(f"1. {count} messages, receiver up: all delivered, {duplicates} repeated")
        print(
            f"   send-to-receipt (ms): p50 {statistics.median(latencies):.1f}, "
            f"p99 {percentile(latencies, 0.99):.1f}, max {max(latencies):.1f}; "
            f"{count / span:.0f} deliveries/s ({span:.2f} s from the first send)"
        )

        # 2. The receiver down for 10 s in the middle.
        outage = Receiver(work / "outage")
        outage.directory.mkdir()
        receivers.append(outage)
        outage.start()
        agent = register(base, "bench-outage", outage)
        back: list[float] = []

        def outage_at_a_third(n: int) -> None:
            if n == count // 3:
                outage.stop()

                def restart() -> None:
                    time.sleep(OUTAGE_SECONDS)
                    outage.start()
                    back.append(time.time())

                threading.Thread(target=restart, daemon=True).start()

        acknowledged, _ = send_all(base, agent, count, "outage", outage_at_a_third)
        arrived = wait_delivered(outage, set(acknowledged), 180)
        returned = back[0] if back else time.time()
        duplicates = len(outage.received()) - len(arrived)
        after = max(arrived.values()) - returned
        print(
            f"2. {count} messages, receiver down {OUTAGE_SECONDS:.0f} s after {count // 3}: "
            f"all delivered {after:.2f} s after it returned, {duplicates} repeated"
        )

        # 3. The send path with and without a webhook, and the replica's CPU time per
        # message (which, unlike rates, a busy machine does not distort).
        pid = replica.process.pid
        plain = register(base, "bench-plain", None)
        cpu = cpu_seconds(pid)
        _, without = send_all(base, plain, count, "plain")
        cpu_without = (cpu_seconds(pid) - cpu) / count * 1000
        hooked = Receiver(work / "hooked")
        hooked.directory.mkdir()
        receivers.append(hooked)
        hooked.start()
        agent = register(base, "bench-hooked", hooked)
        cpu = cpu_seconds(pid)
        acknowledged, with_hook = send_all(base, agent, count, "hooked")
        wait_delivered(hooked, set(acknowledged), 120)
        time.sleep(1.0)  # the last results are written
        cpu_with = (cpu_seconds(pid) - cpu) / count * 1000
        print(
            f"3. POST /messages with {SENDERS} senders: {count / without:.0f}/s without a "
            f"webhook, {count / with_hook:.0f}/s with one (deliveries running alongside)"
        )
        print(
            f"   replica CPU per message: {cpu_without:.2f} ms without a webhook, "
            f"{cpu_with:.2f} ms with one, send and delivery (one core: about "
            f"{1000 / max(cpu_with - cpu_without, 0.01):.0f} deliveries/s)"
        )
        print("PASS")
    finally:
        for receiver in receivers:
            receiver.stop()
        replica.stop()


if __name__ == "__main__":
    main()
