"""The HTTP client for ModelsLab text-to-video: one pooled session, one call per method.

``ModelsLabClient`` does one HTTP call per method and no retries: the task layer decides
when to try again (with a countdown, never ``time.sleep``). A submit whose request may
have reached the server (read timeout, connection dropped after sending) raises
``SubmitOutcomeUnknown`` so the caller does not blindly pay twice. Timeouts are
(connect, read); every answer is handed to ``answers.parse_response``, which turns it
into a ``ProviderResult`` or one of our errors.

Never: put the API key anywhere but the JSON request body: not in a URL, a header, a log
line, an exception message or ``repr(client)``. Everything echoed from the server is
scrubbed of the key before it is shown, and a ``requests`` exception (whose prepared
request carries the key) is never chained onto ours. Never retry inside, not even in the
adapter: a retried POST could be a second payment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests
from pydantic import SecretStr

from t2v_core.errors import ConfigError, PermanentError, RateLimited, TransientError
from worker.modelslab.answers import (
    ProviderResult,
    SubmitOutcomeUnknown,
    parse_response,
    scrub,
)
from worker.modelslab.transport import session_for

__all__ = ["ModelsLabClient"]

# Gateway answers that may hide an accepted request behind them.
_MAYBE_TAKEN = frozenset({408, 502, 504, 520, 522, 524})


# -- the client -------------------------------------------------------------------------


def _never_sent(exc: BaseException) -> bool:
    """True if ``exc`` happened before the request could reach the server."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(
            cur,
            NewConnectionError
            | NameResolutionError
            | ConnectTimeoutError
            | requests.ConnectTimeout
            | requests.exceptions.SSLError,
        ):
            return True
        todo.extend([getattr(cur, "reason", None), cur.__cause__, cur.__context__])
        todo.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
    return False


class ModelsLabClient:
    """One pooled HTTP session to ModelsLab (or the simulator); no retries inside."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_maxsize: int = 16,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"ModelsLab base URL must be http(s): {base_url!r}")
        key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not key.get_secret_value():
            raise ConfigError("ModelsLab API key is empty (set T2V_MODELSLAB_API_KEY)")
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.timeout = (connect_timeout, read_timeout)
        self._own_session = session is None
        # Straight through urllib3 unless a proxy applies (``transport``); never retried.
        self.session: Any = session or session_for(self.base_url, pool_maxsize=pool_maxsize)

    def __repr__(self) -> str:
        return f"ModelsLabClient(base_url={self.base_url!r})"

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> ModelsLabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, payload: Mapping[str, Any]) -> ProviderResult:
        """POST text2video once. ``SubmitOutcomeUnknown`` if it may have been accepted."""
        body = {k: v for k, v in payload.items() if k != "key"}
        return self._post("/video/text2video", body, submit=True)

    def fetch(self, provider_id: str) -> ProviderResult:
        """POST fetch/{id} once; safe to repeat."""
        pid = str(provider_id).strip()
        if not pid:
            raise PermanentError("cannot fetch: empty provider id")
        return self._post(f"/video/fetch/{quote(pid, safe='')}", {}, submit=False)

    def _post(self, path: str, body: dict[str, Any], *, submit: bool) -> ProviderResult:
        url = self.base_url + path
        secret = self._key.get_secret_value()
        what = "submit" if submit else "fetch"
        try:
            resp = self.session.post(
                url,
                json={**body, "key": secret},
                timeout=self.timeout,
                headers={"Accept": "application/json"},
                allow_redirects=False,
            )
            content = resp.content
        except requests.RequestException as exc:
            # `from None`: the chained exception holds the prepared request, whose body
            # carries the key; a traceback printer must not reach it.
            reason = scrub(f"{type(exc).__name__}: {exc}", secret)
            if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
                raise ConfigError(f"ModelsLab {what} URL is invalid: {reason}") from None
            if submit and not _never_sent(exc):
                raise SubmitOutcomeUnknown(
                    f"ModelsLab submit sent but unanswered ({reason}); it may have been accepted"
                ) from None
            raise TransientError(f"ModelsLab {what} failed: {reason}") from None
        try:
            return parse_response(
                resp.status_code,
                content,
                resp.headers.get("content-type"),
                resp.headers,
                secret=secret,
            )
        except TransientError as exc:
            # A gateway timeout/bad gateway, or a 2xx we cannot read, may come after the
            # origin queued (and charged) the job: for a submit that is "outcome unknown",
            # never "not taken". A plain 500/503 is the origin refusing: not taken. A
            # gateway's page that says "rate limit" or "too many" is not the origin's 429
            # either; a 2xx `status: "error"` rate limit is the origin's own refusal.
            gateway = resp.status_code in _MAYBE_TAKEN
            unread_2xx = 200 <= resp.status_code < 300 and not isinstance(exc, RateLimited)
            if submit and (gateway or unread_2xx):
                raise SubmitOutcomeUnknown(
                    f"ModelsLab submit answered HTTP {resp.status_code} ({exc}); "
                    "it may have been accepted"
                ) from None
            raise
