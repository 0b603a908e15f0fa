"""SSRF guard for output downloads: may this worker fetch from that URL?

A ModelsLab response hands us URLs to download; a hostile or broken response could point
them at our own network (cloud metadata at 169.254.169.254, Redis on loopback, a private
admin page). Before every connection (and every redirect hop) the download code calls
``check_url``: only ``http``/``https``, and every address the host resolves to must be
public, unless the host, its IP or a network containing it is in the allow-list
(``T2V_DOWNLOAD_ALLOWED_HOSTS``, e.g. the local simulator on 127.0.0.1).

Refused: private, loopback, link-local, multicast, reserved, unspecified, shared
(100.64/10), documentation and IPv6 site-local addresses, and IPv6 forms that embed a
refused IPv4 address (IPv4-mapped, 6to4, NAT64, Teredo).

This module must never open a connection: it only resolves names (through the resolver
passed in) and classifies addresses, so it is tested without a network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from t2v_core.errors import PermanentError, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]

ALLOWED_SCHEMES = frozenset({"http", "https"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Not globally reachable (IANA special-purpose registry) yet ``is_global`` on Python < 3.12.4:
# 192.0.0.0/24 beyond its /29 (192.0.0.9 and .10, anycast, are refused too: harmless).
_NOT_GLOBAL = (ipaddress.ip_network("192.0.0.0/24"),)


class DownloadRefused(PermanentError):
    """The URL may not be fetched (scheme, or an address we never connect to)."""


def address_problem(ip: IPAddress | str) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is a public address."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            inner = address_problem(embedded)
            if inner is not None:
                return f"{inner} (embedded in {addr})"
        if addr.is_site_local:
            return "site-local"
    # Order matters only for the reason given: the most specific name first.
    checks: tuple[tuple[str, bool], ...] = (
        ("unspecified", addr.is_unspecified),
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("private", addr.is_private),
        ("reserved", addr.is_reserved),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if not addr.is_global or any(addr in net for net in _NOT_GLOBAL):
        return "not globally routable"
    return None


def is_public_address(ip: IPAddress | str) -> bool:
    return address_problem(ip) is None


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AllowList:
    """Host names (case-insensitive), IP addresses and networks (CIDR) always allowed."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Collection[str]) -> AllowList:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


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
        raise DownloadRefused(f"download refused: malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DownloadRefused(f"download refused: scheme {scheme or '(none)'!r} is not http(s)")
    if not host:
        raise DownloadRefused("download refused: URL has no host")
    try:
        port = url_port(parts)
    except ValueError as exc:
        raise DownloadRefused(f"download refused: bad port in URL ({exc})") from None
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
            raise TransientError(f"cannot resolve download host {host!r}: {exc}") from None
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
        except ValueError as exc:  # nothing we can vet: never connect to it
            raise DownloadRefused(f"download refused: {host!r} resolved to {exc}") from None
        if not addresses:
            raise TransientError(f"download host {host!r} resolved to no address")
    for addr in addresses:
        if allow.allows_ip(addr):
            continue
        problem = address_problem(addr)
        if problem is not None:
            raise DownloadRefused(
                f"download refused: {host!r} resolves to {problem} address {addr}"
                " (add it to T2V_DOWNLOAD_ALLOWED_HOSTS if this is intended)"
            )
    return addresses
