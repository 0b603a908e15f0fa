"""Fuzz target: the webhook receiver (``worker/webhook.py``), driven over ASGI.

A real Starlette app from ``create_app`` with a real SQLite ``JobStore`` and fakeredis,
called over ASGI exactly as a server would (``call_asgi``: byte-exact headers, the body in
one or several chunks; starlette's TestClient needs httpx, not in this venv), gets any
body bytes under any Content-Type / Content-Length headers (or none: chunked).
Rule: the answer is a 2xx or 4xx JSON object, never a 500 (an unhandled exception); and a
webhook only ever causes what it may cause (``accept_webhook``):

* a job whose submit answer was lost (`submitting`, or `queued` with a submit sent, or
  `failed` as ``submit_unknown``; no provider id) may move to `processing`, adopting the
  provider id the body names, normalised like a submit answer's id;
* a `cancelled` job without a provider id may record the one named;
* nothing else changes state or provider id; a job the body does not name never changes;
  a poll is scheduled only for the job named.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import fakeredis
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette

from t2v_core.db import make_engine
from t2v_core.names import TASK_POLL
from t2v_core.problems import ErrorKind
from t2v_core.states import JobStatus
from t2v_core.store import JobStore, new_job_id
from tests.fuzz.budget import classified, fuzz
from tests.fuzz.strategies import HOSTILE_BODIES, JSON_VALUES, ODD_NUMBERS, ODD_STRINGS, dumps
from worker.modelslab.answers import as_id
from worker.webhook import MAX_BODY, create_app

SECRET = "fuzz-webhook-secret-0123456789"

#: The jobs every example starts from: (name, status, provider id, submits, error kind).
SEEDS: list[tuple[str, JobStatus, str | None, int, str | None]] = [
    ("fresh", JobStatus.QUEUED, None, 0, None),
    ("requeued", JobStatus.QUEUED, None, 1, None),
    ("submitting", JobStatus.SUBMITTING, None, 1, None),
    ("processing", JobStatus.PROCESSING, "777", 1, None),
    ("cancelled", JobStatus.CANCELLED, None, 1, None),
    ("cancelled_paid", JobStatus.CANCELLED, "778", 1, None),
    ("lost", JobStatus.FAILED, None, 3, ErrorKind.SUBMIT_UNKNOWN.value),
    ("failed", JobStatus.FAILED, None, 1, ErrorKind.PERMANENT.value),
    ("succeeded", JobStatus.SUCCEEDED, "779", 1, None),
    ("parked", JobStatus.PARKED, "780", 1, None),
]
LOST = {"requeued", "submitting", "lost"}


def call_asgi(
    app: Starlette, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, bytes]:
    """POST ``chunks`` to ``path`` through the ASGI app; (status, body) of its answer.

    An exception inside the app propagates (with its traceback): in production that is
    a 500."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("hooks.example", 443),
        "client": ("203.0.113.9", 40000),
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), body


@dataclass
class Rig:
    store: JobStore
    app: Starlette
    scheduled: list[tuple[str, str, float]] = field(default_factory=list)

    def seed_jobs(self) -> dict[str, str]:
        """A fresh copy of SEEDS; returns their ids by name."""
        ids: dict[str, str] = {}
        rows = []
        for name, status, pid, submits, kind in SEEDS:
            row = self.store.insert_values(
                request={"prompt": name},
                model_requested=None,
                model_effective="wan2.2",
                job_id=new_job_id(),
            )
            row.update(status=status.value, provider_id=pid, submit_count=submits, error_kind=kind)
            rows.append(row)
            ids[name] = row["id"]
        self.store.insert_many(rows)
        return ids


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    path = tmp_path_factory.mktemp("webhook") / "t2v.sqlite3"
    store = JobStore(make_engine(f"sqlite:///{path}"))
    store.create_schema()
    holder: list[Rig] = []

    def schedule(task: str, job_id: str, countdown: float) -> None:
        holder[0].scheduled.append((task, job_id, countdown))

    app = create_app(
        secret=SECRET, store=store, redis=fakeredis.FakeRedis(), schedule=schedule, deadline=600.0
    )
    holder.append(Rig(store, app))
    yield holder[0]
    store.engine.dispose()


ids = st.one_of(
    st.integers(),
    st.text(max_size=12),
    st.floats(),
    st.none(),
    st.booleans(),
    ODD_NUMBERS,
    ODD_STRINGS,
    JSON_VALUES,
)
webhook_objects = st.fixed_dictionaries(
    {},
    optional={
        # A name from SEEDS is replaced by that job's id in the test.
        "track_id": st.one_of(st.sampled_from([s[0] for s in SEEDS]).map(lambda n: f"@{n}"), ids),
        "id": ids,
        "status": st.one_of(
            st.sampled_from(["success", "failed", "processing", "error"]), JSON_VALUES
        ),
        "output": JSON_VALUES,
        "meta": JSON_VALUES,
    },
)
bodies = st.one_of(
    webhook_objects.map(lambda d: ("json", d)),
    webhook_objects.map(lambda d: ("json", d)),
    webhook_objects.map(lambda d: ("json", d)),
    webhook_objects.map(lambda d: ("cut", d)),
    st.binary(max_size=200).map(lambda b: ("raw", b)),
    JSON_VALUES.map(lambda v: ("raw", dumps(v))),
    HOSTILE_BODIES.map(lambda b: ("raw", b)),
    st.just(("big", MAX_BODY)),  # built in the test: a 256 kB repr would drown a report
)
content_types = st.one_of(
    st.none(),
    st.just("application/json"),
    st.none(),
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/problem+json",
            "APPLICATION/JSON",
            "",
            ";",
            "multipart/x",
        ]
    ),
    st.text(max_size=20).map(lambda t: t.encode("latin-1", "replace")),
)
lengths = st.one_of(
    st.sampled_from(["actual", "none", "chunked"]),
    st.sampled_from(["actual", "none", "chunked"]),
    st.sampled_from(
        [
            b"0",
            b"-1",
            b"1e3",
            b" 5",
            b"\xb2",
            b"\xb9\xb3",
            b"9" * 5000,
            b"",
            b"262145",
            b"00000000000000000000000012",
            b"+1",
            b"0x10",
        ]
    ),
    st.integers(min_value=0, max_value=2**70).map(lambda n: str(n).encode()),
)


