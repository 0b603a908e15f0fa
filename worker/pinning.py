"""Connections that go to the address that was checked, not to a second lookup's answer.

``netguard.check_url`` resolves a download's host and vets every address. If the
connection then resolved the name again, a name answering a public address first and
``127.0.0.1`` second (DNS rebinding) would pass the check and reach loopback. So a
download runs inside ``pinned(host, port, ip)``, and a session from ``pinned_session()``
connects each new socket to the pinned IP, never resolving the name itself; TLS still
uses the host name (SNI and the certificate check), and the ``Host`` header is the URL's.

A pinned session refuses to open a connection nobody pinned (``DownloadRefused``), so it
cannot be used by mistake for a request that skipped the check. A host allowed by name
(``T2V_DOWNLOAD_ALLOWED_HOSTS``) is pinned to ``None``: it resolves as usual.
Through a proxy the connection goes to the proxy, which does its own lookup.

The only urllib3 detail relied on is ``HTTPConnection._dns_host`` (the address
``_new_conn`` connects to, kept apart from ``host`` for exactly this); the test in
``tests/integration/test_download.py`` fails if a new urllib3 stops honouring it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from worker.envsession import EnvOnceSession
from worker.netguard import DownloadRefused

# (host, port) → the vetted IP to connect to, or None (allowed by name: resolve as usual).
Pins = dict[tuple[str, int], str | None]
_PINS: ContextVar[Pins | None] = ContextVar("t2v_download_pins", default=None)


def _key(host: str, port: int) -> tuple[str, int]:
    return host.lower().rstrip(".").strip("[]"), port


@contextmanager
def pinned(host: str, port: int, ip: str | None) -> Iterator[None]:
    """Within this block, a pinned session connects ``host:port`` to ``ip`` only."""
    pins: Pins = dict(_PINS.get() or {})
    pins[_key(host, port)] = ip
    token = _PINS.set(pins)
    try:
        yield
    finally:
        _PINS.reset(token)


def _pinned_socket(conn: Any, connect: Any) -> socket.socket:
    pins = _PINS.get() or {}
    key = _key(conn.host, conn.port)
    if key not in pins:
        raise DownloadRefused(
            f"download refused: a connection to {conn.host}:{conn.port} that was not checked first"
        )
    ip = pins[key]
    if ip is None:
        return connect()  # type: ignore[no-any-return]
    name = conn._dns_host
    conn._dns_host = ip
    try:
        return connect()  # type: ignore[no-any-return]
    finally:
        conn._dns_host = name


class _PinnedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _pinned_socket(self, super()._new_conn)


class _PinnedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _pinned_socket(self, super()._new_conn)


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections go to the pinned address only."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PinnedHTTPPool,
            "https": _PinnedHTTPSPool,
        }


def pinned_session() -> requests.Session:
    """A session for downloads: every connection goes to the address ``pinned`` names."""
    session = EnvOnceSession()
    adapter = PinnedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
