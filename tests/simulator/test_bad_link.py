"""The ``bad_link_share`` fault: a successful render whose output links answer 200 with an
HTML page for ever, never the video; its validation, dice and stats."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from simulator.config import parse_config
from tests.simulator.simhelpers import Sim

SMALL = {"num_frames": 2, "width": 32, "height": 32, "output_type": "mp4"}


def finished(sim: Sim, track_id: str) -> tuple[str, dict[str, Any]]:
    r = sim.submit(track_id=track_id, **SMALL)
    assert r.status_code == 200, r.text
    job_id = str(r.json()["id"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = sim.stats()["jobs"][job_id]
        if job["status"] != "processing":
            return job_id, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still processing")


def test_bad_link_serves_html_200_forever(sim: Sim) -> None:
    sim.faults(bad_link_share=1.0)
    job_id, job = finished(sim, "b1")
    assert job["status"] == "success" and job["bad_link"] is True
    answer = sim.fetch(job_id).json()
    assert answer["status"] == "success"  # the provider says it is done, with links
    links = [*answer["output"], *answer["proxy_links"]]
    assert len(links) == 2
    for _round in range(2):
        for url in links:
            r = sim.http.get(url, timeout=5)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/html")
            assert r.content.startswith(b"<!DOCTYPE html>")
            assert r.content[4:8] != b"ftyp"
        time.sleep(0.3)  # still HTML later: it never turns into the video
    head = sim.http.head(links[0], timeout=5)
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    stats = sim.stats()
    assert stats["injected"]["bad_link"] == 5
    assert stats["downloads"]["by_track_id"] == {"b1": 5}
    assert stats["created"]["by_track_id"] == {"b1": 1}


def test_good_links_still_serve_the_video(sim: Sim) -> None:
    job_id, job = finished(sim, "g1")  # bad_link_share defaults to 0
    assert job["bad_link"] is False
    r = sim.http.get(sim.fetch(job_id).json()["output"][0], timeout=5)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.content[4:8] == b"ftyp"
    assert sim.stats()["injected"]["bad_link"] == 0


def test_failed_renders_are_never_bad_links(sim: Sim) -> None:
    sim.faults(fail_share=1.0, bad_link_share=1.0)
    _job_id, job = finished(sim, "f1")
    assert job["status"] == "failed" and job["bad_link"] is False
    assert sim.stats()["injected"]["bad_link"] == 0


def test_bad_link_share_uses_the_seeded_dice(sim: Sim) -> None:
    def pattern() -> list[bool]:
        sim.faults(bad_link_share=0.5)
        seen = []
        for batch in range(2):  # the session's queue limit is 5
            seen += [finished(sim, f"d{batch}-{i}")[1]["bad_link"] for i in range(5)]
        return seen

    first = pattern()
    sim.reset()
    assert pattern() == first
    assert True in first and False in first


def test_bad_link_share_validation(sim: Sim) -> None:
    assert sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()["bad_link_share"] == 0.0
    assert sim.faults(bad_link_share=0.25)["bad_link_share"] == 0.25
    for value in (1.5, -0.1, "x", True, None):
        r = requests.post(f"{sim.url}/_sim/faults", json={"bad_link_share": value}, timeout=5)
        assert r.status_code == 400, value
        assert "bad_link_share" in r.json()["error"]
    assert parse_config(["--faults", '{"bad_link_share": 1}'], {}).faults == {"bad_link_share": 1.0}
    with pytest.raises(SystemExit):
        parse_config(["--faults", '{"bad_link_share": 2}'], {})
