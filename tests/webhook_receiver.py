"""A webhook receiver for the tests, run as its own process: verifies, records, answers.

    python tests/webhook_receiver.py PORT DIRECTORY

DIRECTORY holds `secret` (the whsec_ secret to verify with; re-read on every
request, so a test can set it after registering the agent) and `plan.json`
(how to answer, re-read on every request): {"statuses": [500, 200] (one per
request, the last repeated), "delay": seconds before answering, "headers":
{...} added to the answer, "mode": "normal" | "huge" | "endless" | "redirect"}.
Every request is appended to `received.jsonl` with whether its signature
verified, checked by the `standardwebhooks` package (the spec's reference
implementation), not by mailroom's code.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook

LOCK = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    directory: Path
    count = 0
    # As a production server would: keep-alive, and no Nagle delay between the header
    # and body writes (which costs a delayed ACK, 40 ms, per request).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        plan_path = self.directory / "plan.json"
        plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
        secret_path = self.directory / "secret"
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            Webhook(secret_path.read_text().strip()).verify(body, headers)
            valid = True
        except Exception as error:  # recorded: the test asserts on it
            valid = repr(error)
        with LOCK:
            number = Receiver.count
            Receiver.count += 1
        statuses = plan.get("statuses", [200])
        status = statuses[min(number, len(statuses) - 1)]
        record = {
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "valid": valid,
            "status": status,
            "at": time.time(),
            "body": json.loads(body) if body else None,
        }
        with LOCK, (self.directory / "received.jsonl").open("a") as log:
            log.write(json.dumps(record) + "\n")
        time.sleep(plan.get("delay", 0))
        mode = plan.get("mode", "normal")
        try:
            if mode == "redirect":
                self.send_response(307)
                self.send_header("location", plan["location"])
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(status)
            for name, value in plan.get("headers", {}).items():
                self.send_header(name, value)
            if mode == "huge":
                self.send_header("content-length", str(10**10))
                self.end_headers()
                chunk = b"x" * 65536
                for _ in range(10**10 // len(chunk)):
                    self.wfile.write(chunk)
            elif mode == "endless":
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                while True:
                    self.wfile.write(b"1000\r\n" + b"y" * 4096 + b"\r\n")
                    time.sleep(0.01)
            else:
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the dispatcher hung up, as it should


def main() -> None:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    Receiver.directory = directory
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    server.daemon_threads = True
    (directory / "ready").write_text("1")
    server.serve_forever()


if __name__ == "__main__":
    main()
