"""One paid submission per job: answers that may hide an accepted request are never
followed by a blind resubmit, and resubmits after lost answers are bounded and recorded."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from t2v_core.errors import TransientError
from t2v_core.states import JobStatus
from tests.conftest import SimControl
from tests.integration.pipeline import Pipeline
from tests.integration.test_pipeline import make_env
from tests.loopback_http import serving
from worker.modelslab import ModelsLabClient, SubmitOutcomeUnknown


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[int]]]:
    """A loopback server answering each POST with the next status code of a list."""
    codes: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("content-length", 0)))
            code = codes.pop(0)
            body = b"<html><body>gateway says no</body></html>"
            if code == 200:
                body = b'{"status":"processing","id":12'  # cut off mid-way
            self.send_response(code)
            self.send_header("content-type", "text/html" if code != 200 else "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield f"{url}/api/v6", codes


@pytest.mark.parametrize("code", [502, 504, 200])
def test_gateway_errors_and_unreadable_success_on_submit_are_outcome_unknown(
    gateway: tuple[str, list[int]], code: int
) -> None:
    url, codes = gateway
    codes.append(code)
    with ModelsLabClient(url, "k" * 20) as client, pytest.raises(SubmitOutcomeUnknown):
        client.submit({"prompt": "x"})


@pytest.mark.parametrize("code", [500, 503])
def test_origin_errors_on_submit_are_plain_retries(
    gateway: tuple[str, list[int]], code: int
) -> None:
    url, codes = gateway
    codes.append(code)
    with ModelsLabClient(url, "k" * 20) as client, pytest.raises(TransientError) as caught:
        client.submit({"prompt": "x"})
    assert not isinstance(caught.value, SubmitOutcomeUnknown)


@pytest.mark.slow
def test_lost_answers_resubmit_at_most_once_then_fail(
    redis_url: str, sqlite_url: str, sim: SimControl, tmp_path: Path
) -> None:
    env = make_env(
        redis_url,
        sqlite_url,
        sim,
        {
            "T2V_STORAGE_URL": str(tmp_path / "v"),
            "T2V_READ_TIMEOUT": "0.5",
            "T2V_SUBMIT_UNKNOWN_WAIT": "1",
            "T2V_MAX_UNKNOWN_RESUBMITS": "1",
        },
    )
    # Every answer comes too late, and the spam filter is off so the resubmit is taken.
    sim.faults(slow_share=1.0, slow_seconds=1.5, spam_filter=False)
    pipe = Pipeline(env, tmp_path / "logs")
    pipe.start_worker(concurrency=1)
    try:
        with pipe.as_application() as producer:
            job = producer.enqueue(
                producer.Text2VideoRequest(
                    prompt="a job whose answers never come back", num_frames=6, width=64, height=64
                )
            )
        [rec] = pipe.wait_all([job.id], timeout=60)
    finally:
        pipe.stop()
    assert rec.status is JobStatus.FAILED and rec.error_kind == "submit_unknown"
    assert rec.error and "not resubmitting again" in rec.error
    assert rec.submit_count == 2 and rec.unknown_submits == 1
    assert sim.stats()["submits"]["by_track_id"][job.id] == 2  # type: ignore[index]
