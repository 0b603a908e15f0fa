"""How the ModelsLab client reaches the API: straight through urllib3 when no proxy applies.

``requests`` costs about 0.35 ms of CPU per call above the urllib3 pool underneath it
(preparing the request, hooks, cookies, merging the environment's settings, building its
``Response``), more than the rest of a fetch's client side. A worker makes three or four
calls per job, so ``DirectSession`` sends them through one urllib3 connection pool per
host instead, with the same rules as ``requests``' defaults: certificates verified against
``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or certifi's bundle, no retries, no redirects
followed, (connect, read) timeouts. Its errors are ``requests``' exceptions with urllib3's
cause inside, as ``requests`` raises them, so the client sorts them the same way.

When the environment names a proxy for the API's URL (``HTTPS_PROXY``, ``ALL_PROXY``...,
unless ``NO_PROXY`` exempts it), ``session_for`` returns an ``EnvOnceSession``: proxies,
their credentials and SOCKS stay ``requests``' business.

Never: retry, follow a redirect, or put anything of the request (its body carries the
API key) into an exception.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, select_proxy
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from worker.envsession import EnvOnceSession

__all__ = ["DirectResponse", "DirectSession", "session_for"]


class DirectResponse:
    """The parts of a ``requests.Response`` the client reads."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, content: bytes, headers: Any) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers  # urllib3's HTTPHeaderDict: case-insensitive, as requests'


class DirectSession:
    """``post`` and ``close`` of a ``requests.Session``, on urllib3 pools (one per host)."""

    def __init__(self, *, pool_maxsize: int = 16) -> None:
        ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._manager = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_maxsize,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca or DEFAULT_CA_BUNDLE_PATH,
            retries=False,
        )
        self._pools: dict[tuple[str, str, int | None], Any] = {}
        self._lock = threading.Lock()

    def _pool(self, url: str) -> tuple[Any, str]:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = self._manager.connection_from_url(url)
        path = parts.path or "/"
        return pool, f"{path}?{parts.query}" if parts.query else path

    def post(
        self,
        url: str,
        *,
        json: Any,
        timeout: tuple[float, float],
        headers: dict[str, str],
        allow_redirects: bool = False,
    ) -> DirectResponse:
        if allow_redirects:
            raise ValueError("DirectSession never follows redirects")
        body = _dumps(json)
        try:
            pool, path = self._pool(url)
            resp = pool.urlopen(
                "POST",
                path,
                body=body,
                headers={**headers, "Content-Type": "application/json"},
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                preload_content=True,
            )
        except LocationParseError as exc:
            raise requests.exceptions.InvalidURL(exc) from None
        except HTTPError as exc:
            raise _as_requests_error(exc) from None
        return DirectResponse(resp.status, resp.data, resp.headers)

    def close(self) -> None:
        self._manager.clear()
        self._pools.clear()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _as_requests_error(exc: HTTPError) -> requests.RequestException:
    """The exception ``requests`` raises for ``exc`` (urllib3's own kept as its argument,
    where ``worker.modelslab.client`` looks for whether the request was ever sent)."""
    if isinstance(exc, ConnectTimeoutError):
        return requests.ConnectTimeout(exc)
    if isinstance(exc, ReadTimeoutError):
        return requests.ReadTimeout(exc)
    if isinstance(exc, SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, NewConnectionError | NameResolutionError | ProtocolError):
        return requests.ConnectionError(exc)
    return requests.RequestException(exc)


def session_for(base_url: str, *, pool_maxsize: int = 16) -> Any:
    """The session the client should use for ``base_url``: ``DirectSession`` unless the
    environment routes it through a proxy (then ``requests``, read once per host)."""
    if select_proxy(base_url, get_environ_proxies(base_url)):
        from requests.adapters import HTTPAdapter

        session = EnvOnceSession()
        # No retries in the adapter either: a retried POST could be a second payment.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session
    return DirectSession(pool_maxsize=pool_maxsize)
