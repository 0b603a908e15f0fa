"""Copy one provider output URL into our storage: streamed, hashed, sniffed, size-capped.

``download_to_storage`` fetches the URL with constant memory into a temp file on disk
(never RAM), hashing SHA-256 and counting bytes on the way, and stops past ``max_bytes``.
It checks the bytes really are a video: MP4 (an ``ftyp`` box at offset 4) or GIF
(``GIF87a``/``GIF89a``). An optional ``inspect`` hook sees the finished temp file (probe
it, cut a poster) before the upload; then the file goes to storage with its real content
type, and the temp file is removed whatever happens.

Outcomes, by what the caller should do:
    404 / 403 / 410                   LinkNotReady (TransientError): retry within the
                                      not-found window; CDN links appear late
    5xx, 408, 429, timeouts, resets   TransientError
    an HTML/JSON/XML/empty 200        LinkServesPage (LinkNotReady): a CDN error page, not
                                      the video (yet); retried within the same window
    other bytes that are no MP4/GIF   PermanentError
    larger than max_bytes             PermanentError
    scheme or address refused (SSRF)  DownloadRefused (PermanentError)
    a GIF when an MP4 was asked       accepted; the real type is recorded and the key's
                                      extension follows it

Never: connect anywhere but the address that was checked (``worker.pinning``: give it a
``pinned_session()``), follow a redirect without re-checking its target (redirects are
followed by hand, at most ``max_redirects``, each hop through ``netguard.check_url``),
hold the body
in memory, or leave a temp file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import requests

from t2v_core.errors import PermanentError, RateLimited, T2VError, TransientError
from worker.envsession import EnvOnceSession
from worker.netguard import (
    AllowList,
    DownloadRefused,
    Resolver,
    address_problem,
    check_url,
    system_resolver,
    url_port,
)
from worker.pinning import pinned
from worker.storage import Storage

__all__ = [
    "CONTENT_TYPES",
    "DownloadRefused",
    "DownloadResult",
    "LinkNotReady",
    "LinkServesPage",
    "TransferLimits",
    "download_to_storage",
    "sniff_type",
]

log = logging.getLogger(__name__)

VideoKind = Literal["mp4", "gif"]
CONTENT_TYPES: dict[str, str] = {"mp4": "video/mp4", "gif": "image/gif"}
_SNIFF_BYTES = 64
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NOT_READY = frozenset({403, 404, 410})


class LinkNotReady(TransientError):
    """The output link answers 404/403/410: it may appear later; retry within a window."""


class LinkServesPage(LinkNotReady):
    """The output link answers 200 with a page (HTML, JSON, nothing) instead of the video:
    a CDN error page, or a file not there yet. Retried within the same window as a 404,
    then the job is parked as ``link_not_video``."""


@dataclass(frozen=True)
class DownloadResult:
    uri: str
    bytes: int
    sha256: str
    content_type: str
    source_url: str
    kind: str = "mp4"
    final_url: str = ""
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def sniff_type(head: bytes) -> VideoKind | None:
    """``"mp4"``/``"gif"`` from a file's first bytes, else None."""
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "mp4"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def _looks_like_text(head: bytes, content_type: str) -> bool:
    if content_type.startswith(("text/", "application/json", "application/xml")):
        return True
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return stripped[:1] in (b"<", b"{", b"[") or not stripped


def _key_for(key: str | Callable[[str], str], kind: str) -> str:
    if callable(key):
        return key(kind)
    # The caller built the key for the type it expected; keep name and type consistent.
    return re.sub(r"\.(mp4|gif)$", f".{kind}", key)


def _peer_ip(resp: requests.Response) -> str | None:
    """The address the response really came from (None when it cannot be told)."""
    try:
        sock = resp.raw.connection.sock
        return str(sock.getpeername()[0]) if sock is not None else None
    except (AttributeError, OSError):
        return None


