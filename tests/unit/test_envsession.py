"""``EnvOnceSession`` decides proxies and the CA bundle exactly as ``requests.Session`` does,
from an environment it reads once per host."""

from __future__ import annotations

import pytest
import requests

from worker.envsession import EnvOnceSession

URLS = [
    "https://modelslab.com/api/v6/video/text2video",
    "https://pub-3626123a908346a7a8be8d9295f44e26.r2.dev/generations/a.mp4",
    "http://cdn.internal.example:8080/x.gif",
    "http://127.0.0.1:9000/bucket/key",
]


def settings_of(session: requests.Session, url: str) -> dict[str, object]:
    return session.merge_environment_settings(url, {}, None, None, None)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "127.0.0.1,.internal.example"},
        {"https_proxy": "http://p:1", "http_proxy": "http://p:2", "REQUESTS_CA_BUNDLE": "/ca.pem"},
        {"ALL_PROXY": "socks5://p:1080", "CURL_CA_BUNDLE": "/curl-ca.pem"},
    ],
)
def test_same_answers_as_requests(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ours, theirs = EnvOnceSession(), requests.Session()
    for url in URLS:
        assert settings_of(ours, url) == settings_of(theirs, url), url
        assert settings_of(ours, url) == settings_of(theirs, url), url  # from the cache now
    # A request's own settings still win over the environment's.
    own = {"https": "http://mine:1"}
    assert ours.merge_environment_settings(URLS[0], own, None, False, None) == (
        theirs.merge_environment_settings(URLS[0], own, None, False, None)
    )


def test_environment_is_read_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = EnvOnceSession()
    first = settings_of(session, URLS[0])
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:1")
    assert settings_of(session, URLS[0]) == first  # same host: the answer it had
    assert settings_of(session, URLS[1])["proxies"] == {"https": "http://other.example:1"}


def test_without_trust_env_it_is_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = EnvOnceSession()
    session.trust_env = False
    assert settings_of(session, URLS[0])["proxies"] == {}
