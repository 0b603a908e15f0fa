"""``t2v_core.store_templates``: the steps' hot writes as statements built once per shape.

Templates change how a write is sent, never what it writes: the same story of claims,
moves and updates leaves the same row with templates as without them (every value a
parameter, increments inside the statement), on SQLite and on PostgreSQL. A value no
template can hold falls back to a statement built for the call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func

from t2v_core import store_templates
from t2v_core.db import make_engine
from t2v_core.records import JobRecord, JobRow
from t2v_core.states import JobStatus
from t2v_core.store import JobStore
from t2v_core.store_templates import PARAM, claim_statement, split_values

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_values_split_into_a_shape_and_parameters() -> None:
    shape, params = split_values(
        {
            "poll_count": JobRow.poll_count + 1,
            "error": "late",
            "submit_count": JobRow.submit_count - 2,
        }
    ) or ((), {})
    assert shape == (("error", PARAM), ("poll_count", 1), ("submit_count", -2))
    assert params == {"p_error": "late"}


@pytest.mark.parametrize(
    "value",
    [
        JobRow.retry_count + 1,  # another column's increment
        JobRow.poll_count + JobRow.retry_count,
        JobRow.poll_count * 2,
        func.coalesce(JobRow.poll_count, 0),
    ],
)
def test_any_other_expression_has_no_template(value: Any) -> None:
    assert split_values({"poll_count": value}) is None


def test_one_statement_per_shape_and_none_shared_between_shapes() -> None:
    one = split_values({"poll_count": JobRow.poll_count + 1, "error": "a"})
    again = split_values({"poll_count": JobRow.poll_count + 1, "error": "b"})
    two = split_values({"poll_count": JobRow.poll_count + 2, "error": "a"})
    assert one and again and two
    first = claim_statement("processing", one[0], True)
    assert claim_statement("processing", again[0], True) is first
    assert claim_statement("processing", two[0], True) is not first  # +2 is not +1
    assert claim_statement("queued", one[0], True) is not first
    assert claim_statement("processing", one[0], False) is not first


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def story(store: JobStore, clock: Clock, job_id: str) -> list[Any]:
    """Writes a job's life takes, each kind of hot write once; what each returned."""
    out: list[Any] = []
    clock.now = T0
    out.append(
        store.transition(
            job_id,
            JobStatus.SUBMITTING,
            expect=[JobStatus.QUEUED],
            submit_count=JobRow.submit_count + 1,
        )
    )
    clock.now += timedelta(seconds=1)
    out.append(
        store.move_record(
            job_id, JobStatus.PROCESSING, provider_id=f"p-{job_id[:6]}", eta_seconds=30.0
        )
    )
    clock.now += timedelta(seconds=60)  # past the queued row's grace: the step is due
    out.append(
        store.claim_record(
            job_id,
            JobStatus.PROCESSING,
            lease=60,
            slack=1,
            touch=False,
            poll_count=JobRow.poll_count + 1,
        )
    )
    out.append(store.claim(job_id, JobStatus.PROCESSING, lease=60))  # not due: refused
    out.append(
        store.update_if(job_id, [JobStatus.PROCESSING], next_check_at=clock.now, error="slow")
    )
    clock.now += timedelta(seconds=2)
    out.append(store.claim(job_id, JobStatus.PROCESSING, lease=60, slack=5))
    out.append(store.transition(job_id, JobStatus.SUCCEEDED, expect=[JobStatus.QUEUED]))  # refused
    out.append(
        store.move_record(
            job_id, JobStatus.DOWNLOADING, download_attempts=JobRow.download_attempts + 1
        )
    )
    clock.now += timedelta(seconds=3)
    # A final state: the callback is due in the same statement (the job has a callback URL).
    out.append(store.transition(job_id, JobStatus.SUCCEEDED, outputs=[]))
    # No template for this value: built for the call, same result.
    out.append(
        store.update_if(
            job_id,
            [JobStatus.SUCCEEDED],
            callback_delivered_at=func.coalesce(JobRow.callback_delivered_at, clock.now),
        )
    )
    return out


def comparable(value: Any) -> Any:
    if isinstance(value, JobRecord):
        return {k: v for k, v in value.model_dump().items() if k not in ("id", "provider_id")}
    return value


def test_a_story_of_writes_leaves_the_same_row_with_templates_and_without(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    engine = make_engine(database_url)
    notified: list[str] = []
    store = JobStore(engine, now=clock, notify=notified.append)
    store.create_schema()
    ids = []
    for _ in range(2):
        row = store.insert_values(
            request={"prompt": "a fox", "model_id": "wan2.2"},
            model_requested="wan2.2",
            model_effective="wan2.2",
            now=T0,
            callbacks={"callback_url": "https://app.example/hook"},
        )
        store.insert_one(row)
        ids.append(str(row["id"]))

    with_templates = story(store, clock, ids[0])
    with monkeypatch.context() as m:
        m.setattr(store_templates, "split_values", lambda values: None)
        without = story(store, clock, ids[1])

    assert [comparable(v) for v in with_templates] == [comparable(v) for v in without]
    assert with_templates[3] is False and with_templates[6] is False  # refusals refused
    a, b = store.get(ids[0]), store.get(ids[1])
    assert a is not None and b is not None
    assert comparable(a) == comparable(b)
    assert (a.status, a.poll_count, a.submit_count, a.download_attempts) == (
        JobStatus.SUCCEEDED,
        1,
        1,
        1,
    )
    assert a.callback_due_at == T0 + timedelta(seconds=66) and a.callback_seq == 1
    assert notified == ids  # both moves to succeeded made the callback due
    engine.dispose()
