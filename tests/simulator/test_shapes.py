"""Every documented answer shape and quirk, over real HTTP."""

from __future__ import annotations

import time

from tests.simulator.simhelpers import OTHER_KEY, SEED_SAMPLE_KEY, Sim

ERROR_429 = "Rate limit exceeded. Maximum 5 queued requests allowed."


def test_submit_processing_shape_has_integer_id_and_string_meta_id(sim: Sim) -> None:
    r = sim.submit(track_id="t-1", webhook=None, output_type="mp4", num_frames=5)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == [
        "status",
        "tip",
        "eta",
        "message",
        "fetch_result",
        "id",
        "output",
        "meta",
        "future_links",
    ]
    assert body["status"] == "processing"
    assert isinstance(body["id"], int)
    assert body["meta"]["id"] == str(body["id"])
    assert isinstance(body["eta"], int) and body["eta"] >= 1
    assert body["output"] == []
    assert body["fetch_result"] == f"{sim.api}/video/fetch/{body['id']}"
    assert body["meta"]["track_id"] == "t-1"
    assert body["meta"]["prompt"] == "a red ball bouncing"
    assert "key" not in body["meta"]
    assert len(body["future_links"]) == 1 and body["future_links"][0].endswith(".mp4")
    assert body["tip"].startswith("Your image is processing in background")
    assert body["message"] == "Try to fetch request after seconds estimated"


def test_fetch_processing_has_no_id_and_empty_string_output(sim: Sim) -> None:
    sim.faults(never_finish_share=1.0)
    job_id = sim.submit().json()["id"]
    body = sim.fetch(job_id).json()
    assert body["status"] == "processing"
    assert body["output"] == ""
    assert "id" not in body
    assert body["message"] == "try again later."
    assert body["tip"].startswith("Get 20x faster image generation using enterprise plan")


def test_fetch_success_shape_and_future_link_is_the_output(sim: Sim) -> None:
    submitted = sim.submit(num_frames=3, width=64, height=64).json()
    body = sim.wait_status(submitted["id"])
    assert list(body) == ["status", "id", "output", "proxy_links"]
    assert body["id"] == submitted["id"] and isinstance(body["id"], int)
    assert body["output"] == submitted["future_links"]
    assert len(body["proxy_links"]) == 1 and body["proxy_links"] != body["output"]
    for url in body["output"] + body["proxy_links"]:
        assert sim.http.get(url, timeout=5).status_code == 200


def test_future_link_is_404_until_success(sim: Sim) -> None:
    sim.faults(never_finish_share=1.0)
    link = sim.submit().json()["future_links"][0]
    assert sim.http.get(link, timeout=5).status_code == 404


