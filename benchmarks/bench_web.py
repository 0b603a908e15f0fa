"""`t2v web`'s list page with 100,000 job rows: server time per page, SQLite and PostgreSQL.

Fills a fresh table (a SQLite file; a throwaway PostgreSQL schema) with ``--rows`` jobs of
every state over 30 days, then asks the app for list pages in-process (Starlette's
TestClient: the ASGI app's whole work, query + counts + Redis slot read + template, without
a network hop; the state counts recomputed on every request, ``T2V_WEB_COUNTS_TTL=0``, the
worst case) and for the same pages through ``/api/v1/jobs``. Each figure is the median
and p95 of ``--repeat`` requests after one warm-up.

Pages: the first page; a page half way down (by keyset cursor: what "older" reaches);
filtered by a common state, a rare state, a model, a common prompt word, and a prompt word
no row has (the worst case: every row's prompt is read).

    .venv/bin/python benchmarks/bench_web.py [--rows 100000] [--repeat 30]

Writes ``benchmarks/results/web.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlette.testclient import TestClient  # noqa: E402

from t2v_core.db import dispose_engines, get_engine  # noqa: E402
from t2v_core.pages import encode_cursor  # noqa: E402
from t2v_core.records import JobRow  # noqa: E402
from t2v_core.store import JobStore  # noqa: E402
from web.app import create_app  # noqa: E402
from web.settings import WebSettings  # noqa: E402

REDIS = os.environ.get("T2V_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
PG = os.environ.get("T2V_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULT = REPO / "benchmarks" / "results" / "web.json"
STATES = [("succeeded", 70), ("failed", 5), ("parked", 1), ("queued", 12), ("processing", 8)]
STATES += [("downloading", 2), ("cancelled", 2)]
WORDS = [
    "fox",
    "owl",
    "kite",
    "boat",
    "lighthouse",
    "tram",
    "windmill",
    "harbour",
    "meadow",
    "glacier",
    "city",
    "rain",
]


def fill(store: JobStore, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    names = [s for s, _ in STATES]
    weights = [w for _, w in STATES]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batch: list[dict[str, Any]] = []
    for i in range(rows):
        created = start + timedelta(seconds=i * 30 * 86400 / rows + rng.random())
        prompt = f"a {rng.choice(WORDS)} and a {rng.choice(WORDS)}, shot {i}"
        model = "wan2.2" if rng.random() < 0.8 else "cogvideox"
        row = store.insert_values(
            request={"prompt": prompt, "model_id": model, "num_frames": 25},
            model_requested=model,
            model_effective=model,
            now=created,
        )
        status = rng.choices(names, weights)[0]
        # executemany wants the same columns in every row
        row.update(status=status, processing_at=None, downloading_at=None, succeeded_at=None)
        if status == "succeeded":
            job = row["id"]
            base = f"file:///srv/videos/jobs/{job[:2]}/{job}/output-0"
            row["outputs"] = [
                {
                    "index": 0,
                    "source_url": f"https://cdn.example/{job}.mp4",
                    "storage_uri": base + ".mp4",
                    "poster_uri": base + ".poster.jpg",
                    "bytes": 400_000,
                    "sha256": uuid.uuid4().hex * 2,
                    "content_type": "video/mp4",
                    "frames": 25,
                    "width": 512,
                    "height": 512,
                }
            ]
            row["processing_at"] = created + timedelta(seconds=2)
            row["downloading_at"] = created + timedelta(seconds=40)
            row["succeeded_at"] = created + timedelta(seconds=42)
        batch.append(row)
        if len(batch) == 5000:
            store.insert_many(batch)
            batch = []
    store.insert_many(batch)


def timed(client: TestClient, path: str, repeat: int) -> dict[str, Any]:
    answer = client.get(path)  # warm-up (and a check)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - start)
        assert answer.status_code == 200
    times.sort()
    return {
        "path": path,
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1] * 1000, 2),
        "bytes": len(answer.content),
    }


def run(url: str, rows: int, repeat: int, storage: str) -> dict[str, Any]:
    store = JobStore(get_engine(url))
    store.create_schema()
    start = time.perf_counter()
    fill(store, rows)
    filled = time.perf_counter() - start
    with store.engine.connect() as conn:
        deep = conn.execute(
            select(JobRow.created_at, JobRow.id)
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .offset(rows // 2)
            .limit(1)
        ).one()
    cursor = quote(encode_cursor(deep.created_at, deep.id))
    settings = WebSettings(  # type: ignore[call-arg]
        database_url=url, broker_url=REDIS, storage_url=storage, web_counts_ttl=0, _env_file=None
    )
    client = TestClient(create_app(settings))
    pages = {
        "first_page": "/",
        "deep_page_half_way": f"/?cursor={cursor}",
        "state_succeeded": "/?state=succeeded",
        "state_parked_rare": "/?state=parked",
        "model_cogvideox": "/?model=cogvideox",
        "prompt_common_word": "/?q=lighthouse",
        "prompt_no_match_full_scan": "/?q=zeppelin",
        "api_first_page": "/api/v1/jobs",
        "api_deep_page": f"/api/v1/jobs?cursor={cursor}",
    }
    result = {name: timed(client, path, repeat) for name, path in pages.items()}
    client.close()
    return {"rows": rows, "fill_seconds": round(filled, 1), "pages": result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "how": "in-process ASGI requests (Starlette TestClient): query, counts, Redis slot"
        " read and template; median and p95 of --repeat after a warm-up; 50 rows a page",
        "command": f"benchmarks/bench_web.py --rows {args.rows} --repeat {args.repeat}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        out["sqlite"] = run(url, args.rows, args.repeat, str(Path(tmp) / "videos"))
        dispose_engines()
        print(json.dumps(out["sqlite"], indent=1), flush=True)
        schema = "t2v_bench_web_" + uuid.uuid4().hex[:8]
        admin = create_engine(PG)
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            pg = f"{PG}?options={quote(f'-csearch_path={schema}')}"
            out["postgresql"] = run(pg, args.rows, args.repeat, str(Path(tmp) / "videos"))
            print(json.dumps(out["postgresql"], indent=1), flush=True)
        finally:
            dispose_engines()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
