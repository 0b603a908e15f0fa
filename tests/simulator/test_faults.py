"""Each injected fault, and the admin route that sets them, over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest
import requests

from tests.simulator.simhelpers import Receiver, Sim


def test_http_500_share_answers_html_5xx(sim: Sim) -> None:
    sim.faults(http_500_share=1.0)
    for r in (sim.submit(), sim.fetch(1)):
        assert r.status_code in (500, 502, 503)
        assert r.headers["content-type"].startswith("text/html")
        assert r.text.lstrip().startswith("<html>")
        with pytest.raises(ValueError):
            r.json()
    assert sim.stats()["injected"]["http_500"] == 2


def test_faults_are_reproducible_after_reset(sim: Sim) -> None:
    def pattern() -> list[int]:
        sim.faults(http_500_share=0.5)
        return [sim.fetch(1).status_code for _ in range(30)]

    first = pattern()
    sim.reset()
    assert pattern() == first
    assert 0 < sum(code >= 500 for code in first) < 30


def test_truncated_json_is_200_json_cut_midway(sim: Sim) -> None:
    sim.faults(truncated_json_share=1.0)
    r = sim.submit(track_id="cut")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.text.startswith('{"status":"processing"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    stats = sim.stats()
    assert stats["injected"]["truncated_json"] == 1
    assert len(stats["jobs"]) == 1  # the job exists; only its answer was lost


def test_slow_answers_do_not_block_others(sim: Sim) -> None:
    sim.faults(slow_share=1.0, slow_seconds=1.5)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        slow = [pool.submit(sim.fetch, 1) for _ in range(3)]
        health = requests.get(f"{sim.url}/_sim/health", timeout=5)
        assert health.json() == {"ok": True}
        assert time.monotonic() - started < 1.0
        assert all(f.result().status_code == 404 for f in slow)
        assert 1.5 <= time.monotonic() - started < 4.0  # the three waited side by side
    assert sim.stats()["injected"]["slow"] == 3


def test_link_404_seconds_delays_downloads_after_success(sim: Sim) -> None:
    sim.faults(link_404_seconds=1.0)
    job_id = sim.submit(num_frames=2, width=32, height=32).json()["id"]
    url = sim.wait_status(job_id)["output"][0]
    assert sim.http.get(url, timeout=5).status_code == 404
    time.sleep(1.05)
    assert sim.http.get(url, timeout=5).status_code == 200
    stats = sim.stats()
    assert stats["injected"]["link_404"] == 1
    assert stats["downloads"]["total"] == 2


def test_never_finish_stays_processing(sim: Sim) -> None:
    sim.faults(never_finish_share=1.0)
    job_id = sim.submit().json()["id"]
    time.sleep(0.6)  # three mean render times
    assert sim.fetch(job_id).json()["status"] == "processing"
    assert sim.stats()["jobs"][str(job_id)]["status"] == "processing"


def test_webhook_success_payload(sim: Sim, webhook_receiver: Receiver) -> None:
    submitted = sim.submit(
        webhook=webhook_receiver.url, track_id="wh-1", num_frames=2, width=32, height=32
    ).json()
    fetched = sim.wait_status(submitted["id"])
    [payload] = webhook_receiver.wait_for(1)
    assert payload["status"] == "success"
    assert payload["id"] == str(submitted["id"])
    assert payload["track_id"] == "wh-1"
    assert payload["output"] == fetched["output"]
    assert isinstance(payload["generationTime"], float | int)
    assert payload["meta"]["webhook"] == webhook_receiver.url
    time.sleep(0.2)
    assert len(webhook_receiver.received) == 1
    assert sim.stats()["injected"]["webhooks_sent"] == 1


def test_webhook_delivered_twice(sim: Sim, webhook_receiver: Receiver) -> None:
    sim.faults(webhook_deliveries=2)
    job_id = sim.submit(webhook=webhook_receiver.url, track_id="wh-2", num_frames=2).json()["id"]
    sim.wait_status(job_id)
    received = webhook_receiver.wait_for(2)
    assert len(received) == 2 and received[0] == received[1]
    assert received[0]["id"] == str(job_id)


def test_webhook_failure_payload(sim: Sim, webhook_receiver: Receiver) -> None:
    sim.faults(fail_share=1.0)
    job_id = sim.submit(webhook=webhook_receiver.url, track_id="wh-3").json()["id"]
    sim.wait_status(job_id, "failed")
    [payload] = webhook_receiver.wait_for(1)
    assert payload["status"] == "failed"
    assert payload["id"] == str(job_id)
    assert payload["track_id"] == "wh-3"
    assert payload["message"].startswith("Processing failed: ")


def test_unreachable_webhook_is_ignored(sim: Sim) -> None:
    job_id = sim.submit(webhook="http://127.0.0.1:9/nothing", num_frames=2).json()["id"]
    sim.wait_status(job_id)
    deadline = time.monotonic() + 5
    while sim.stats()["injected"]["webhooks_failed"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_faults_route_merges_resets_and_refuses_unknown_names(sim: Sim) -> None:
    current = sim.faults(http_500_share=0.25)
    assert current["http_500_share"] == 0.25 and current["spam_filter"] is True
    current = sim.faults(slow_seconds=2)
    assert current["http_500_share"] == 0.25 and current["slow_seconds"] == 2
    current = sim.faults(reset=True, fail_share=0.5)
    assert current["http_500_share"] == 0 and current["fail_share"] == 0.5
    for bad in ({"http_500_shares": 1}, {"fail_share": 2}, {"spam_filter": "yes"}):
        r = sim.http.post(f"{sim.url}/_sim/faults", json=bad, timeout=5)
        assert r.status_code == 400
    assert sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()["fail_share"] == 0.5
    sim.reset()
    assert sim.http.get(f"{sim.url}/_sim/faults", timeout=5).json()["fail_share"] == 0
