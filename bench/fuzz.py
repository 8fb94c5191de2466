"""Schemathesis against a live service: every documented operation, fuzzed from /openapi.json.

Usage: uv run python bench/fuzz.py [examples per operation, default 50]

Starts one `uvicorn service:app` process on a database (FUZZ_DATABASE_URL, or
a throwaway embedded cluster), then runs the pinned schemathesis (dependency
group `fuzz`) on the document the service serves, with
`Authorization: Bearer $MAILROOM_ADMIN_TOKEN` (generated when unset) on every
request, every phase (stateful included). Settings per operation are in
bench/schemathesis.toml, hooks in bench/schemathesis_hooks.py. Exits with
schemathesis's code: 0 only when no check failed and no request errored.
Reports (JUnit XML, and a pytest file reproducing any failure) are left in a
temporary directory whose name is printed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import BENCH_OPTIONS, Cluster, Server

CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
HOOKS = Path(__file__).resolve().parent / "schemathesis_hooks.py"
# Stateful: sequences of calls that follow the document's links (POST /agents, /messages
# and /conversations to the operations that take the new id).
PHASES = "examples,coverage,fuzzing,stateful"
# What a response must be, whatever was sent (see docs/testing.md, "Fuzzing"):
CHECKS = [
    "not_a_server_error",  # never a 5xx (the database is up, so not even a 503)
    "status_code_conformance",  # only statuses the document lists for the operation
    "content_type_conformance",  # the documented media type
    "response_schema_conformance",  # bodies match the documented schemas, errors included
    "response_headers_conformance",  # documented response headers are present and well-formed
    "negative_data_rejection",  # input the schema says is invalid is refused with a 4xx
    # ... and input it calls valid is not 422 (but for opaque values: schemathesis_hooks.py)
    "positive_data_acceptance",
    "ensure_resource_availability",  # stateful: what a POST created, the links reach
    "unsupported_method",  # other methods are 405 with an Allow header
    "allow_header_conformance",  # ... and that header names every documented method
    "ignored_auth",  # a guarded operation refuses requests without a valid key
    "missing_required_header",  # a required header (Authorization) left out is refused
]


def main() -> int:
    examples = sys.argv[1] if len(sys.argv) > 1 else "50"
    work = Path(tempfile.mkdtemp(prefix="mailroom-fuzz-"))
    token = os.environ.get("MAILROOM_ADMIN_TOKEN") or secrets.token_urlsafe(32)
    url = os.environ.get("FUZZ_DATABASE_URL") or Cluster(work / "pgdata").url
    service = Server(
        url,
        work / "service",
        *BENCH_OPTIONS,
        MAILROOM_AUTH="required",
        MAILROOM_ADMIN_TOKEN=token,
        MAILROOM_STREAM_HEARTBEAT="0.2",
    )
    argv = [str(Path(sys.executable).parent / "schemathesis"), "--no-color"]
    argv += ["--config-file", str(CONFIG), "run", service.base_url + "/openapi.json"]
    argv += ["--header", f"Authorization: Bearer {token}"]
    argv += ["--checks", ",".join(CHECKS), "--phases", PHASES, "--max-examples", examples]
    argv += ["--workers", "2", "--seed", os.environ.get("FUZZ_SEED", str(secrets.randbelow(2**31)))]
    argv += ["--report", "junit,pytest", "--report-dir", str(work / "report")]
    try:
        service.wait_healthy()
        started = time.monotonic()
        # schemathesis filters the token out of what it prints ("[Filtered]"). It keeps
        # its caches in the working directory: the run's own, not the checkout.
        hooks = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
        code = subprocess.run(argv, cwd=work, env=hooks, check=False).returncode  # noqa: S603
        print(f"schemathesis exited {code} after {time.monotonic() - started:.0f} s")
    finally:
        service.stop()
    print(f"service log and reports: {work}")
    if "Traceback" in service.output():
        print("FAIL: the service logged a traceback (an unexpected error)")
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
