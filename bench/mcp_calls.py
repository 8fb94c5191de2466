"""MCP tool calls against the same operations by REST, and what loading the SDK costs.

Usage: uv run python bench/mcp_calls.py [seconds per scenario, default 5]  (BENCH_ROUNDS, default 2)

Starts one uvicorn worker of this checkout with authentication on (no rate
limit) on a new database of BENCH_DATABASE_URL (default the local
PostgreSQL), registers agents, and runs each scenario with wrk (2 threads, 32
connections, `apt-get install wrk`), every request with an agent's key:

- send: POST /messages to one recipient, against tools/call send_message;
- inbox: GET /agents/{id}/messages/unread?limit=10&order=asc on an inbox of
  10 unread messages, against tools/call check_inbox(limit=10);
- user: GET /users/1 (admin key), here and on BENCH_BASELINE (a git ref,
  default main: the code before /mcp, run by the same interpreter), with each
  worker's resident memory after its run (VmRSS, and the peak VmHWM).

An MCP call is one POST of JSON-RPC (the stateless transport needs no
session), as a client sends it once initialized. Prints a Markdown table:
op/s, p50 and p99 in ms, the server worker's CPU time per operation (from
/proc: on a shared machine the steadiest of the figures), and non-2xx answers
(for tools, also calls whose result was an error, read from /metrics).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from psycopg import sql as pgsql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, ROOT, Server

ADMIN = "bench-admin-" + secrets.token_hex(12)
CONNECTIONS, THREADS = 32, 2
MCP = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
LUA = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def database(server_url: str) -> str:
    name = f"mailroom_bench_mcp_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return server_url.rsplit("/", 1)[0] + "/" + name


def baseline_tree(ref: str, into: Path) -> Path:
    """The files of `ref` (git archive), to run the code before this branch."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "archive", "-o", str(archive), ref], cwd=ROOT, check=True)  # noqa: S603, S607
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def memory(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of a process, in MB."""
    found = dict(
        re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    )
    return int(found["VmRSS"]) / 1024, int(found["VmHWM"]) / 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (from /proc: robust to a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, key: str, seconds: int, method: str = "GET", body: object = None,
        headers: dict[str, str] | None = None, pid: int = 0) -> dict[str, float]:  # fmt: skip
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    argv += ["-H", f"Authorization: Bearer {key}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        payload = "nil" if body is None else json.dumps(json.dumps(body))
        script.write(LUA.format(method=method, body=payload))
    argv += ["-s", script.name, url]
    cpu = cpu_seconds(pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    cpu = cpu_seconds(pid) - cpu
    os.unlink(script.name)
    text = out.stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\b", text, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    done = int(re.search(r"(\d+) requests in", text)[1])
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),
        "cpu_us": cpu / max(done, 1) * 1e6,
        "p50": ms("50%"),
        "p99": ms("99%"),
        "errors": int(errors[1]) if errors else 0,
    }


def tool_call(name: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}  # fmt: skip


def tool_errors(http: httpx.Client, tool: str) -> int:
    """Calls of `tool` whose result was not ok, from /metrics."""
    scrape = http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    pattern = rf'^mailroom_mcp_tool_calls_total\{{outcome="(\w+)",tool="{tool}"\}} ([\d.e+]+)$'
    return int(sum(float(n) for outcome, n in re.findall(pattern, scrape, re.M) if outcome != "ok"))


def serve(url: str, logs: Path, root: Path = ROOT) -> Server:
    server = Server(
        url, logs, *BENCH_OPTIONS, root=root, MAILROOM_AUTH="required",
        MAILROOM_ADMIN_TOKEN=ADMIN, MAILROOM_WRITE_RATE_LIMIT="0", LOG_FORMAT="json",
    )  # fmt: skip
    server.wait_healthy()
    return server


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    ref = os.environ.get("BENCH_BASELINE", "main")
    work = Path(tempfile.mkdtemp(prefix="mailroom-bench-mcp-"))
    server_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    url = database(server_url)
    branch = serve(url, work / "branch")
    baseline = serve(url, work / "baseline", baseline_tree(ref, work))
    try:
        http = httpx.Client(base_url=branch.base_url, timeout=30)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        sender, reader = (http.post("/agents", json={"agent_name": n}, headers=admin).json()
                          for n in ("sender", "reader"))  # fmt: skip
        key, reader_key = sender["api_key"], reader["api_key"]
        for n in range(10):
            body = {"sender_id": sender["id"], "content": f"unread {n}",
                    "recipient_ids": [reader["id"]]}  # fmt: skip
            http.post("/messages", json=body, headers={"Authorization": f"Bearer {key}"})
        send = {"sender_id": sender["id"], "content": "bench", "recipient_ids": [sender["id"]]}
        mcp_send = tool_call("send_message", {"to": [sender["id"]], "content": "bench"})
        mcp_inbox = tool_call("check_inbox", {"limit": 10})
        unread = f"/agents/{reader['id']}/messages/unread?limit=10&order=asc"
        a, b = branch.base_url, baseline.base_url
        pa, pb = branch.process.pid, baseline.process.pid

        def tool(name: str, run: Callable[[], dict[str, float]]) -> dict[str, float]:
            before = tool_errors(http, name)
            result = run()
            result["errors"] += tool_errors(http, name) - before
            return result

        def on(
            base: str,
            pid: int,
            path: str,
            key: str,
            method: str = "GET",
            body: object = None,
            headers: dict[str, str] | None = None,
        ) -> dict[str, float]:
            return wrk(base + path, key, seconds, method, body, headers, pid)  # fmt: skip

        scenarios: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("send: REST POST /messages", lambda: on(a, pa, "/messages", key, "POST", send)),
            ("send: MCP send_message", lambda: tool(
                "send_message", lambda: on(a, pa, "/mcp", key, "POST", mcp_send, MCP))),
            ("inbox: REST GET .../unread", lambda: on(a, pa, unread, reader_key)),
            ("inbox: MCP check_inbox", lambda: tool(
                "check_inbox", lambda: on(a, pa, "/mcp", reader_key, "POST", mcp_inbox, MCP))),
            ("user: GET /users/1, this branch", lambda: on(a, pa, "/users/1", ADMIN)),
            (f"user: GET /users/1, {ref}", lambda: on(b, pb, "/users/1", ADMIN)),
        ]  # fmt: skip
        rows = [(n, name, run()) for n in range(1, rounds + 1) for name, run in scenarios]
        memories = {"this branch": memory(branch.process.pid), ref: memory(baseline.process.pid)}
        http.close()
    finally:
        branch.stop()
        baseline.stop()
    print(f"wrk {THREADS} threads, {CONNECTIONS} connections, {seconds} s a scenario, "
          f"{rounds} rounds (scenarios interleaved)\n")  # fmt: skip
    print("| round | scenario | op/s | p50 ms | p99 ms | server CPU us/op | errors |")
    print("|---|---|---|---|---|---|---|")
    for n, name, r in rows:
        print(f"| {n} | {name} | {r['rate']:,.1f} | {r['p50']:.2f} | {r['p99']:.2f} "
              f"| {r['cpu_us']:,.0f} | {r['errors']} |")  # fmt: skip
    print()
    for name, (rss, peak) in memories.items():
        print(f"worker memory after the runs, {name}: RSS {rss:.1f} MB, peak {peak:.1f} MB")
    drop(url)


def drop(url: str) -> None:
    server_url, name = url.rsplit("/", 1)
    with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE {} WITH (FORCE)").format(pgsql.Identifier(name)))


if __name__ == "__main__":
    main()
