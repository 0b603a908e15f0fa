"""Benchmark (issue 10): how late RabbitMQ's native delayed delivery hands over a countdown.

With ``T2V_BROKER_URL=amqp://...`` a poll's countdown waits in the broker: Celery routes it
through up to 28 TTL queues (``celery_delayed_27`` .. ``_0``, one per bit of the whole
seconds) and dead-letters it to its queue when the last TTL runs out. This sends N
countdowns of 3-40 s through the same exchanges and queues the worker uses (a vhost of
its own, deleted after) and times when each reaches a consumer against the eta it
carries (negative: early; Celery's worker then holds it until its eta). Once with the
delay queues as quorum queues (what we run), once as classic queues, and once with each
countdown sent ``AMQP_DELAY_LEAD`` early as the worker sends them (``worker.tasks``):
``starts_late_s`` is when a worker would start each against the time it was meant for.

    .venv/bin/python benchmarks/bench_delays.py --jobs 3000

Writes ``benchmarks/results/delays.json``. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, check=True, timeout=120)


def measure(
    host_port: str, queue_type: str, jobs: int, seed: int, lead: float = 0.0
) -> dict[str, Any]:
    from celery import Celery
    from kombu import Connection
    from kombu.transport.native_delayed_delivery import (
        bind_queue_to_native_delayed_delivery_exchange,
        declare_native_delayed_delivery_exchanges_and_queues,
    )

    from t2v_core.brokers import AMQP_EXCHANGE, task_queues

    vhost = f"t2v-delays-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = f"amqp://guest:guest@{host_port}/{vhost}"
    try:
        queues = task_queues(url)
        target = next(q for q in queues if q.name == "t2v.poll")
        app = Celery("delays", broker=url, set_as_current=False)
        app.conf.update(
            task_queues=queues,
            task_default_exchange=AMQP_EXCHANGE,
            task_default_exchange_type="topic",
            task_default_queue_type="quorum",
            worker_detect_quorum_queues=True,
            broker_native_delayed_delivery_queue_type=queue_type,
        )
        with Connection(url) as conn:
            declare_native_delayed_delivery_exchanges_and_queues(conn, queue_type)
            channel = conn.channel()
            for queue in queues:
                queue.bind(channel).declare()
                bind_queue_to_native_delayed_delivery_exchange(conn, queue)
        rng = random.Random(seed)
        due: dict[str, tuple[float, float]] = {}  # id: (its eta, the time it was meant for)
        started = time.time()
        for i in range(jobs):
            countdown = rng.uniform(3.0, 40.0)
            sent = app.send_task(
                "t2v.poll", args=[str(i)], countdown=countdown - lead, queue=target
            )
            now = time.time()
            due[sent.id] = (now + countdown - lead, now + countdown)
        send_s = time.time() - started
        late: list[float] = []
        starts_late: list[float] = []
        with Connection(url) as conn:

            def on_message(_body: Any, message: Any) -> None:
                times = due.pop(message.headers.get("id"), None)
                if times is not None:
                    now, (eta, meant) = time.time(), times
                    late.append(now - eta)
                    starts_late.append(max(now, eta) - meant)  # a worker holds it to its eta
                message.ack()

            with conn.Consumer(target, callbacks=[on_message], accept=["json"]) as consumer:
                consumer.qos(prefetch_count=500)
                give_up = time.time() + 120
                while due and time.time() < give_up:
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:
                        continue
    finally:
        rabbitmqctl("delete_vhost", vhost)

    return {
        "delay_queue_type": queue_type,
        "sent_early_s": lead,
        "countdowns": jobs,
        "received": len(late),
        "send_s": round(send_s, 2),
        "late_s": percentiles(late),
        "starts_late_s": percentiles(starts_late),
    }


def percentiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    at = {"min": 0.0, "p50": 0.5, "p95": 0.95, "max": 1.0}
    return {k: round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) for k, q in at.items()}


def save_runs(file: str, benchmark: str, how: str, runs: list[dict[str, Any]]) -> None:
    """Print each run and write them to ``benchmarks/results/<file>`` with the command."""
    for run in runs:
        print(json.dumps(run))
    script = Path(sys.argv[0]).name
    result = {
        "benchmark": benchmark,
        "command": shlex.join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "how": how,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / file).write_text(json.dumps(result, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rabbitmq", default="127.0.0.1:5672", help="host:port (guest/guest)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from worker.tasks import AMQP_DELAY_LEAD

    runs = [measure(args.rabbitmq, kind, args.jobs, args.seed) for kind in ("quorum", "classic")]
    runs.append(measure(args.rabbitmq, "quorum", args.jobs, args.seed, lead=AMQP_DELAY_LEAD))
    save_runs(
        "delays.json",
        "RabbitMQ native delayed delivery: countdown lateness (issue 10)",
        "countdowns 3-40 s sent by Celery's send_task into the t2v.poll quorum queue's"
        " delay chain; late = arrival at a consumer minus the message's eta; starts late ="
        " when a worker would start it (it holds an early one to its eta) minus the time it"
        " was meant for (sent_early_s: the countdown was shortened by that)",
        runs,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
