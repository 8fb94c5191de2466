"""Time fetching a whole mailbox: every page by Link rel=next, or one response.

Usage: walk.py BASE_URL AGENT_ID [repeats]

Prints `RESULT walks duration_s p50_ms p99_ms errors items` like the wrk
scenarios, one walk at a time (a client reading its whole inbox).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import httpx

# bench/run.sh's admin key (both sides get it; the reference ignores it).
AUTH = (
    {"Authorization": os.environ["BENCH_AUTHORIZATION"]}
    if "BENCH_AUTHORIZATION" in os.environ
    else {}
)


def walk(client: httpx.Client, url: str) -> int:
    items = 0
    next_url: str | None = url
    while next_url:
        response = client.get(next_url)
        response.raise_for_status()
        items += len(response.json())
        next_url = response.links.get("next", {}).get("url")
    return items


def main() -> None:
    base_url, agent_id = sys.argv[1].rstrip("/"), sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    url = f"{base_url}/agents/{agent_id}/messages?limit=1000"
    times, counts = [], set()
    with httpx.Client(timeout=120, headers=AUTH) as client:
        walk(client, url)  # warm-up
        started = time.monotonic()
        for _ in range(repeats):
            begin = time.perf_counter()
            counts.add(walk(client, url))
            times.append((time.perf_counter() - begin) * 1000)
        duration = time.monotonic() - started
    times.sort()
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    items = ",".join(map(str, sorted(counts)))
    print(f"RESULT {repeats} {duration:.3f} {statistics.median(times):.3f} {p99:.3f} 0 {items}")


if __name__ == "__main__":
    main()
