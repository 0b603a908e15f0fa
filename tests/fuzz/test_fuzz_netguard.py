"""Fuzz target: the download URL check, ``worker.netguard.check_url``.

Rule: for any URL string, any allow-list and a resolver returning any address strings
(or failing as a resolver does, with ``OSError``/``UnicodeError``), ``check_url`` returns
the vetted addresses or raises ``DownloadRefused`` / ``TransientError``; nothing else.
It never returns an address in a non-public range (checked against the IANA
special-purpose registries below, written out independently of the code under test,
including IPv4 embedded in IPv4-mapped, NAT64, 6to4 and Teredo addresses) unless the
allow-list holds it; a host allowed by name returns no addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from t2v_core.errors import TransientError
from tests.fuzz.budget import classified, fuzz
from worker.netguard import AllowList, DownloadRefused, check_url

V4_NEVER = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",  # (IANA)
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
V6_NEVER = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "2001:10::/28",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
]
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


#: In 192.0.0.0/24 but globally reachable (IANA): refusing them is allowed, not required.
V4_ANYCAST = {ipaddress.IPv4Address("192.0.0.9"), ipaddress.IPv4Address("192.0.0.10")}


def never_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv4Address):
        return addr not in V4_ANYCAST and any(addr in net for net in V4_NEVER)
    plain = ipaddress.IPv6Address(int(addr))  # without a scope id
    if any(plain in net for net in V6_NEVER):
        return True
    embedded = [plain.ipv4_mapped, plain.sixtofour, plain.teredo and plain.teredo[1]]
    if plain in NAT64:
        embedded.append(ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF))
    return any(v4 is not None and never_public(v4) for v4 in embedded)


v4_refused = st.sampled_from(V4_NEVER).flatmap(lambda n: st.ip_addresses(network=n))
v6_refused = st.sampled_from(V6_NEVER).flatmap(lambda n: st.ip_addresses(network=n))
v4_any = st.one_of(v4_refused, st.ip_addresses(v=4))


def wrap(v4: ipaddress.IPv4Address, how: int) -> ipaddress.IPv6Address:
    n = int(v4)
    return ipaddress.IPv6Address(
        [
            (0xFFFF << 32) | n,  # ::ffff:a.b.c.d
            (0x0064FF9B << 96) | n,  # 64:ff9b::a.b.c.d
            (0x2002 << 112) | (n << 80),  # 6to4
            (0x20010000 << 96) | (n ^ 0xFFFFFFFF),  # Teredo (client obfuscated)
        ][how]
    )


addresses = st.one_of(
    v4_any,
    v6_refused,
    st.ip_addresses(v=6),
    st.tuples(v4_any, st.integers(0, 3)).map(lambda t: wrap(*t)),
).map(str)
address_strings = st.one_of(
    addresses,
    addresses.map(lambda a: a + "%eth0"),
    addresses.map(lambda a: " " + a),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "%",
            "%eth0",
            "localhost",
            "1.2.3",
            "01.02.03.04",
            "::ffff:1.2.3.4.5",
            "[::1]",
            "0x7f.1",
            "2130706433",
            "1.1.1.1\x00",
            "8.8.8.8/32",
        ]
    ),
)
hosts = st.one_of(
    addresses.map(lambda a: f"[{a}]" if ":" in a else a),
    addresses.map(lambda a: f"[{a}%25eth0]" if ":" in a else a),
    st.sampled_from(
        [
            "cdn.example",
            "sim.local",
            "SIM.local.",
            "localhost",
            "xn--nxasmq6b",
            "ex\u00e4mple.com",
            "a..b",
            "[::1",
            "[v1.x]",
            "[zz]",
            "\uff03",
            "%2e",
            "user@evil.example",
            "cdn.example:99999",
            "cdn.example:-1",
            "",
        ]
    ),
    st.text(max_size=15),
)
urls = st.one_of(
    st.tuples(
        st.sampled_from(["http", "https", "HTTP", "ftp", "file", "", "javascript"]),
        hosts,
        st.sampled_from(["", ":80", ":0", ":65536", ":x", ":" + "9" * 30]),
        st.text(max_size=10),
    ).map(lambda t: f"{t[0]}://{t[1]}{t[2]}/{t[3]}"),
    st.text(max_size=40),
)
allow_entries = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "127.0.0.1",
                "sim.local",
                "10.0.0.0/8",
                "::1",
                "[::1]",
                "fe80::/10",
                "0.0.0.0/0",
                "garbage/99",
                "",
            ]
        ),
        addresses,
        st.text(max_size=10),
    ),
    max_size=3,
)


@fuzz("netguard", 1500)
@given(
    url=urls,
    allowed=allow_entries,
    answer=st.one_of(
        st.lists(address_strings, max_size=4),
        st.sampled_from([OSError("Name or service not known"), UnicodeError("label too long")]),
    ),
)
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(url="http://[zz]/", allowed=[], answer=[])  # urlsplit: ValueError
@example(url="http://[::1/", allowed=[], answer=[])  # urlsplit: ValueError
@example(url="http://cdn.example/", allowed=[], answer=[""])  # ip_address(""): ValueError
@example(url="http://192.0.0.8/", allowed=[], answer=[])  # vetted: 192.0.0.0/24 not global
@example(url="http://cdn.example/", allowed=[], answer=["192.0.0.170"])
def test_check_url(url: str, allowed: list[str], answer: list[str] | Exception) -> None:
    def resolver(host: str, port: int) -> Iterable[str]:
        if isinstance(answer, Exception):
            raise answer
        return answer

    try:
        got: Any = check_url(url, allowed, resolver=resolver)
    except (DownloadRefused, TransientError) as exc:
        classified("test_check_url", type(exc).__name__)
        assert str(exc)
        return
    classified("test_check_url", "vetted")
    allow = AllowList.parse(allowed)
    for addr in got:
        assert isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address)
        assert allow.allows_ip(addr) or not never_public(addr), (
            f"{url!r} vetted non-public {addr} (allowed: {allowed})"
        )
