"""The application's side of completion callbacks, for the benchmark and the tests.

- ``app``/``video_ready``: a Celery app of "the application" (run it with ``celery -A
  benchmarks.callback_receiver worker -Q receiver.done``; broker from ``RECEIVER_BROKER``);
  each call records its receipt in Redis (``receiver:celery:{job}:{status}`` counts, and
  the task ids seen in ``receiver:celery:ids``).
- ``HttpReceiver``: a threaded HTTP server on loopback that verifies each Standard Webhooks
  signature itself (written from the spec, not with our signing code), counts receipts by
  ``webhook-id`` and can answer 500 to the first ``fail_first`` tries of each id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from celery import Celery

RECEIPTS = "receiver:celery"
app = Celery("receiver", broker=os.environ.get("RECEIVER_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, task_ignore_result=True)


@app.task(name="receiver.video_ready", bind=True)
def video_ready(self: Any, job_id: str, status: str) -> None:
    r = redis.Redis.from_url(os.environ["RECEIVER_RECEIPTS"])
    with r.pipeline() as pipe:
        pipe.hincrby(f"{RECEIPTS}:count", f"{job_id}:{status}", 1)
        pipe.hsetnx(f"{RECEIPTS}:first", f"{job_id}:{status}", time.time())
        pipe.sadd(f"{RECEIPTS}:ids", str(self.request.id))
        pipe.execute()


def verify_signature(secret: str, headers: Any, body: bytes, tolerance: float = 300) -> bool:
    """Standard Webhooks, by the spec: HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with
    the base64-decoded secret after "whsec_"; any "v1,<base64>" in the header may match."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "0")
    if not ts.isdigit() or abs(time.time() - int(ts)) > tolerance:
        return False
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(
        hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split()
    )


class HttpReceiver:
    """Receipts by webhook-id; bad signatures counted apart (and answered 401)."""

    def __init__(self, secret: str, fail_first: int = 0, port: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.tries: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.verified = 0
        self.first: dict[str, float] = {}
        self.event = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                code = receiver.receive(self.headers, body)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def receive(self, headers: Any, body: bytes) -> int:
        ok = verify_signature(self.secret, headers, body)
        with self.lock:
            if not ok:
                self.bad_signatures += 1
                return 401
            msg_id = headers["webhook-id"]
            self.verified += 1
            self.tries[msg_id] += 1
            if self.tries[msg_id] <= self.fail_first:
                return 500
            self.delivered[msg_id] += 1
            self.first.setdefault(msg_id, time.time())
            self.bodies[msg_id] = json.loads(body)
            self.event.notify_all()
            return 204

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` distinct notifications were delivered (False on timeout)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.delivered) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.event.wait(left)
            return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
