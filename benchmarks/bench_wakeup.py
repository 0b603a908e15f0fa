"""What a step's work costs in CPU when the process has been idle, against back to back.

A worker behind an account limit runs a task every second or so per process; between
them the process sleeps. This measures one step-sized unit of real work (a job row read
from PostgreSQL, two Redis round trips) back to back and after pauses of 50 ms to 1.5 s,
as process CPU time: the same code costs several times more after a pause on a shared VM
(caches and the core's clock cooled down). It is why "CPU per job" in a backlog at
0.3 jobs/s (`bench_scale.py backlog`) is far above what the same steps cost in a busy
worker (`bench_scale.py inflight`).

    python benchmarks/bench_wakeup.py [--redis-url redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_money import code_version  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    import redis as redis_lib
    from sqlalchemy import create_engine, text

    from t2v_core.db import make_engine
    from t2v_core.store import JobStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", default="wakeup.json")
    args = parser.parse_args()
    schema = "t2v_wakeup_" + uuid.uuid4().hex[:8]
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(f"{PG}?options={quote(f'-csearch_path={schema}')}")
    try:
        store = JobStore(engine)
        store.create_schema()
        r = redis_lib.Redis.from_url(args.redis_url)

        def unit() -> None:
            store.get("no-such-job")
            r.zcard("t2v-wakeup:line")
            r.get("t2v-wakeup:state")

        for _ in range(50):
            unit()  # connections open, code loaded
        rows = []
        for pause, repeat in ((0.0, 400), (0.05, 60), (0.5, 20), (1.5, 12)):
            cpu = []
            for _ in range(repeat):
                time.sleep(pause)
                t = time.process_time()
                unit()
                cpu.append(1000 * (time.process_time() - t))
            rows.append(
                {"pause_s": pause, "n": repeat, "cpu_ms_median": round(statistics.median(cpu), 3)}
            )
            print(rows[-1], flush=True)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    base = rows[0]["cpu_ms_median"] or 1e-9
    result = {
        "benchmark": "CPU of one step-sized unit (a row read, two Redis round trips) after a pause",
        "command": "python benchmarks/bench_wakeup.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "code": code_version(),
        "rows": rows,
        "ratio_after_pause": {
            str(row["pause_s"]): round(row["cpu_ms_median"] / base, 2) for row in rows
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