def _check_peer(resp: requests.Response, url: str, allow: AllowList, proxied: bool) -> None:
    # Defence against DNS rebinding: the name was vetted before connecting, but the
    # connection made its own lookup. Through a proxy the peer is the proxy: skip.
    if proxied:
        return
    host = urlsplit(url).hostname or ""
    peer = _peer_ip(resp)
    if peer is None or allow.allows_name(host):
        return
    addr = ipaddress.ip_address(peer.split("%", 1)[0])
    if allow.allows_ip(addr):
        return
    problem = address_problem(addr)
    if problem is not None:
        raise DownloadRefused(f"download refused: {host!r} connected to {problem} address {addr}")


def _status_error(resp: requests.Response, url: str) -> Exception:
    code = resp.status_code
    where = urlsplit(url).hostname
    if code in _NOT_READY:
        return LinkNotReady(f"output link not ready: HTTP {code} from {where}")
    if code == 429:
        retry_after: float | None
        try:
            retry_after = float(resp.headers.get("retry-after", ""))
        except ValueError:
            retry_after = None
        return RateLimited(f"download throttled: HTTP 429 from {where}", retry_after=retry_after)
    if code >= 500 or code == 408:
        return TransientError(f"download failed: HTTP {code} from {where}")
    return PermanentError(f"download failed: HTTP {code} from {where}")


@dataclass(frozen=True)
class TransferLimits:
    """How a transfer may go: built once from the worker's settings, passed in."""

    max_bytes: int
    allowed_hosts: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    chunk_size: int = 1 << 16
    max_redirects: int = 5
    tmp_dir: str | Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> TransferLimits:
        """From ``WorkerSettings`` (``download_max_bytes``, ``download_allowed_hosts``, the
        HTTP timeouts)."""
        return cls(
            max_bytes=settings.download_max_bytes,
            allowed_hosts=tuple(settings.download_allowed_hosts),
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )


def download_to_storage(
    url: str,
    storage: Storage,
    key: str | Callable[[str], str],
    *,
    session: requests.Session,
    limits: TransferLimits,
    expected_type: str | None = None,
    inspect: Callable[[Path], Mapping[str, Any]] | None = None,
    resolver: Resolver = system_resolver,
) -> DownloadResult:
    """Stream ``url`` into ``storage`` at ``key`` within ``limits``; see the module docstring
    for outcomes.

    ``key`` is a string (its ``.mp4``/``.gif`` extension is swapped to the sniffed type)
    or a function of the sniffed type (``lambda ext: object_key(job_id, i, ext)``).
    ``inspect(path)`` runs on the complete temp file before upload; its dict becomes
    ``DownloadResult.meta``. If it raises one of our errors (``TransientError``,
    ``PermanentError``), that error propagates and nothing is stored; any other exception
    is logged, the download still succeeds and ``meta["inspect_error"]`` says why.
    """
    allow = AllowList.parse(limits.allowed_hosts)
    current = url
    for _hop in range(limits.max_redirects + 1):
        vetted = check_url(current, allow, resolver=resolver)
        proxied = bool(session.proxies) or bool(session.trust_env and env_proxies(session, current))
        parts = urlsplit(current)
        port = url_port(parts)  # check_url refused a malformed one
        try:
            # A pinned session (``worker.pinning``) connects to the address just vetted,
            # never to a second lookup's answer (DNS rebinding).
            with pinned(parts.hostname or "", port, str(vetted[0]) if vetted else None):
                resp = session.get(
                    current,
                    stream=True,
                    allow_redirects=False,
                    timeout=(limits.connect_timeout, limits.read_timeout),
                    # identity: the size cap and hash apply to the bytes we store.
                    headers={
                        "Accept": "video/mp4,image/gif,*/*;q=0.1",
                        "Accept-Encoding": "identity",
                    },
                )
        except requests.RequestException as exc:
            raise TransientError(
                f"download from {urlsplit(current).hostname} failed: {type(exc).__name__}: {exc}"
            ) from None
        with resp:
            _check_peer(resp, current, allow, proxied)
            if resp.status_code in _REDIRECTS and resp.headers.get("location"):
                current = urljoin(current, resp.headers["location"])
                continue
            if resp.status_code != 200:
                raise _status_error(resp, current)
            return _store_body(
                resp,
                source_url=url,
                final_url=current,
                storage=storage,
                key=key,
                max_bytes=limits.max_bytes,
                expected_type=expected_type,
                chunk_size=limits.chunk_size,
                inspect=inspect,
                tmp_dir=limits.tmp_dir,
            )
    raise PermanentError(f"download refused: more than {limits.max_redirects} redirects from {url}")


