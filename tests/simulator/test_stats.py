"""``/_sim/stats`` counts every request that reached a route, by key and by track_id."""

from __future__ import annotations

from tests.simulator.simhelpers import KEY, OTHER_KEY, Sim


def test_counters_by_key_and_track_id(sim: Sim) -> None:
    a = sim.submit(track_id="A", num_frames=2, width=32, height=32).json()["id"]
    b = sim.submit(key=OTHER_KEY, track_id="B", num_frames=2, width=32, height=32).json()["id"]
    sim.submit(key="wrong", track_id="C")
    url = sim.wait_status(a)["output"][0]
    sim.http.get(url, timeout=5)
    sim.http.head(url, timeout=5)
    sim.fetch(b, key=OTHER_KEY)
    fetches_of_a = sim.stats()["fetches"]["by_track_id"]["A"]

    sim.faults(http_500_share=1.0)
    sim.fetch(a)  # answered with an injected fault: still counted
    stats = sim.stats()
    assert stats["submits"] == {
        "total": 3,
        "by_key": {KEY: 1, OTHER_KEY: 1, "wrong": 1},
        "by_track_id": {"A": 1, "B": 1, "C": 1},
    }
    assert stats["fetches"]["total"] == fetches_of_a + 2
    assert stats["fetches"]["by_track_id"] == {"A": fetches_of_a + 1, "B": 1}
    assert stats["downloads"] == {"total": 2, "by_key": {KEY: 2}, "by_track_id": {"A": 2}}

    job = stats["jobs"][str(a)]
    assert job["track_id"] == "A" and job["status"] == "success"
    assert job["ready_at"] >= job["submitted_at"] and isinstance(job["eta"], int)
    [output] = job["outputs"]
    assert output["url"] == url and output["bytes"] > 0 and len(output["sha256"]) == 64
    assert set(stats["injected"]) >= {
        "http_500",
        "truncated_json",
        "slow",
        "link_404",
        "rate_limited",
        "webhooks_sent",
    }


def test_reset_clears_counters_jobs_and_faults_but_never_reuses_ids(sim: Sim) -> None:
    first = sim.submit().json()["id"]
    sim.faults(fail_share=1.0)
    sim.reset()
    stats = sim.stats()
    assert stats["submits"]["total"] == 0 and stats["jobs"] == {}
    assert sim.fetch(first).status_code == 404
    second = sim.submit().json()["id"]  # same body: the spam memory was reset too
    assert second > first
    assert sim.wait_status(second)["status"] == "success"  # fail_share back to 0


def test_identical_requests_share_bytes_but_not_urls(sim: Sim) -> None:
    body = {"prompt": "same picture", "num_frames": 3, "width": 48, "height": 48, "seed": 1}
    a = sim.submit({**body, "track_id": "x1"}).json()["id"]
    b = sim.submit({**body, "track_id": "x2"}).json()["id"]
    url_a = sim.wait_status(a)["output"][0]
    url_b = sim.wait_status(b)["output"][0]
    assert url_a != url_b
    jobs = sim.stats()["jobs"]
    assert jobs[str(a)]["outputs"][0]["sha256"] == jobs[str(b)]["outputs"][0]["sha256"]
    sim.http.get(url_b, timeout=5)
    assert sim.stats()["downloads"]["by_track_id"] == {"x2": 1}
