"""``WebSettings``: what `t2v web` reads from the environment, on top of ``Settings``.

``T2V_WEB_TOKEN`` turns auth on: the API then wants ``Authorization: Bearer <token>`` and
the pages a login cookie obtained with the token. Without it the server refuses to bind
anywhere but loopback (``app.main``). There is no API key here: the web server never
needs one (it sends tasks by name, like any producer).
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from t2v_core.settings import Settings


class WebSettings(Settings):
    web_token: SecretStr | None = Field(
        None, description="when set: API needs Bearer <token>, pages a login cookie"
    )
    web_page_size: int = Field(50, ge=1, le=200, description="jobs per page of the list")
    web_counts_ttl: float = Field(
        2.0, ge=0, description="seconds the list's state counts are reused (0: every request)"
    )

    @property
    def token(self) -> str | None:
        value = self.web_token.get_secret_value() if self.web_token else ""
        return value or None
