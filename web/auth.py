"""Who may use `t2v web`: the token, the login cookie, CSRF and the same-origin rule.

With ``T2V_WEB_TOKEN`` set, every route but ``/login``, ``/static`` and ``/healthz`` wants
the token: the API only as ``Authorization: Bearer <token>``, pages and media as the login
cookie (an HMAC of the token, never the token itself) or the same Bearer header. Anything
else is a 401. Every comparison is constant-time (``hmac.compare_digest``).

Always, token or not: a POST whose ``Origin`` (or ``Sec-Fetch-Site``) says another site
sent it is refused (403), so a page elsewhere cannot make a browser on this machine cancel
jobs on a loopback server; the HTML forms also carry a double-submit CSRF token (a random
cookie echoed in a hidden field, checked by ``form_ok``). ``curl`` sends no ``Origin``.

Never: log or echo the token, or put it in a cookie as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SESSION_COOKIE = "t2v_web_session"
CSRF_COOKIE = "t2v_web_csrf"
CSRF_FIELD = "csrf"
OPEN_PREFIXES = ("/login", "/static/", "/healthz")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def session_value(token: str) -> str:
    """The login cookie's value: derived from the token, so the cookie is not the token."""
    return hmac.new(token.encode(), b"t2v-web-session-v1", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def token_ok(given: str | None, token: str) -> bool:
    return given is not None and _same(given, token)


def bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authorized(request: Request, token: str | None) -> bool:
    """True when auth is off, or the request carries the token (or, for pages and media, a
    valid login cookie: the API takes only the Bearer header)."""
    if token is None:
        return True
    if token_ok(bearer(request), token):
        return True
    if request.url.path.startswith("/api/"):
        return False
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie is not None and _same(cookie, session_value(token))


def cross_site(request: Request) -> bool:
    """True when the browser says another site sent this request."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = request.headers.get("host", "")
    return origin not in (f"http://{host}", f"https://{host}")


def csrf_token(request: Request) -> str:
    """The CSRF token for this browser: its cookie's, or a new one (set on the response by
    ``Guard``)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and len(existing) >= 32:
        return existing
    fresh = getattr(request.state, "new_csrf", None)
    if fresh is None:
        fresh = request.state.new_csrf = secrets.token_urlsafe(32)
    return str(fresh)


async def form_ok(request: Request) -> bool:
    """The form's hidden CSRF field matches the browser's CSRF cookie."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE)
    return isinstance(given, str) and cookie is not None and _same(given, cookie)


class Guard(BaseHTTPMiddleware):
    """Auth and the same-origin rule for every route; sets the CSRF cookie when made."""

    def __init__(
        self,
        app: object,
        *,
        token: str | None,
        unauthorized: Callable[[Request], Response],
    ) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.token = token
        self.unauthorized = unauthorized

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if request.method in UNSAFE and cross_site(request):
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
        if not path.startswith(OPEN_PREFIXES) and not authorized(request, self.token):
            if path.startswith("/api/"):
                return JSONResponse(
                    {"error": "unauthorized: send Authorization: Bearer <T2V_WEB_TOKEN>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return self.unauthorized(request)
        response = await call_next(request)
        fresh = getattr(request.state, "new_csrf", None)
        if fresh is not None:
            response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response