def test_failed_shape(sim: Sim) -> None:
    sim.faults(fail_share=1.0)
    job_id = sim.submit().json()["id"]
    body = sim.wait_status(job_id, "failed")
    assert body == {"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}


def test_unknown_and_foreign_ids_are_not_found(sim: Sim) -> None:
    for job_id in ("999", "abc"):
        r = sim.fetch(job_id)
        assert r.status_code == 404
        assert r.json() == {"status": "error", "message": "Request not found"}
    job_id = sim.submit().json()["id"]
    assert sim.fetch(job_id, key=OTHER_KEY).status_code == 404  # another account's job


def test_invalid_key_is_401_on_submit_and_fetch(sim: Sim) -> None:
    for r in (sim.submit(key="nope"), sim.fetch(1, key="nope")):
        assert r.status_code == 401
        assert r.json() == {"status": "error", "message": "Invalid API key"}


def test_key_header_is_accepted(sim: Sim) -> None:
    r = sim.http.post(
        f"{sim.api}/video/text2video",
        json={"prompt": "header key"},
        headers={"key": OTHER_KEY},
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["status"] == "processing"
    assert sim.stats()["submits"]["by_key"] == {OTHER_KEY: 1}


def test_credits_exhausted_is_402(sim: Sim) -> None:
    sim.faults(credits_exhausted=True)
    r = sim.submit()
    assert r.status_code == 402
    assert r.json() == {
        "status": "error",
        "message": "Insufficient credits. Please add more credits to continue.",
    }


def test_premium_required_is_403(sim: Sim) -> None:
    sim.faults(premium_required=True)
    r = sim.submit()
    assert r.status_code == 403
    assert r.json()["message"] == "This feature requires a premium subscription"


def test_queue_limit_is_429_with_retry_after_and_counts_per_key(sim: Sim) -> None:
    sim.faults(never_finish_share=1.0)
    for i in range(5):
        assert sim.submit(track_id=f"q{i}").json()["status"] == "processing"
    r = sim.submit(track_id="q5")
    assert r.status_code == 429
    assert r.json() == {"status": "error", "message": ERROR_429, "retry_after": 30}
    assert sim.submit(key=OTHER_KEY, track_id="q6").status_code == 200  # per account
    sim.faults(retry_after=1)
    assert sim.submit(track_id="q7").json()["retry_after"] == 1
    assert sim.stats()["injected"]["queue_limited"] == 2


def test_finished_jobs_free_their_queue_slot(sim: Sim) -> None:
    ids = [
        sim.submit(track_id=f"f{i}", num_frames=2, width=32, height=32).json()["id"]
        for i in range(5)
    ]
    assert sim.submit(track_id="f5").status_code == 429
    for job_id in ids:
        sim.wait_status(job_id)
    assert sim.submit(track_id="f6").status_code == 200


def test_rate_limit_next(sim: Sim) -> None:
    sim.faults(rate_limit_next=2, retry_after=1)
    for _ in range(2):
        r = sim.submit(track_id=str(time.monotonic()))
        assert r.status_code == 429
        assert r.json() == {"status": "error", "message": ERROR_429, "retry_after": 1}
    assert sim.submit().status_code == 200
    assert sim.stats()["injected"]["rate_limited"] == 2


def test_spam_filter_refuses_the_same_body_within_the_window(sim: Sim) -> None:
    body = {"prompt": "spam me", "track_id": "s1", "num_frames": 3}
    assert sim.submit(body).status_code == 200
    again = sim.submit(body)
    assert again.status_code == 429
    assert again.json() == {
        "status": "error",
        "message": "Rate limit exceeded",
        "tips": "you are sending same request multiple times, spam filter is enabled, "
        "please wait for 30 seconds...",
    }
    assert sim.submit({**body, "track_id": "s2"}).status_code == 200  # any param differs
    assert sim.submit(body, key=OTHER_KEY).status_code == 200  # another key
    sim.faults(spam_window_seconds=0.3)
    time.sleep(0.35)
    assert sim.submit(body).status_code == 200
    sim.faults(spam_filter=False)
    assert sim.submit(body).status_code == 200
    assert sim.stats()["injected"]["spam_filtered"] == 1


def test_unknown_model_falls_back_to_wan22_in_meta(sim: Sim) -> None:
    assert sim.submit(model_id="cogvideox").json()["meta"]["model_id"] == "wan2.2"
    assert sim.submit(track_id="m2").json()["meta"]["model_id"] == "wan2.2"
    assert sim.submit(model_id="ltx-2.3").json()["meta"]["model_id"] == "ltx-2.3"


def test_error_as_200(sim: Sim) -> None:
    sim.faults(error_as_200=True)
    r = sim.submit(key="nope")
    assert r.status_code == 200
    assert r.json() == {"status": "error", "message": "Invalid API key"}
    r = sim.submit(width=600)
    assert r.status_code == 200
    assert r.json()["message"] == {"width": ["The width may not be greater than 512."]}


def test_legacy_messege_spelling(sim: Sim) -> None:
    sim.faults(legacy_messege=True)
    r = sim.submit(key="nope")
    assert r.status_code == 401
    assert r.json() == {"status": "error", "messege": "Invalid API key"}


def test_seed_sample_key_is_configured(sim: Sim) -> None:
    assert sim.submit(key=SEED_SAMPLE_KEY).status_code == 200