def _store_body(
    resp: requests.Response,
    *,
    source_url: str,
    final_url: str,
    storage: Storage,
    key: str | Callable[[str], str],
    max_bytes: int,
    expected_type: str | None,
    chunk_size: int,
    inspect: Callable[[Path], Mapping[str, Any]] | None,
    tmp_dir: str | Path | None,
) -> DownloadResult:
    host = urlsplit(final_url).hostname
    declared_type = (resp.headers.get("content-type") or "").split(";")[0].strip().lower()
    declared_len = resp.headers.get("content-length")
    if declared_len and declared_len.isdigit() and int(declared_len) > max_bytes:
        raise PermanentError(
            f"download refused: {host} announces {int(declared_len)} bytes, limit {max_bytes}"
        )
    digest = hashlib.sha256()
    size = 0
    head = b""
    kind: VideoKind | None = None
    fd, tmp_name = tempfile.mkstemp(prefix="t2v-dl-", suffix=".part", dir=tmp_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                for chunk in resp.iter_content(chunk_size=chunk_size):
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > max_bytes:
                        raise PermanentError(
                            f"download refused: {host} sent more than {max_bytes} bytes"
                        )
                    if kind is None:
                        head += chunk[:_SNIFF_BYTES]
                        if len(head) >= 12:
                            kind = _judge(head, declared_type, host)
                    digest.update(chunk)
                    out.write(chunk)
            except requests.RequestException as exc:
                raise TransientError(
                    f"download from {host} broke off after {size} bytes: {type(exc).__name__}"
                ) from None
        if kind is None:
            kind = _judge(head, declared_type, host)
        if expected_type and kind != expected_type.lower().lstrip("."):
            log.info("asked for %s, %s sent %s; keeping the real type", expected_type, host, kind)
        meta: dict[str, Any] = {}
        if inspect is not None:
            try:
                meta = dict(inspect(tmp))
            except T2VError:
                raise  # the hook judged the file (e.g. "not playable"): its verdict stands
            except Exception as exc:  # a crashing probe must not lose a good download
                log.warning("inspecting the download from %s failed: %s", host, exc)
                meta = {"inspect_error": f"{type(exc).__name__}: {exc}"}
        final_key = _key_for(key, kind)
        content_type = CONTENT_TYPES[kind]
        uri = storage.put_file(final_key, tmp, content_type=content_type)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return DownloadResult(
        uri=uri,
        bytes=size,
        sha256=digest.hexdigest(),
        content_type=content_type,
        source_url=source_url,
        kind=kind,
        final_url=final_url,
        key=final_key,
        meta=meta,
    )


def _judge(head: bytes, declared_type: str, host: str | None) -> VideoKind:
    kind = sniff_type(head)
    if kind is not None:
        return kind
    if _looks_like_text(head, declared_type):
        preview = head[:40].decode("utf-8", "replace").strip()
        raise LinkServesPage(
            f"download from {host} returned a {declared_type or 'text'} page, not a video"
            f" ({preview!r}...): likely a CDN error page"
        )
    raise PermanentError(
        f"download from {host} is not an MP4 or GIF (content-type {declared_type or 'none'},"
        f" first bytes {head[:12].hex()})"
    )


def env_proxies(session: requests.Session, url: str) -> dict[str, str]:
    """The environment's proxies for ``url`` (looked up once per host on our sessions)."""
    if isinstance(session, EnvOnceSession):
        return session.env_proxies(url)
    return dict(requests.utils.get_environ_proxies(url))
