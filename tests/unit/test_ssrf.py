"""Address classification and URL checks of the download SSRF guard (no network)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from t2v_core.errors import PermanentError, TransientError
from worker.netguard import AllowList, DownloadRefused, address_problem, check_url

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "private",
    "255.255.255.255": "private",
    "100.64.0.1": "not globally routable",
    "192.0.2.1": "private",
    "198.18.0.1": "private",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "fec0::1": "site-local",
    "2001:db8::1": "private",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "2002:a00:1::": "private",  # 6to4 around 10.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 around 169.254.169.254
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "151.101.1.1", "2606:4700::1111", "2a00:1450:4001::200e"]


@pytest.mark.parametrize(("ip", "reason"), sorted(REFUSED.items()))
def test_refused_addresses(ip: str, reason: str) -> None:
    problem = address_problem(ip)
    assert problem is not None
    assert problem.startswith(reason)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses(ip: str) -> None:
    assert address_problem(ip) is None


def fake_resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> Iterable[str]:
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


RESOLVE = fake_resolver(
    {
        "cdn.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "metadata.internal": ["169.254.169.254"],
        "split.example": ["93.184.216.34", "10.0.0.5"],
        "sim.local": ["127.0.0.1"],
        "v6local.example": ["fe80::1%eth0"],
    }
)


def test_public_host_passes_and_returns_addresses() -> None:
    got = check_url("https://cdn.example/v/a.mp4", resolver=RESOLVE)
    assert [str(a) for a in got] == ["93.184.216.34", "2606:2800:220:1::1"]


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata.internal/latest/meta-data",
        "http://split.example/x",  # one private address is enough to refuse
        "http://sim.local:8000/x",
        "http://v6local.example/x",
        "http://127.0.0.1/x",
        "http://[::1]:8080/x",
        "http://[::ffff:7f00:1]/x",
        "http://169.254.169.254/",
    ],
)
def test_private_targets_refused(url: str) -> None:
    with pytest.raises(DownloadRefused, match="download refused"):
        check_url(url, resolver=RESOLVE)


@pytest.mark.parametrize(
    "url", ["ftp://cdn.example/a", "file:///etc/passwd", "gopher://x/", "//cdn.example/a", "x"]
)
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(DownloadRefused, match="scheme"):
        check_url(url, resolver=RESOLVE)


def test_refusal_is_permanent() -> None:
    with pytest.raises(PermanentError):
        check_url("http://127.0.0.1/", resolver=RESOLVE)


def test_allow_list_by_name_ip_and_network() -> None:
    assert check_url("http://sim.local:8000/x", ["SIM.local"], resolver=RESOLVE) == []
    assert check_url("http://sim.local/x", ["127.0.0.1"], resolver=RESOLVE)
    assert check_url("http://127.0.0.1:9/x", ["127.0.0.1"], resolver=RESOLVE)
    assert check_url("http://[::1]/x", ["::1"], resolver=RESOLVE)
    assert check_url("http://[::1]/x", ["[::1]"], resolver=RESOLVE)
    assert check_url("http://split.example/x", ["10.0.0.0/8"], resolver=RESOLVE)
    with pytest.raises(DownloadRefused):
        check_url("http://metadata.internal/", ["10.0.0.0/8", "sim.local"], resolver=RESOLVE)


def test_allow_list_parse_ignores_blanks() -> None:
    allow = AllowList.parse(["", " ", "Host.Example.", "192.168.0.0/16"])
    assert allow.allows_name("host.example")
    assert not allow.allows_name("other")


def test_unresolvable_host_is_transient_not_refused() -> None:
    with pytest.raises(TransientError) as info:
        check_url("http://nowhere.example/x", resolver=RESOLVE)
    assert not isinstance(info.value, PermanentError)


def test_missing_host_and_bad_port() -> None:
    with pytest.raises(DownloadRefused):
        check_url("http:///path", resolver=RESOLVE)
    with pytest.raises(DownloadRefused):
        check_url("http://cdn.example:99999/x", resolver=RESOLVE)


def test_numeric_host_forms_are_resolved_like_connections_do() -> None:
    # 2130706433 == 127.0.0.1; getaddrinfo accepts it, so the guard must check the result.
    with pytest.raises(DownloadRefused):
        check_url("http://2130706433/x")
    with pytest.raises(DownloadRefused):
        check_url("http://0x7f.1/x")
