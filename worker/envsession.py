"""A ``requests.Session`` that reads the proxy environment once per host, not per request.

``requests`` honours ``HTTPS_PROXY``/``NO_PROXY`` and ``REQUESTS_CA_BUNDLE`` by scanning the
whole process environment on every request (``getproxies_environment`` lower-cases each
variable, twice per request). That was about a tenth of a job's worker CPU here, and it
grows with the environment (a Kubernetes pod carries a few variables per service in its
namespace). ``EnvOnceSession`` keeps the same rules (the same functions decide) but asks
them once per scheme, host and port for the life of the process: a worker's environment
does not change after it starts.

Never: change what is proxied or verified; only when the environment is read.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies

__all__ = ["EnvOnceSession"]


class EnvOnceSession(requests.Session):
    """``requests.Session`` with the environment's proxies and CA bundle cached per host."""

    def __init__(self) -> None:
        super().__init__()
        self._proxies_by_host: dict[tuple[str, str, int | None, str | None], dict[str, str]] = {}
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

    def env_proxies(self, url: str, no_proxy: str | None = None) -> dict[str, str]:
        """``requests.utils.get_environ_proxies(url)``, asked once per scheme, host and port."""
        parts = urlsplit(url)
        key = (parts.scheme, (parts.hostname or "").lower(), parts.port, no_proxy)
        found = self._proxies_by_host.get(key)
        if found is None:
            # Two threads asking at once both compute the same answer; either may stay.
            found = self._proxies_by_host[key] = dict(get_environ_proxies(url, no_proxy=no_proxy))
        return found

    def merge_environment_settings(
        self,
        url: str,
        proxies: dict[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: Any,
    ) -> dict[str, Any]:
        # What requests.Session does, with the environment's part looked up once per host.
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged = dict(proxies or {})
        for scheme, proxy in self.env_proxies(url, merged.get("no_proxy")).items():
            merged.setdefault(scheme, proxy)
        if verify is True or verify is None:
            verify = self._ca_bundle or verify
        return {
            "proxies": merge_setting(merged, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }
