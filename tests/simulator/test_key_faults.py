"""Faults of a shared key and of a proxy in front of fetch: another system holding queued-request
slots (429), fetch-only 401 and fetch-only HTML 5xx; their validation, at start and at run time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator.config import parse_config
from simulator.faults import DEFAULT_FAULTS
from tests.simulator.simhelpers import KEY, OTHER_KEY, Sim, SimProcess, start_simulator

LIMITED = "Rate limit exceeded. Maximum 5 queued requests allowed."  # the session's limit is 5


def accepted(r: requests.Response) -> int:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "processing"
    return int(body["id"])


def test_external_holders_take_slots_of_every_key(sim: Sim) -> None:
    sim.faults(external_holders=4, never_finish_share=1.0)  # our jobs hold their slots too
    accepted(sim.submit(track_id="e1"))
    r = sim.submit(track_id="e2")  # the first is still queued: 1 + 4 held elsewhere = 5
    assert r.status_code == 429
    assert r.json() == {"status": "error", "message": LIMITED, "retry_after": 30}
    accepted(sim.submit(key=OTHER_KEY, track_id="o1"))  # per key: the other key has its slot
    stats = sim.stats()
    assert stats["injected"]["queue_limited"] == 1
    assert stats["injected"]["queue_limited_external"] == 1
    assert stats["created"]["by_track_id"] == {"e1": 1, "o1": 1}
    assert stats["submits"]["by_track_id"]["e2"] == 1


def test_external_holders_change_at_once(sim: Sim) -> None:
    sim.faults(external_holders=5, never_finish_share=1.0, retry_after=7)
    r = sim.submit(track_id="x0")
    assert r.status_code == 429 and r.json()["retry_after"] == 7  # nothing left for us
    sim.faults(external_holders=3)
    accepted(sim.submit(track_id="x1"))
    accepted(sim.submit(track_id="x2"))
    assert sim.submit(track_id="x3").status_code == 429
    sim.faults(external_holders=0)  # the other system let go: capacity is back at once
    for i in range(3, 6):
        accepted(sim.submit(track_id=f"x{i}"))
    r = sim.submit(track_id="x6")  # now our own five fill the key
    assert r.status_code == 429 and r.json()["message"] == LIMITED
    sim.faults(external_holders=2)  # raising it never cancels what was already accepted
    stats = sim.stats()
    assert stats["created"]["total"] == 5
    assert all(j["status"] == "processing" for j in stats["jobs"].values())
    assert stats["injected"]["queue_limited"] == 3
    assert stats["injected"]["queue_limited_external"] == 2  # x0 and x3; x6 was our own


def test_external_holders_keep_error_as_200(sim: Sim) -> None:
    sim.faults(external_holders=5, error_as_200=True)
    r = sim.submit()
    assert r.status_code == 200
    assert r.json() == {"status": "error", "message": LIMITED, "retry_after": 30}


def test_fetch_401_share_refuses_fetches_only(sim: Sim) -> None:
    sim.faults(fetch_401_share=1.0, error_as_200=True)  # a proxy's 401 is a real 401
    job_id = accepted(sim.submit(track_id="f1", num_frames=2, width=32, height=32))
    for target in (job_id, 1):
        r = sim.fetch(target)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"status": "error", "message": "Invalid API key"}
    stats = sim.stats()
    assert stats["injected"]["fetch_401"] == 2
    assert stats["fetches"]["by_track_id"] == {"f1": 1}
    sim.faults(fetch_401_share=0.0)
    assert sim.wait_status(job_id)["status"] == "success"  # the job was fine all along


def test_fetch_5xx_share_is_html_on_fetch_only(sim: Sim) -> None:
    sim.faults(fetch_5xx_share=1.0)
    job_id = accepted(sim.submit(track_id="g1", num_frames=2, width=32, height=32))
    for _ in range(3):
        r = sim.fetch(job_id)
        assert r.status_code in (500, 502, 503)
        assert r.headers["content-type"].startswith("text/html")
        assert "<center>nginx</center>" in r.text
    stats = sim.stats()
    assert stats["injected"]["fetch_5xx"] == 3 and stats["injected"]["http_500"] == 0
    sim.faults(fetch_5xx_share=0.0)
    assert sim.wait_status(job_id)["status"] == "success"


def test_fetch_faults_use_the_seeded_dice(sim: Sim) -> None:
    def pattern() -> list[int]:
        sim.faults(fetch_5xx_share=0.3, fetch_401_share=0.3)
        return [sim.fetch(1).status_code for _ in range(40)]

    first = pattern()
    sim.reset()
    assert pattern() == first
    assert {401, 404} <= set(first) and any(code >= 500 for code in first)
    stats = sim.stats()
    assert stats["injected"]["fetch_401"] == first.count(401)
    assert stats["injected"]["fetch_5xx"] == sum(code >= 500 for code in first)


def test_new_faults_defaults_and_validation(sim: Sim) -> None:
    current = sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()
    assert {
        name: current[name]
        for name in (
            "lost_after_create_share",
            "lost_after_create_mode",
            "lost_slow_seconds",
            "lost_before_create_share",
            "external_holders",
            "fetch_401_share",
            "fetch_5xx_share",
        )
    } == {
        "lost_after_create_share": 0.0,
        "lost_after_create_mode": "mixed",
        "lost_slow_seconds": 35.0,
        "lost_before_create_share": 0.0,
        "external_holders": 0,
        "fetch_401_share": 0.0,
        "fetch_5xx_share": 0.0,
    }
    for mode in ("cut", "slow", "reset", "mixed"):
        assert sim.faults(lost_after_create_mode=mode)["lost_after_create_mode"] == mode
    bad: list[dict[str, Any]] = [
        {"lost_after_create_mode": "drop"},
        {"lost_after_create_mode": 1},
        {"lost_after_create_share": 1.5},
        {"lost_before_create_share": -0.1},
        {"lost_slow_seconds": -1},
        {"lost_slow_seconds": "35"},
        {"external_holders": -1},
        {"external_holders": 1.5},
        {"external_holders": True},
        {"fetch_401_share": "x"},
        {"fetch_5xx_share": 2},
    ]
    for body in bad:
        r = sim.http.post(f"{sim.url}/_sim/faults", json=body, timeout=5)
        assert r.status_code == 400, body
        assert next(iter(body)) in r.json()["error"]
    assert (
        sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()["lost_after_create_mode"]
        == "mixed"
    )
    assert set(current) == set(DEFAULT_FAULTS)


def test_new_faults_on_the_command_line() -> None:
    config = parse_config(
        [
            "--faults",
            '{"lost_after_create_share": 1, "external_holders": 2,'
            ' "lost_after_create_mode": "slow"}',
        ],
        {},
    )
    assert config.faults == {
        "lost_after_create_share": 1.0,
        "external_holders": 2,
        "lost_after_create_mode": "slow",
    }
    for bad in (
        '{"lost_after_create_mode": "drop"}',
        '{"external_holders": -2}',
        '{"fetch_401_share": 3}',
    ):
        with pytest.raises(SystemExit):
            parse_config(["--faults", bad], {})


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    faults = (
        '{"lost_after_create_share": 1, "lost_after_create_mode": "reset",'
        ' "fetch_401_share": 1, "external_holders": 3}'
    )
    server = start_simulator(
        tmp_path_factory.mktemp("sim-faulty"),
        ["--keys", KEY, "--queue-limit", "5", "--render-mean", "0.2", "--faults", faults],
    )
    try:
        yield server
    finally:
        server.stop()


def test_faults_set_at_start_hold_and_survive_reset(faulty_server: SimProcess) -> None:
    sim = Sim(faulty_server.url)
    for round_ in range(2):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(
                f"{sim.api}/video/text2video",
                timeout=30,
                json={"key": KEY, "prompt": "at start", "track_id": f"t{round_}"},
            )
        stats = sim.stats()
        assert stats["created"]["by_track_id"] == {f"t{round_}": 1}
        [job_id] = stats["jobs"]
        assert sim.fetch(job_id).status_code == 401
        faults = sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()
        assert faults["external_holders"] == 3 and faults["lost_after_create_mode"] == "reset"
        sim.faults(external_holders=0, fetch_401_share=0.0)
        sim.reset()  # back to the start faults
    sim.http.close()
