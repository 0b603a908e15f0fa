"""SSRF guard for output downloads and completion callbacks: may this worker connect there?

A ModelsLab response hands us URLs to download; a hostile or broken response could point
them at our own network (cloud metadata at 169.254.169.254, Redis on loopback, a private
admin page). Before every connection (and every redirect hop) the download code calls
``check_url``: only ``http``/``https``, and every address the host resolves to must be
public, unless the host, its IP or a network containing it is in the allow-list
(``T2V_DOWNLOAD_ALLOWED_HOSTS``, e.g. the local simulator on 127.0.0.1).

Which addresses are refused is ``t2v_core.addresses`` (private, loopback, link-local, ...;
the producer checks a callback URL's literal address by the same rules at enqueue). HTTP
completion callbacks (``worker.callbacks``) go through ``check_url`` too, with their own
allow-list (``T2V_CALLBACK_ALLOWED_HOSTS``).

This module must never open a connection: it only resolves names (through the resolver
passed in) and classifies addresses, so it is tested without a network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from urllib.parse import SplitResult, urlsplit

from t2v_core.addresses import (
    AllowList,
    IPAddress,
    IPNetwork,
    address_problem,
    is_public_address,
)
from t2v_core.errors import PermanentError, TransientError

__all__ = [
    "ALLOWED_SCHEMES",
    "AllowList",
    "DownloadRefused",
    "IPAddress",
    "IPNetwork",
    "address_problem",
    "check_url",
    "is_public_address",
    "system_resolver",
    "url_port",
]

Resolver = Callable[[str, int], Iterable[str]]

ALLOWED_SCHEMES = frozenset({"http", "https"})


class DownloadRefused(PermanentError):
    """The URL may not be fetched (scheme, or an address we never connect to)."""


def url_port(parts: SplitResult) -> int:
    """The URL's port, or its scheme's default (``ValueError`` for a malformed one)."""
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as the connection code would see them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_url(
    url: str,
    allowed_hosts: Collection[str] | AllowList = (),
    *,
    resolver: Resolver = system_resolver,
    what: str = "download",
    setting: str = "T2V_DOWNLOAD_ALLOWED_HOSTS",
) -> list[IPAddress]:
    """Raise ``DownloadRefused`` unless ``url`` may be fetched; return the vetted addresses.

    A host on the allow-list by name is accepted without looking at its addresses (an
    empty list is returned). Otherwise every resolved address must be public or inside
    an allow-listed IP/network: a name resolving to one public and one private address
    is refused, since the connection could pick either.
    """
    allow = (
        allowed_hosts if isinstance(allowed_hosts, AllowList) else AllowList.parse(allowed_hosts)
    )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # "http://[::1/", "http://[zz]/": no host anyone can reach
        raise DownloadRefused(f"{what} refused: malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DownloadRefused(f"{what} refused: scheme {scheme or '(none)'!r} is not http(s)")
    if not host:
        raise DownloadRefused(f"{what} refused: URL has no host")
    try:
        port = url_port(parts)
    except ValueError as exc:
        raise DownloadRefused(f"{what} refused: bad port in URL ({exc})") from None
    if allow.allows_name(host):
        return []
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            resolved = list(resolver(host, port))
        except (OSError, UnicodeError) as exc:
            # A name that does not resolve now may resolve later (DNS hiccup); the
            # connection would fail anyway, so the caller sees the same TransientError
            # path as a refused connection. Refusing here would turn a blip permanent.
            raise TransientError(f"cannot resolve {what} host {host!r}: {exc}") from None
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
        except ValueError as exc:  # nothing we can vet: never connect to it
            raise DownloadRefused(f"{what} refused: {host!r} resolved to {exc}") from None
        if not addresses:
            raise TransientError(f"{what} host {host!r} resolved to no address")
    for addr in addresses:
        if allow.allows_ip(addr):
            continue
        problem = address_problem(addr)
        if problem is not None:
            raise DownloadRefused(
                f"{what} refused: {host!r} resolves to {problem} address {addr}"
                f" (add it to {setting} if this is intended)"
            )
    return addresses
