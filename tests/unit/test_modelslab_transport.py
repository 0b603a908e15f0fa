"""``worker.modelslab.transport``: the client goes straight through urllib3 unless a proxy
applies, and what it sends and refuses to do is what ``requests`` did.

The client's answers and errors over a real local server (timeouts, dropped connections,
refused connections, the key only in the body) are in ``test_modelslab_parse.py``; they
run through ``DirectSession`` too, since it is the default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests

from tests.loopback_http import serving
from worker.envsession import EnvOnceSession
from worker.modelslab import ModelsLabClient
from worker.modelslab.transport import DirectSession, session_for

API = "https://modelslab.com/api/v6"
PROXY_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "direct"),
    [
        ({}, True),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, False),
        ({"ALL_PROXY": "socks5://proxy.example:1080"}, False),
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "modelslab.com"}, True),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, True),  # not for an https URL
    ],
)
def test_a_proxy_for_the_api_keeps_requests(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], direct: bool
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    session = session_for(API)
    try:
        assert isinstance(session, DirectSession if direct else EnvOnceSession)
        if not direct:
            proxies = session.merge_environment_settings(API, {}, None, None, None)["proxies"]
            assert (
                proxies
                == requests.Session().merge_environment_settings(API, {}, None, None, None)[
                    "proxies"
                ]
            )
    finally:
        session.close()


def test_certificates_are_checked_against_the_bundle_requests_would_use(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert requests.Session().verify is True
    default = DirectSession()._manager.connection_pool_kw
    assert default["cert_reqs"] == "CERT_REQUIRED"
    assert default["ca_certs"] == requests.utils.DEFAULT_CA_BUNDLE_PATH
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/etc/our-ca.pem")
    assert DirectSession()._manager.connection_pool_kw["ca_certs"] == "/etc/our-ca.pem"


class _Redirecting(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.path.endswith("/moved"):
            self.send_response(302)
            self.send_header("location", "/api/v6/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        data = b'{"status":"processing","id":9,"eta":3,"output":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Seen", "yes")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[str]:
    _Redirecting.seen = []
    with serving(_Redirecting) as url:
        yield url


def test_a_post_is_json_and_its_answer_reads_as_requests_did(server: str) -> None:
    session = DirectSession()
    resp = session.post(
        f"{server}/api/v6/video/fetch/9?x=1",
        json={"key": "k"},
        timeout=(2.0, 2.0),
        headers={"Accept": "application/json"},
    )
    assert resp.status_code == 200
    assert json.loads(resp.content)["id"] == 9
    assert resp.headers.get("content-type") == "application/json"  # any case
    assert resp.headers.get("x-seen") == "yes"
    [seen] = _Redirecting.seen
    assert seen["path"] == "/api/v6/video/fetch/9?x=1"
    assert json.loads(seen["body"]) == {"key": "k"}
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["Accept"] == "application/json"
    session.close()


def test_a_redirect_is_answered_not_followed(server: str) -> None:
    """A 302 is the answer (the body of a POST that carries the key goes nowhere else)."""
    session = DirectSession()
    resp = session.post(f"{server}/api/v6/moved", json={"key": "k"}, timeout=(2, 2), headers={})
    assert resp.status_code == 302
    assert [s["path"] for s in _Redirecting.seen] == ["/api/v6/moved"]
    with pytest.raises(ValueError, match="redirects"):
        session.post(server, json={}, timeout=(2, 2), headers={}, allow_redirects=True)


def test_the_client_uses_it_by_default(server: str, clean_env: pytest.MonkeyPatch) -> None:
    with ModelsLabClient(f"{server}/api/v6", "k" * 20) as client:
        assert isinstance(client.session, DirectSession)
        assert client.fetch("9").eta == 3.0
    assert json.loads(_Redirecting.seen[0]["body"]) == {"key": "k" * 20}
