"""`t2v web` in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
posters for every succeeded job of a small real run, a player that really plays and seeks,
a prompt with HTML shown as text, auth enforced, a traversal path answered 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import XSS_PROMPT, RealRun

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_the_list_shows_a_poster_for_every_succeeded_job(real_run: RealRun, page: Any) -> None:
    succeeded = [
        r.id
        for r in (real_run.pipe.store.get(i) for i in real_run.ids.values())
        if r is not None and r.status == "succeeded"
    ]
    assert len(succeeded) == len(real_run.ids)
    assert page.goto(real_run.url + "/").status == 200
    for job_id in succeeded:
        img = page.locator(f'tr[data-job="{job_id}"] img.poster')
        img.wait_for(state="visible")
        # Loaded and decoded: a broken image has naturalWidth 0.
        page.wait_for_function(
            "id => { const i = document.querySelector(`tr[data-job='${id}'] img.poster`);"
            " return i && i.complete && i.naturalWidth > 0; }",
            arg=job_id,
        )
    assert page.locator("#counts [data-count=succeeded] b").inner_text() == str(len(succeeded))


def test_the_player_plays_and_seeks(real_run: RealRun, page: Any) -> None:
    ranges: list[int] = []
    page.on(
        "response",
        lambda r: ranges.append(r.status) if "/media/" in r.url and ".mp4" in r.url else None,
    )
    assert page.goto(f"{real_run.url}/jobs/{real_run.ids['mp4']}").status == 200
    video = page.locator("video.player")
    video.wait_for(state="attached")
    page.evaluate("document.querySelector('video.player').play()")
    page.wait_for_function("document.querySelector('video.player').currentTime > 0.3")
    # Seeking: jump near the end and see the player get there (served by range requests).
    page.evaluate(
        "(() => { const v = document.querySelector('video.player');"
        " v.pause(); v.currentTime = v.duration * 0.75; })()"
    )
    page.wait_for_function(
        "(() => { const v = document.querySelector('video.player');"
        " return !v.seeking && v.currentTime >= v.duration * 0.7 && v.readyState >= 2; })()"
    )
    assert 206 in ranges or 200 in ranges
    sha = page.locator("table.meta code").first.inner_text()
    record = real_run.pipe.store.get(real_run.ids["mp4"])
    assert record is not None and sha == record.outputs[0].sha256


def test_a_gif_is_shown_as_an_image(real_run: RealRun, page: Any) -> None:
    page.goto(f"{real_run.url}/jobs/{real_run.ids['gif']}")
    page.wait_for_function(
        "(() => { const i = document.querySelector('img.player');"
        " return i && i.complete && i.naturalWidth > 0; })()"
    )
    assert page.locator("video").count() == 0


def test_a_prompt_with_html_stays_text(real_run: RealRun, page: Any) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in ("/?q=script", f"/jobs/{real_run.ids['xss']}", "/"):
        page.goto(real_run.url + path)
        assert page.evaluate("window.pwned") is None
        assert page.locator("b", has_text="dog").count() == 0
        if path.startswith("/jobs/"):
            assert page.locator("p.prompt-full").inner_text() == XSS_PROMPT
    cell = page.locator(f'tr[data-job="{real_run.ids["xss"]}"] td.prompt').inner_text()
    assert "<script>window.pwned = 1</script>" in cell
    assert dialogs == []


def test_a_traversal_path_gets_404(real_run: RealRun, page: Any) -> None:
    for path in (
        "/media/jobs/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/media/jobs/%2e%2e/%2e%2e/t2v.sqlite3",
        "/media/..%2Ft2v.sqlite3",
    ):
        answer = page.goto(real_run.url + path)
        assert answer is not None and answer.status == 404, path
        assert "root:" not in page.content() and "SQLite" not in page.content()


def test_auth_is_enforced_in_the_browser(real_run: RealRun, page: Any, tmp_path: Path) -> None:
    from worker.devstack import processes

    env = {k: v for k, v in real_run.env.items() if k != "T2V_MODELSLAB_API_KEY"}
    env.update({"T2V_MODELSLAB_API_KEY": "", "T2V_WEB_TOKEN": "browser-token-123"})
    web = processes.start_web(tmp_path, env=env)
    try:
        assert page.goto(web.url + "/").status == 401
        assert page.goto(f"{web.url}/jobs/{real_run.ids['mp4']}").status == 401
        assert page.request.get(web.url + "/api/v1/jobs").status == 401
        page.goto(web.url + "/login")
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit] >> text=log in")
        assert page.locator("p.error").inner_text() == "wrong token"
        page.fill("input[name=token]", "browser-token-123")
        page.click("button[type=submit] >> text=log in")
        page.wait_for_url(web.url + "/")
        assert page.locator("tr.job").count() == len(real_run.ids)
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        assert "browser-token-123" not in cookies["t2v_web_session"]
        # The login cookie is for pages: the API still needs the Bearer header.
        assert page.request.get(web.url + "/api/v1/jobs").status == 401
        bearer = {"Authorization": "Bearer browser-token-123"}
        assert page.request.get(web.url + "/api/v1/jobs", headers=bearer).status == 200
    finally:
        web.stop()
