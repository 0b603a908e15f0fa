"""Which addresses this system never connects to unless allow-listed (the SSRF rules).

Pure classification shared by the worker's download and callback guard
(``worker.netguard.check_url``) and the producer's enqueue-time check of a callback URL
(``t2v_core.callbacks``): one set of rules, in one place. Refused: private, loopback,
link-local, multicast, reserved, unspecified, shared (100.64/10), documentation and IPv6
site-local addresses, and IPv6 forms that embed a refused IPv4 address (IPv4-mapped,
6to4, NAT64, Teredo).

This module must never resolve a name or open a connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Not globally reachable (IANA special-purpose registry) yet ``is_global`` on Python < 3.12.4:
# 192.0.0.0/24 beyond its /29 (192.0.0.9 and .10, anycast, are refused too: harmless).
_NOT_GLOBAL = (ipaddress.ip_network("192.0.0.0/24"),)


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
