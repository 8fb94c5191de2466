"""Prometheus metrics: what the service counts, and the text a scrape gets.

With several worker processes (WEB_CONCURRENCY > 1) every worker writes its
counters to files in PROMETHEUS_MULTIPROC_DIR and a scrape, answered by any
worker, adds them up (prometheus-client's multiprocess mode). The variable
must be set before this module is imported: `service.main()` does it, a
container sets it itself (see docs/operations.md). The pool figures are read
from the answering worker's pool at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
CONTENT_TYPE = CONTENT_TYPE_LATEST


def forget_own_files(directory: str, pid: int) -> None:
    """Remove a previous process's files that carry this pid (pids are reused
    when a container restarts), so this worker's counters start at zero."""
    for path in Path(directory).glob(f"*_{pid}.db"):
        path.unlink(missing_ok=True)


def clean_directory(directory: str) -> None:
    """Empty the multiprocess directory before the workers start."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for path in Path(directory).glob("*.db"):
        path.unlink(missing_ok=True)


# The *_created series double what a scrape carries and no dashboard reads them.
disable_created_metrics()
if MULTIPROCESS_DIR:
    forget_own_files(MULTIPROCESS_DIR, os.getpid())

# Requests, by route template (never the raw path) and status class.
REQUESTS = Counter(
    "mailroom_http_requests",
    "HTTP requests answered, by method, route template and status class",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "mailroom_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# What the agents do.
MESSAGES_SENT = Counter("mailroom_messages_sent", "Messages stored by POST /messages")
RECIPIENTS = Counter(
    "mailroom_message_recipients", "Recipient rows stored (POST /messages, /message_recipients)"
)
MARKED_READ = Counter(
    "mailroom_messages_marked_read", "Recipient rows marked read by PUT .../messages/mark-read"
)
# The tool calls of /mcp (each also a POST /mcp request above), by tool and outcome.
TOOL_CALLS = Counter(
    "mailroom_mcp_tool_calls",
    "MCP tool calls, by tool and outcome (ok, invalid, forbidden, not_found, conflict, ...)",
    ["tool", "outcome"],
)
TOOL_LATENCY = Histogram(
    "mailroom_mcp_tool_call_duration_seconds",
    "Time a tool call of /mcp took, by tool (check_inbox includes its wait)",
    ["tool"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
AGENTS_RETIRED = Counter(
    "mailroom_agents_retired", "Agents retired by DELETE /agents/{id}, by purge", ["purged"]
)
# The retention job (operations/retention.py).
RETENTION_DELETED = Counter(
    "mailroom_retention_deleted",
    "Rows deleted by the retention job, by kind (messages, recipients, metadata)",
    ["kind"],
)
RETENTION_BATCH_SECONDS = Histogram(
    "mailroom_retention_batch_seconds",
    "Duration of one retention batch's transaction: how long it holds its row locks",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ECHO_RUNS = Counter("mailroom_echo_runs", "Runs of echo by POST /cli/echo")
ECHO_FAILURES = Counter("mailroom_echo_failures", "Runs of echo that exited non-zero or timed out")

# Webhooks (webhooks/dispatcher.py): one count per attempt, by what came of it and the
# class of the endpoint's status ("none": no response: refused, unreachable, timed out).
WEBHOOK_ATTEMPTS = Counter(
    "mailroom_webhook_attempts",
    "Webhook delivery attempts, by outcome (delivered, retry, dead, disabled) and status class",
    ["outcome", "status_class"],
)
# The series a dashboard plots exist from the start, at 0, not from their first attempt.
for _outcome, _classes in {
    "delivered": ("2xx",),
    "retry": ("3xx", "4xx", "5xx", "none"),
    "dead": ("3xx", "4xx", "5xx", "none"),
    "disabled": ("4xx",),
}.items():
    for _class in _classes:
        WEBHOOK_ATTEMPTS.labels(_outcome, _class)
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "mailroom_webhook_attempt_duration_seconds",
    "Time one webhook attempt took, from connecting to the endpoint's status line",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_LATENCY = Histogram(
    "mailroom_webhook_delivery_latency_seconds",
    "Time from a message being stored to its recipient's endpoint answering 2xx",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400),
)
# Read from the table by every worker's dispatcher; a scrape shows the latest reading.
WEBHOOK_PENDING = Gauge(
    "mailroom_webhook_deliveries_pending",
    "Webhook deliveries waiting for their next attempt or in flight",
    multiprocess_mode="livemostrecent",
)
WEBHOOK_DEAD = Gauge(
    "mailroom_webhook_deliveries_dead",
    "Webhook deliveries that used up their retries (dead letters)",
    multiprocess_mode="livemostrecent",
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "mailroom_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery (0 when none)",
    multiprocess_mode="livemostrecent",
)

# The pool's figures, from psycopg_pool's get_stats() at scrape time.
POOL_GAUGES = {
    "pool_size": ("mailroom_db_pool_size", "Connections the pool holds (in use or idle)"),
    "pool_available": ("mailroom_db_pool_idle", "Idle connections in the pool"),
    "pool_max": ("mailroom_db_pool_max", "Most connections the pool may open"),
    "requests_waiting": ("mailroom_db_pool_waiting", "Requests waiting for a connection"),
}
POOL_COUNTERS = {
    "requests_num": ("mailroom_db_pool_requests", "Connections requested from the pool"),
    "requests_errors": (
        "mailroom_db_pool_timeouts",
        "Connection requests that failed (timed out waiting, or refused)",
    ),
}


class PoolCollector(Collector):
    """Reads the pool's statistics when scraped."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        stats = self.pool.get_stats()
        for key, (name, documentation) in POOL_GAUGES.items():
            yield GaugeMetricFamily(name, documentation, value=stats.get(key, 0))
        for key, (name, documentation) in POOL_COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=stats.get(key, 0))


def exposition(pool: AsyncConnectionPool) -> bytes:
    """The Prometheus text of every metric: this process's (or all workers'), and the pool's."""
    if MULTIPROCESS_DIR:
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, MULTIPROCESS_DIR)
    else:
        registry = REGISTRY
    pool_registry = CollectorRegistry(auto_describe=False)
    pool_registry.register(PoolCollector(pool))
    return generate_latest(registry) + generate_latest(pool_registry)
