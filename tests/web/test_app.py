"""`t2v web` through Starlette's TestClient, on a real Redis and a real SQLite file: the
API's validation and actions, the list's filters and keyset pages, escaping, auth, CSRF,
media (ranges, traversal) and the OpenAPI document."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from t2v_core.db import get_engine
from t2v_core.states import JobStatus
from t2v_core.store import JobStore

XSS = "<script>window.pwned = 1</script> a cat & a <b>dog</b>"


def create(client: Any, **body: Any) -> dict[str, Any]:
    small = {"num_frames": 8, "width": 128, "height": 128}
    answer = client.post("/api/v1/jobs", json={**small, **body})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


# -- the API ----------------------------------------------------------------------------
def test_create_read_and_list_a_job(client: Any) -> None:
    job = create(client, prompt="a paper boat on a pond", idempotency_key="boat-1")
    assert job["status"] == "queued" and job["request"]["prompt"] == "a paper boat on a pond"
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["id"] == job["id"]
    page = client.get("/api/v1/jobs").json()
    assert [j["id"] for j in page["jobs"]] == [job["id"]] and page["next_cursor"] is None
    # The same key and request: the same job, nothing new written.
    again = create(client, prompt="a paper boat on a pond", idempotency_key="boat-1")
    assert again["id"] == job["id"]
    assert len(client.get("/api/v1/jobs").json()["jobs"]) == 1


def test_priority_tenant_and_labels_are_stored_listed_and_filtered(client: Any) -> None:
    a = create(client, prompt="a", priority="interactive", tenant="acme", labels={"order": "12"})
    b = create(client, prompt="b", priority="bulk", tenant="trial", labels={"order": "34"})
    assert (a["priority"], a["tenant"], a["labels"]) == ("interactive", "acme", {"order": "12"})
    assert client.get(f"/api/v1/jobs/{b['id']}").json()["priority"] == "bulk"

    def ids(query: str) -> list[str]:
        answer = client.get(f"/api/v1/jobs?{query}")
        assert answer.status_code == 200, answer.text
        return [j["id"] for j in answer.json()["jobs"]]

    assert ids("tenant=acme") == [a["id"]]
    assert ids("label=order%3D34") == [b["id"]]
    assert ids("label=order%3D34&tenant=acme") == []
    refused = client.get("/api/v1/jobs?label=order")
    assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "label"
    page = client.get("/?label=order%3D12").text
    assert "order=12" in page and f'data-job="{a["id"]}"' in page
    assert f'data-job="{b["id"]}"' not in page
    assert "acme" in client.get(f"/jobs/{a['id']}").text


def test_a_refused_field_is_a_422_naming_it_and_nothing_is_written(client: Any) -> None:
    answer = client.post("/api/v1/jobs", json={"prompt": "x", "width": 1000, "key": "sk-x"})
    assert answer.status_code == 422
    fields = {f["field"]: f["reason"] for f in answer.json()["fields"]}
    assert fields["width"] == "must be at most 512"
    # A field that is neither the request's nor an enqueue option is refused by name.
    assert "key" in fields
    bad = client.post("/api/v1/jobs", json={"prompt": "x", "priority": "urgent", "tenant": "a b"})
    assert bad.status_code == 422
    assert {f["field"] for f in bad.json()["fields"]} == {"priority", "tenant"}
    bad_key = client.post("/api/v1/jobs", json={"prompt": "x", "idempotency_key": ""})
    assert bad_key.status_code == 422
    assert [f["field"] for f in bad_key.json()["fields"]] == ["idempotency_key"]
    assert client.post("/api/v1/jobs", json=["not", "an", "object"]).status_code == 422
    assert client.post("/api/v1/jobs", content=b"{nope").status_code == 400
    assert client.get("/api/v1/jobs").json()["jobs"] == []


def test_the_enqueue_options_are_exactly_what_enqueue_takes() -> None:
    import inspect

    from producer import Producer
    from web.api import ENQUEUE_OPTIONS, split_options

    params = inspect.signature(Producer.enqueue).parameters
    keyword_only = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(ENQUEUE_OPTIONS) == keyword_only
    fields, options = split_options({"prompt": "p", "idempotency_key": "k", "seed": 3})
    assert fields == {"prompt": "p", "seed": 3} and options == {"idempotency_key": "k"}


def test_cancel_then_retry_answers_say_what_happened(client: Any) -> None:
    job = create(client, prompt="a kite")
    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409
    refused = client.post(f"/api/v1/jobs/{job['id']}/retry")
    assert refused.status_code == 409 and "cancel" in refused.json()["error"]
    assert client.post("/api/v1/jobs/nope/cancel").status_code == 404
    assert client.get("/api/v1/jobs/nope").status_code == 404


def _fill(url: str, n: int) -> list[str]:
    """``n`` rows; pairs share a created_at so the cursor's id tie-break is exercised."""
    store = JobStore(get_engine(url))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        prompt = "100% literal_match" if i == 7 else f"job {i} {'fox' if i % 3 == 0 else 'owl'}"
        row = store.insert_values(
            request={"prompt": prompt, "model_id": "wan2.2" if i % 2 else "cogvideox"},
            model_requested="wan2.2" if i % 2 else "cogvideox",
            model_effective="wan2.2" if i % 2 else "cogvideox",
            now=start + timedelta(seconds=i // 2),
        )
        row["status"] = "succeeded" if i % 4 == 0 else "queued"
        rows.append(row)
    store.insert_many(rows)
    newest_first = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return [r["id"] for r in newest_first]


def test_keyset_pages_walk_every_job_once_newest_first_with_filters(
    client: Any, web_env: dict[str, str]
) -> None:
    expected = _fill(web_env["T2V_DATABASE_URL"], 45)
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/jobs", params=query).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    ok = client.get("/api/v1/jobs", params={"state": "succeeded", "limit": "200"}).json()
    assert len(ok["jobs"]) == 12 and {j["status"] for j in ok["jobs"]} == {"succeeded"}
    cog = client.get("/api/v1/jobs", params={"model": "cogvideox", "limit": "200"}).json()
    assert len(cog["jobs"]) == 23
    fox = client.get("/api/v1/jobs", params={"prompt": "FOX", "limit": "200"}).json()
    assert len(fox["jobs"]) == 15
    # % and _ are matched as themselves, not as wildcards.
    literal = client.get("/api/v1/jobs", params={"prompt": "100%"}).json()["jobs"]
    assert [j["request"]["prompt"] for j in literal] == ["100% literal_match"]
    assert client.get("/api/v1/jobs", params={"prompt": "0_l"}).json()["jobs"] == []
    assert client.get("/api/v1/jobs", params={"state": "nope"}).status_code == 422
    assert client.get("/api/v1/jobs", params={"cursor": "garbage!"}).status_code == 422
    # The page walks the same way, and its filters survive the "older" link.
    html = client.get("/", params={"state": "queued"}).text
    assert html.count('data-status="queued"') == 33 and 'class="older"' not in html
    assert client.get("/", params={"cursor": "garbage!"}).status_code == 422


def test_the_list_counts_states_and_reads_slots_from_redis(
    client: Any, web_env: dict[str, str]
) -> None:
    import redis

    from t2v_core.names import slot_keys

    _fill(web_env["T2V_DATABASE_URL"], 8)
    r = redis.Redis.from_url(web_env["T2V_BROKER_URL"])
    keys = slot_keys()
    r.zadd(keys["holders"], {"job-a": 4102444800.0, "job-b": 4102444800.0})
    r.zadd(keys["waiting"], {"job-c": 1.0, "job-d": 2.0, "job-e": 3.0})
    html = client.get("/").text
    r.close()

    def count(name: str) -> str:
        part = html.split(f'data-count="{name}"><b>', 1)[1]
        return part.split("</b>", 1)[0]

    assert count("queued") == "6" and count("succeeded") == "2" and count("failed") == "0"
    assert count("waiting_for_slot") == "3"
    assert count("slots_in_use") == "2 / 5"


# -- pages: escaping, the job page ------------------------------------------------------
def test_a_prompt_with_html_is_text_everywhere(client: Any) -> None:
    job = create(client, prompt=XSS)
    for path in ("/", f"/jobs/{job['id']}", "/?q=script"):
        html = client.get(path).text
        assert "<script>window.pwned" not in html and "<b>dog</b>" not in html
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html


def test_the_job_page_shows_the_request_and_timeline_never_a_key(
    make_client: Callable[..., Any],
) -> None:
    client = make_client(modelslab_api_key="sk-should-never-show")
    job = create(client, prompt="a lighthouse in fog")
    html = client.get(f"/jobs/{job['id']}").text
    assert "&#34;prompt&#34;: &#34;a lighthouse in fog&#34;" in html
    assert "<td>created</td>" in html and 'id="cancel"' in html and 'id="retry"' not in html
    assert "sk-should-never-show" not in html
    assert client.get("/jobs/nope").status_code == 404


def test_the_page_forms_need_the_csrf_token(client: Any) -> None:
    job = create(client, prompt="a tram")
    page = client.get(f"/jobs/{job['id']}")
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert client.cookies.get("t2v_web_csrf") == token
    missing = client.post(f"/jobs/{job['id']}/cancel", data={})
    assert missing.status_code == 403
    wrong = client.post(f"/jobs/{job['id']}/cancel", data={"csrf": "x" * 43})
    assert wrong.status_code == 403
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "queued"
    # Another site's page cannot post here even with the right field (Origin says so).
    foreign = client.post(
        f"/jobs/{job['id']}/cancel",
        data={"csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    api_foreign = client.post(
        f"/api/v1/jobs/{job['id']}/cancel", headers={"Origin": "http://evil.example"}
    )
    assert api_foreign.status_code == 403
    done = client.post(f"/jobs/{job['id']}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and "notice=cancelled" in done.headers["location"]
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "cancelled"


# -- auth -------------------------------------------------------------------------------
def test_with_a_token_the_api_wants_bearer_and_pages_a_login_cookie(
    make_client: Callable[..., Any],
) -> None:
    client = make_client(token="s3cret-token-for-tests")
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/openapi.json").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/api/v1/jobs", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret-token-for-tests"}
    assert client.get("/api/v1/jobs", headers=right).status_code == 200
    assert client.get("/").status_code == 401
    assert client.get("/media/jobs/ab/x/output-0.mp4").status_code == 401
    login = client.get("/login")
    csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    bad = client.post("/login", data={"csrf": csrf, "token": "guess"})
    assert bad.status_code == 401
    good = client.post(
        "/login", data={"csrf": csrf, "token": "s3cret-token-for-tests"}, follow_redirects=False
    )
    assert good.status_code == 303
    cookie = client.cookies.get("t2v_web_session")
    assert cookie and "s3cret-token-for-tests" not in cookie
    assert client.get("/").status_code == 200
    # The cookie is for pages; the API still wants the header.
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_main_refuses_a_public_address_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from web.app import is_loopback, main

    monkeypatch.delenv("T2V_WEB_TOKEN", raising=False)
    assert main(["--host", "0.0.0.0", "--port", "1"]) == 2
    assert "T2V_WEB_TOKEN" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")


# -- media ------------------------------------------------------------------------------
def _video(web_env: dict[str, str]) -> tuple[str, bytes]:
    root = Path(web_env["T2V_STORAGE_URL"])
    key = "jobs/ab/abcdef/output-0.mp4"
    data = bytes(range(256)) * 40
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(data)
    return key, data


def test_local_media_is_served_with_ranges(client: Any, web_env: dict[str, str]) -> None:
    key, data = _video(web_env)
    whole = client.get(f"/media/{key}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/media/{key}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"


@pytest.mark.parametrize(
    "path",
    [
        "/media/../../../etc/passwd",
        "/media/jobs/..%2F..%2F..%2Fetc%2Fpasswd",
        "/media/jobs/%2e%2e/%2e%2e/etc/passwd",
        "/media/%2Fetc%2Fpasswd",
        "/media/jobs/ab/..\\..\\secret",
        "/media/secret.txt",
        "/media/jobs/escape/link.mp4",
    ],
)
def test_media_paths_cannot_leave_the_storage_root(
    client: Any, web_env: dict[str, str], tmp_path: Path, path: str
) -> None:
    root = Path(web_env["T2V_STORAGE_URL"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "secret.txt").write_text("outside jobs/")
    outside = tmp_path / "outside.mp4"
    outside.write_text("outside the root")
    (root / "jobs" / "escape").mkdir(parents=True, exist_ok=True)
    link = root / "jobs" / "escape" / "link.mp4"
    if not link.exists():
        os.symlink(outside, link)
    answer = client.get(path)
    assert answer.status_code == 404
    assert "outside" not in answer.text and "root:" not in answer.text


# -- the OpenAPI document ---------------------------------------------------------------
def test_the_openapi_document_is_valid_and_lists_every_api_route(client: Any) -> None:
    from openapi_spec_validator import validate
    from starlette.routing import Route

    from web.api import ENQUEUE_OPTIONS

    spec = client.get("/api/v1/openapi.json").json()
    validate(spec)
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    served = {
        (route.path, method)
        for route in client.app.routes
        if isinstance(route, Route) and route.path.startswith("/api/v1/")
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert served and served == documented
    props = spec["components"]["schemas"]["CreateJob"]["allOf"][1]["properties"]
    assert set(props) == set(ENQUEUE_OPTIONS)
    assert {"idempotency_key", "priority", "tenant", "labels", "callback_url"} <= set(props)


def test_status_values_in_the_schema_are_the_job_states(client: Any) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    states = spec["components"]["schemas"]["Job"]["properties"]["status"]["enum"]
    assert set(states) == {s.value for s in JobStatus}


def test_the_counts_are_reused_for_their_ttl_only(
    make_client: Callable[..., Any], web_env: dict[str, str]
) -> None:
    def succeeded(html: str) -> str:
        return html.split('data-count="succeeded"><b>', 1)[1].split("</b>", 1)[0]

    cached = make_client(web_counts_ttl="3600")
    fresh = make_client(web_counts_ttl="0")
    _fill(web_env["T2V_DATABASE_URL"], 4)  # i = 0: one succeeded
    assert succeeded(cached.get("/").text) == "1" == succeeded(fresh.get("/").text)
    _fill(web_env["T2V_DATABASE_URL"], 4)
    assert succeeded(cached.get("/").text) == "1"
    assert succeeded(fresh.get("/").text) == "2"


def test_the_retry_button_resumes_a_parked_job_from_its_paid_step(
    client: Any, web_env: dict[str, str]
) -> None:
    import redis

    from t2v_core.names import QUEUE_POLL, QUEUE_SUBMIT

    store = JobStore(get_engine(web_env["T2V_DATABASE_URL"]))
    row = store.insert_values(
        request={"prompt": "a parked kite"}, model_requested=None, model_effective="wan2.2"
    )
    now = datetime.now(UTC)
    row.update(
        status="parked",
        provider_id="p-77",
        parked_at=now,
        processing_at=now,
        error="still rendering at our deadline",
        error_kind="deadline",
    )
    store.insert_many([row])
    page = client.get(f"/jobs/{row['id']}").text
    assert 'id="retry"' in page and "still rendering at our deadline" in page
    assert "deadline" in page.split('class="kind">', 1)[1]
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    done = client.post(f"/jobs/{row['id']}/retry", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and "notice=retried" in done.headers["location"]
    record = store.get(row["id"])
    assert record is not None and record.status is JobStatus.PROCESSING
    assert record.retry_count == 1 and record.provider_id == "p-77"
    # The poll was sent by name (a fetch of the paid render), not a new submission.
    r = redis.Redis.from_url(web_env["T2V_BROKER_URL"])
    assert r.llen(QUEUE_POLL) == 1 and r.llen(QUEUE_SUBMIT) == 0
    r.close()
    # Retrying again is refused and says why (409 through the API).
    again = client.post(f"/api/v1/jobs/{row['id']}/retry")
    assert again.status_code == 409 and "processing" in again.json()["error"]