def body_bytes(kind: str, value: Any, job_ids: dict[str, str], cut_at: int) -> bytes:
    if kind == "raw":
        return bytes(value)
    if kind == "big":
        return b'{"track_id":"x","pad":"' + b"a" * int(value) + b'"}'

    named = dict(value)
    track = named.get("track_id")
    if isinstance(track, str) and track.startswith("@") and track[1:] in job_ids:
        named["track_id"] = job_ids[track[1:]]
    raw = dumps(named)
    return raw[: cut_at % len(raw)] if kind == "cut" else raw  # cut: a dropped connection


def snapshot(store: JobStore, job_ids: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    got = store.get_many(list(job_ids.values()))
    return {name: (got[i].status.value, got[i].provider_id) for name, i in job_ids.items()}


@fuzz("webhook", 500)
@given(
    body=bodies,
    ctype=content_types,
    length=lengths,
    right_secret=st.integers(0, 9).map(lambda n: n != 9),
    cut_at=st.integers(min_value=0, max_value=2**20),
)
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(
    body=("big", MAX_BODY), ctype=None, length=b"\xb2", right_secret=True, cut_at=0
)  # Content-Length "²": isdigit() but not int(): 500
@example(
    body=("raw", b"{}"), ctype=None, length=b"9" * 5000, right_secret=True, cut_at=0
)  # 5,000 digits: over int()'s limit: 500
@example(
    body=("raw", b"[" * 100_000), ctype=None, length="actual", right_secret=True, cut_at=0
)  # RecursionError: 500
# T2V_FUZZ_SEED=1 T2V_FUZZ_SCALE=8: a lost submit adopted "1.0", a fetch knows "1".
@example(
    body=("json", {"track_id": "@requeued", "id": 1.0}),
    ctype=None,
    length="actual",
    right_secret=True,
    cut_at=0,
)
@example(
    body=("json", {"track_id": "@submitting", "id": {"a": 1}}),
    ctype=None,
    length="actual",
    right_secret=True,
    cut_at=0,
)
@example(
    body=("json", {"track_id": "@lost", "id": " 42 "}),
    ctype=None,
    length="none",
    right_secret=True,
    cut_at=0,
)
# `make fuzz` seed 3776541884: a lone surrogate could not become a Redis key: 500.
@example(
    body=("json", {"track_id": "\ud800x"}), ctype=None, length="actual", right_secret=True, cut_at=0
)
@example(
    body=("json", {"track_id": "@processing", "id": "\udfff", "status": "\ud800"}),
    ctype=None,
    length="actual",
    right_secret=True,
    cut_at=0,
)
def test_webhook_any_body(
    rig: Rig,
    body: tuple[str, Any],
    ctype: str | bytes | None,
    length: str | bytes,
    right_secret: bool,
    cut_at: int,
) -> None:
    job_ids = rig.seed_jobs()
    raw = body_bytes(*body, job_ids, cut_at)
    before = snapshot(rig.store, job_ids)
    rig.scheduled.clear()
    headers: list[tuple[bytes, bytes]] = []
    if ctype is not None:
        headers.append((b"content-type", ctype if isinstance(ctype, bytes) else ctype.encode()))
    chunks = [raw]
    if length == "chunked":
        chunks = [raw[: len(raw) // 2], raw[len(raw) // 2 :]]
        headers.append((b"transfer-encoding", b"chunked"))
    elif length == "actual":
        headers.append((b"content-length", str(len(raw)).encode()))
    elif isinstance(length, bytes):
        headers.append((b"content-length", length))
    secret = SECRET if right_secret else SECRET[::-1]
    status, text = call_asgi(rig.app, f"/webhook/{secret}", headers, chunks)

    classified("test_webhook_any_body", str(status))
    assert 200 <= status < 500, text
    answer = json.loads(text)
    assert isinstance(answer, dict)

    after = snapshot(rig.store, job_ids)
    try:
        payload = json.loads(raw) if status == 200 else None
    except (ValueError, RecursionError):
        payload = None
    payload = payload if isinstance(payload, dict) else {}
    track = payload.get("track_id")
    named = [n for n, i in job_ids.items() if i in (str(track or ""), as_id(track))]
    wanted = as_id(payload.get("id"))
    for name, (status, pid) in after.items():
        was_status, was_pid = before[name]
        if (status, pid) == (was_status, was_pid):
            continue
        assert name in named, f"{name} changed but the webhook did not name it"
        assert was_pid is None, f"{name}: a paid render's id was overwritten"
        assert wanted is not None and pid == wanted, (
            f"{name}: adopted provider id {pid!r} from id={payload.get('id')!r}"
        )
        if name in LOST:
            assert status == JobStatus.PROCESSING.value
        else:
            assert name == "cancelled" and status == was_status, (
                f"{name}: {was_status} -> {status} is not a webhook's to cause"
            )
    for task, job_id, _ in rig.scheduled:
        assert task == TASK_POLL and any(job_ids[n] == job_id for n in named)
