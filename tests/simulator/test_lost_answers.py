"""Answers lost after the job was created (paid, id never learnt) or before (nothing created).

Every test talks to the real ``python -m simulator`` over HTTP with plain ``requests`` (no
session, no retries), and judges what the provider did by ``/_sim/stats``: ``created``
(jobs really created, i.e. paid generations, by track_id), ``lost_after_create`` (which
submits lost their answer, and how) and ``lost_before_create``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from typing import Any

import pytest
import requests

from tests.simulator.simhelpers import KEY, Sim

SMALL: dict[str, Any] = {"num_frames": 2, "width": 32, "height": 32}


def post_submit(sim: Sim, track_id: str, timeout: float = 30) -> requests.Response:
    body: dict[str, Any] = {
        "key": KEY,
        "prompt": f"lost answer {track_id}",
        "track_id": track_id,
        **SMALL,
    }
    return requests.post(f"{sim.api}/video/text2video", json=body, timeout=timeout)


def settle(sim: Sim, timeout: float = 20) -> None:
    """Wait while 4 jobs are processing, so a run of submits never meets the queue limit (5)."""
    deadline = time.monotonic() + timeout
    while sum(j["status"] == "processing" for j in sim.stats()["jobs"].values()) >= 4:
        assert time.monotonic() < deadline, "jobs still processing"
        time.sleep(0.05)


def outcome(sim: Sim, track_id: str, timeout: float) -> str:
    """How the client saw its submit: reset / slow (timed out) / cut / answered."""
    try:
        r = post_submit(sim, track_id, timeout)
    except requests.exceptions.Timeout:
        return "slow"
    except requests.exceptions.ConnectionError:
        return "reset"
    finally:
        settle(sim)
    assert r.status_code == 200
    try:
        r.json()
    except requests.exceptions.JSONDecodeError:
        return "cut"
    return "answered"


def job_of(stats: dict[str, Any], track_id: str) -> tuple[str, dict[str, Any]]:
    [(job_id, job)] = [(i, j) for i, j in stats["jobs"].items() if j["track_id"] == track_id]
    return job_id, job


def test_reset_after_create_is_a_connection_error_but_the_job_exists(sim: Sim) -> None:
    sim.faults(lost_after_create_share=1.0, lost_after_create_mode="reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        post_submit(sim, "r1")
    stats = sim.stats()
    assert stats["submits"]["by_track_id"] == {"r1": 1}
    assert stats["created"] == {"total": 1, "by_key": {KEY: 1}, "by_track_id": {"r1": 1}}
    assert stats["lost_after_create"] == {
        "total": 1,
        "by_key": {KEY: 1},
        "by_track_id": {"r1": 1},
        "by_mode": {"reset": 1},
    }
    assert stats["lost_before_create"]["total"] == 0
    assert stats["injected"]["lost_after_create_reset"] == 1
    job_id, job = job_of(stats, "r1")
    assert job["answer_lost"] == "reset"
    assert sim.wait_status(job_id)["status"] == "success"  # it was generated (and paid)
    # the server is fine, and the other answers are not lost once the fault is off
    sim.faults(lost_after_create_share=0.0)
    r = post_submit(sim, "r2")
    assert r.status_code == 200 and r.json()["status"] == "processing"
    assert sim.stats()["created"]["by_track_id"] == {"r1": 1, "r2": 1}


def test_cut_after_create_is_a_200_with_half_a_json_body(sim: Sim) -> None:
    sim.faults(lost_after_create_share=1.0, lost_after_create_mode="cut")
    r = post_submit(sim, "c1")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.text.startswith('{"status":"processing"')
    with pytest.raises(requests.exceptions.JSONDecodeError):
        r.json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    stats = sim.stats()
    assert stats["created"]["by_track_id"] == {"c1": 1}
    assert stats["lost_after_create"]["by_mode"] == {"cut": 1}
    assert stats["injected"]["lost_after_create_cut"] == 1
    assert stats["injected"]["truncated_json"] == 0  # its own fault, not truncated_json_share
    assert job_of(stats, "c1")[1]["answer_lost"] == "cut"
    # the job exists, so the same body sent again within the window is refused as spam
    sim.faults(lost_after_create_share=0.0)
    again = post_submit(sim, "c1")
    assert again.status_code == 429 and again.json()["message"] == "Rate limit exceeded"
    assert sim.stats()["created"]["by_track_id"] == {"c1": 1}


def test_slow_after_create_times_the_client_out_while_the_job_runs(sim: Sim) -> None:
    sim.faults(lost_after_create_share=1.0, lost_after_create_mode="slow", lost_slow_seconds=3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        post_submit(sim, "s1", timeout=1)
    stats = sim.stats()  # the answer is still on its way, the job already exists
    assert stats["created"]["by_track_id"] == {"s1": 1}
    assert stats["lost_after_create"]["by_mode"] == {"slow": 1}
    job_id, job = job_of(stats, "s1")
    assert job["answer_lost"] == "slow"
    assert sim.wait_status(job_id)["status"] == "success"


def test_slow_after_create_still_answers_a_patient_client(sim: Sim) -> None:
    sim.faults(lost_after_create_share=1.0, lost_after_create_mode="slow", lost_slow_seconds=1)
    r = post_submit(sim, "s2", timeout=30)
    assert r.status_code == 200
    body = r.json()  # the whole answer, late
    job_id, job = job_of(sim.stats(), "s2")
    assert str(body["id"]) == job_id and body["meta"]["track_id"] == "s2"
    assert job["answer_lost"] == "slow"


def test_mixed_picks_each_mode_with_seeded_dice(sim: Sim) -> None:
    track_ids = [f"m{i}" for i in range(11)]  # with the session's seed all three modes come

    def run() -> list[str]:
        sim.faults(lost_after_create_share=1.0, lost_after_create_mode="mixed", lost_slow_seconds=3)
        seen = [outcome(sim, t, timeout=1) for t in track_ids]
        stats = sim.stats()
        assert stats["created"]["by_track_id"] == dict.fromkeys(track_ids, 1)
        assert stats["lost_after_create"]["by_track_id"] == dict.fromkeys(track_ids, 1)
        assert [job_of(stats, t)[1]["answer_lost"] for t in track_ids] == seen
        assert sum(stats["lost_after_create"]["by_mode"].values()) == len(track_ids)
        return seen

    first = run()
    assert set(first) == {"cut", "slow", "reset"}
    sim.reset()
    assert run() == first  # same seed, same order of requests: the same losses


def test_lost_after_create_share_loses_only_some_answers_reproducibly(sim: Sim) -> None:
    track_ids = [f"h{i}" for i in range(12)]

    def run() -> list[str]:
        sim.faults(lost_after_create_share=0.5, lost_after_create_mode="reset")
        seen = [outcome(sim, t, timeout=30) for t in track_ids]
        stats = sim.stats()
        assert stats["created"]["total"] == len(track_ids)  # every one was created...
        lost = sorted(t for t, o in zip(track_ids, seen, strict=True) if o == "reset")
        assert sorted(stats["lost_after_create"]["by_track_id"]) == lost  # ...some unheard
        return seen

    first = run()
    assert set(first) == {"reset", "answered"}
    sim.reset()
    assert run() == first


def test_reset_before_create_creates_nothing(sim: Sim) -> None:
    sim.faults(lost_before_create_share=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        post_submit(sim, "b1")
    stats = sim.stats()
    assert stats["submits"]["by_track_id"] == {"b1": 1}
    assert stats["created"]["total"] == 0 and stats["jobs"] == {}
    assert stats["lost_before_create"] == {"total": 1, "by_key": {KEY: 1}, "by_track_id": {"b1": 1}}
    assert stats["lost_after_create"]["total"] == 0
    assert stats["injected"]["lost_before_create"] == 1
    # nothing was remembered either: the very same body is accepted, not refused as spam
    sim.faults(lost_before_create_share=0.0)
    r = post_submit(sim, "b1")
    assert r.status_code == 200 and r.json()["meta"]["track_id"] == "b1"
    stats = sim.stats()
    assert stats["submits"]["by_track_id"] == {"b1": 2}
    assert stats["created"]["by_track_id"] == {"b1": 1}


def test_before_and_after_create_look_alike_to_the_client_but_not_in_stats(sim: Sim) -> None:
    sim.faults(lost_before_create_share=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        post_submit(sim, "before")
    sim.faults(
        lost_before_create_share=0.0, lost_after_create_share=1.0, lost_after_create_mode="reset"
    )
    with pytest.raises(requests.exceptions.ConnectionError):
        post_submit(sim, "after")
    stats = sim.stats()
    assert stats["submits"]["by_track_id"] == {"before": 1, "after": 1}
    assert stats["created"]["by_track_id"] == {"after": 1}
    assert stats["lost_before_create"]["by_track_id"] == {"before": 1}
    assert stats["lost_after_create"]["by_track_id"] == {"after": 1}


def test_a_resubmit_after_a_lost_answer_pays_twice(sim: Sim) -> None:
    sim.faults(lost_after_create_share=1.0, lost_after_create_mode="reset")
    body: dict[str, Any] = {"key": KEY, "prompt": "pay twice", "track_id": "twice", **SMALL}
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{sim.api}/video/text2video", json=body, timeout=30)
    sim.faults(lost_after_create_share=0.0)
    spam = requests.post(f"{sim.api}/video/text2video", json=body, timeout=30)
    assert spam.status_code == 429 and "spam filter" in spam.json()["tips"]  # same body: refused
    r = requests.post(f"{sim.api}/video/text2video", json={**body, "seed": 7}, timeout=30)
    assert r.status_code == 200
    stats = sim.stats()
    assert stats["submits"]["by_track_id"] == {"twice": 3}
    assert stats["created"]["by_track_id"] == {"twice": 2}  # two paid generations, one track
    assert stats["lost_after_create"]["by_track_id"] == {"twice": 1}
    lost = sorted(j["answer_lost"] or "" for j in stats["jobs"].values())
    assert lost == ["", "reset"]


def test_reset_in_process_raises_connection_dropped() -> None:
    """Without uvicorn there is no transport to reset: the handler raises instead."""
    from simulator.app import ConnectionDropped, create_app
    from simulator.config import SimConfig

    app = create_app(SimConfig(keys=(KEY,), faults={"lost_before_create_share": 1.0}))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/api/v6/video/text2video",
        "raw_path": b"/api/v6/video/text2video",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "scheme": "http",
        "server": ("sim", 80),
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> dict[str, Any]:
        return {
            "type": "http.request",
            "body": b'{"key": "sim-key", "prompt": "x"}',
            "more_body": False,
        }

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            with pytest.raises(ConnectionDropped):
                await app(scope, receive, send)
            assert app.state.engine.stats.lost_before_create.total == 1

    asyncio.run(scenario())
