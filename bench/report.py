"""Print the benchmark table from bench/run.sh's results.tsv.

Rates are operations per second: one request per operation, except where
the reference needs several for the same operation (a send to 3 recipients
is 4 requests there; the mixed workload averages 1.6) and the whole-mailbox
walk (one walk is one operation). Latencies are per request.
"""

from __future__ import annotations

import sys
from collections import defaultdict

# Requests per operation on the reference, where it takes more than one.
REFERENCE_REQUESTS_PER_OP = {"send_3": 4.0, "mixed": 0.7 + 0.2 * 4 + 0.1}
ORDER = [
    "health", "user", "create_agent", "pull_100", "unread_100", "mailbox_5000",
    "details_200", "send_3", "mark_read", "mixed",
]  # fmt: skip


def main() -> None:
    rows: dict[str, dict[str, list[str]]] = defaultdict(dict)
    with open(sys.argv[1], encoding="utf-8") as results:
        for line in results:
            side, name, *values = line.rstrip("\n").split("\t")
            rows[side][name] = " ".join(values).split()
    sides = [s for s in ("mailroom", "reference") if s in rows]
    header = ["scenario"]
    for side in sides:
        header += [f"{side} op/s", "p50 ms", "p99 ms", "errors"]
    if len(sides) == 2:
        header += ["ratio"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in ORDER:
        cells, rates = [name], []
        for side in sides:
            found = rows[side].get(name)
            if not found:
                cells += ["-"] * 4
                continue
            requests, duration, p50, p99, errors = found[:5]
            per_op = REFERENCE_REQUESTS_PER_OP.get(name, 1.0) if side == "reference" else 1.0
            rate = float(requests) / float(duration) / per_op
            rates.append(rate)
            cells += [f"{rate:,.1f}", f"{float(p50):.2f}", f"{float(p99):.2f}", errors]
        if len(sides) == 2:
            cells.append(f"{rates[0] / rates[1]:.1f}x" if len(rates) == 2 and rates[1] else "-")
        print("| " + " | ".join(cells) + " |")
    ceiling = rows.get("ceiling", {}).get("user")
    mine = rows.get("mailroom", {}).get("user")
    if ceiling and mine:
        ceiling_rate = float(ceiling[0]) / float(ceiling[1])
        mine_rate = float(mine[0]) / float(mine[1])
        print(
            f"\nceiling (minimal Starlette + psycopg + msgspec) GET /users/1: {ceiling_rate:,.1f}"
            f" req/s; mailroom does {100 * mine_rate / ceiling_rate:.0f}% of it"
        )
    for side in sides:
        rss = rows[side].get("peak_rss_mb")
        if rss:
            print(f"\n{side}: peak RSS of the worker after the run: {rss[0]} MB")


if __name__ == "__main__":
    main()
