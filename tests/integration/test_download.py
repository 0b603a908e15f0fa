"""download_to_storage against a real HTTP server on loopback."""

from __future__ import annotations

import gc
import hashlib
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import pytest
import requests
import urllib3.util.connection
from PIL import Image

from t2v_core.errors import PermanentError, RateLimited, TransientError
from worker.pinning import pinned_session
from worker.storage import LocalStorage, object_key
from worker.transfer import (
    DownloadRefused,
    LinkNotReady,
    LinkServesPage,
    TransferLimits,
    download_to_storage,
    sniff_type,
)

MB = 1024 * 1024
CHUNK = b"\x00" * (64 * 1024)
FAKE_MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def make_mp4() -> bytes:
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(8):
            image = Image.new("RGB", (64, 64), (i * 30, 100, 200))
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return buf.getvalue()


def make_gif() -> bytes:
    import io

    frames = [Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


@dataclass
class Site:
    base: str
    files: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    streamed: dict[str, int] = field(default_factory=dict)  # path -> bytes, no content-length
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


def _serve(site_holder: list[Site], host: str) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            site = site_holder[0]
            site.hits.append(self.path)
            if self.path in site.redirects:
                self.send_response(302)
                self.send_header("Location", site.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path in site.streamed:
                total = site.streamed[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(FAKE_MP4_HEAD)
                sent = len(FAKE_MP4_HEAD)
                try:
                    while sent < total:
                        piece = CHUNK if total - sent >= len(CHUNK) else CHUNK[: total - sent]
                        self.wfile.write(piece)
                        sent += len(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading on purpose (size cap)
                self.close_connection = True
                return
            status, ctype, body = site.files.get(self.path, (404, "text/plain", b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if status == 429:
                self.send_header("Retry-After", "9")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    return {"mp4": make_mp4(), "gif": make_gif()}


@pytest.fixture
def site(media: dict[str, bytes]) -> Iterator[Site]:
    holder: list[Site] = []
    server, _ = _serve(holder, "127.0.0.1")
    site = Site(base=f"http://127.0.0.1:{server.server_address[1]}")
    holder.append(site)
    site.files.update(
        {
            "/v/out.mp4": (200, "video/mp4", media["mp4"]),
            "/v/out.gif": (200, "image/gif", media["gif"]),
            "/v/lying.mp4": (200, "application/octet-stream", media["mp4"]),
            "/v/page.html": (200, "text/html", b"<!DOCTYPE html><html><body>Oops</body></html>"),
            "/v/plain-html": (200, "application/octet-stream", b"  <html>busy</html>"),
            "/v/empty": (200, "video/mp4", b""),
            "/v/junk.bin": (200, "video/mp4", b"\x1a\x45\xdf\xa3" + b"\x01" * 100),  # webm
            "/v/gone": (410, "text/plain", b"gone"),
            "/v/forbidden": (403, "application/xml", b"<Error>AccessDenied</Error>"),
            "/v/boom": (503, "text/html", b"<html>503</html>"),
            "/v/slow-down": (429, "text/plain", b"slow down"),
            "/v/teapot": (418, "text/plain", b"no"),
            "/v/big": (200, "video/mp4", FAKE_MP4_HEAD + b"\x00" * (2 * MB)),
        }
    )
    site.redirects.update(
        {
            "/r/ok": "/r/ok2",
            "/r/ok2": site.url("/v/out.mp4"),
            "/r/loop": "/r/loop",
            "/r/ftp": "ftp://127.0.0.1/x",
            "/r/metadata": "http://169.254.169.254/latest/meta-data/",
        }
    )
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def http() -> Iterator[requests.Session]:
    # The worker's own kind of session: connections go only where check_url vetted.
    with pinned_session() as session:
        session.trust_env = False  # no proxy from the environment between us and loopback
        yield session


def fetch(site: Site, path: str, storage: LocalStorage, http: requests.Session, **kw: Any) -> Any:
    limits: dict[str, Any] = {
        "max_bytes": 10 * MB,
        "allowed_hosts": ("127.0.0.1",),
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
    }
    limits.update({k: kw.pop(k) for k in list(kw) if k in TransferLimits.__dataclass_fields__})
    key = kw.pop("key", object_key("abcdef12", 0, "mp4"))
    return download_to_storage(
        site.url(path), storage, key, session=http, limits=TransferLimits(**limits), **kw
    )


def test_mp4_is_stored_hashed_and_typed(
    site: Site, storage: LocalStorage, http: requests.Session, media: dict[str, bytes]
) -> None:
    result = fetch(site, "/v/out.mp4", storage, http, expected_type="mp4")
    data = media["mp4"]
    assert result.bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.content_type == "video/mp4" and result.kind == "mp4"
    assert result.source_url == site.url("/v/out.mp4")
    assert result.uri == storage.uri_for("jobs/ab/abcdef12/output-0.mp4")
    assert storage.get_bytes(result.uri) == data


def test_gif_and_wrong_type_but_valid_video(
    site: Site, storage: LocalStorage, http: requests.Session, media: dict[str, bytes]
) -> None:
    result = fetch(site, "/v/out.gif", storage, http, expected_type="mp4")
    assert (result.kind, result.content_type) == ("gif", "image/gif")
    assert result.key == "jobs/ab/abcdef12/output-0.gif"  # the extension follows the bytes
    assert storage.get_bytes(result.uri) == media["gif"]
    lying = fetch(site, "/v/lying.mp4", storage, http, expected_type="gif")
    assert lying.content_type == "video/mp4"


def test_key_as_function_of_type(site: Site, storage: LocalStorage, http: requests.Session) -> None:
    result = fetch(site, "/v/out.gif", storage, http, key=lambda ext: f"k/custom.{ext}")
    assert result.key == "k/custom.gif"


def test_retry_overwrites_same_key(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    first = fetch(site, "/v/out.mp4", storage, http)
    second = fetch(site, "/v/out.mp4", storage, http)
    assert first.uri == second.uri
    files = list((storage.root / "jobs/ab/abcdef12").iterdir())
    assert [p.name for p in files] == ["output-0.mp4"]


@pytest.mark.parametrize("path", ["/v/page.html", "/v/plain-html", "/v/empty"])
def test_html_or_empty_200_is_a_page_not_the_video_yet(
    site: Site, storage: LocalStorage, http: requests.Session, path: str
) -> None:
    # Retried within the not-found window like a 404, then parked as link_not_video.
    with pytest.raises(LinkServesPage) as info:
        fetch(site, path, storage, http)
    assert isinstance(info.value, LinkNotReady) and isinstance(info.value, TransientError)
    assert not storage.exists("jobs/ab/abcdef12/output-0.mp4")


def test_other_binary_is_permanent(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    with pytest.raises(PermanentError, match="not an MP4 or GIF"):
        fetch(site, "/v/junk.bin", storage, http)


@pytest.mark.parametrize("path", ["/v/missing", "/v/gone", "/v/forbidden"])
def test_not_found_is_link_not_ready(
    site: Site, storage: LocalStorage, http: requests.Session, path: str
) -> None:
    with pytest.raises(LinkNotReady):
        fetch(site, path, storage, http)


def test_5xx_429_and_other_4xx(site: Site, storage: LocalStorage, http: requests.Session) -> None:
    with pytest.raises(TransientError) as info:
        fetch(site, "/v/boom", storage, http)
    assert not isinstance(info.value, LinkNotReady)
    with pytest.raises(RateLimited) as limited:
        fetch(site, "/v/slow-down", storage, http)
    assert limited.value.retry_after == 9.0
    with pytest.raises(PermanentError):
        fetch(site, "/v/teapot", storage, http)


def test_size_cap_with_and_without_content_length(
    site: Site, storage: LocalStorage, http: requests.Session, tmp_path: Path
) -> None:
    with pytest.raises(PermanentError, match="limit"):
        fetch(site, "/v/big", storage, http, max_bytes=MB)
    site.streamed["/v/endless"] = 3 * MB
    tmp = tmp_path / "dl-tmp"
    tmp.mkdir()
    with pytest.raises(PermanentError, match="more than"):
        fetch(site, "/v/endless", storage, http, max_bytes=MB, tmp_dir=tmp)
    assert list(tmp.iterdir()) == []  # the partial temp file is gone
    assert not storage.exists("jobs/ab/abcdef12/output-0.mp4")


def test_redirects_followed_and_rechecked(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    result = fetch(site, "/r/ok", storage, http)
    assert result.final_url == site.url("/v/out.mp4")
    assert result.source_url == site.url("/r/ok")
    with pytest.raises(DownloadRefused, match="link-local"):
        fetch(site, "/r/metadata", storage, http)
    with pytest.raises(DownloadRefused, match="scheme"):
        fetch(site, "/r/ftp", storage, http)
    with pytest.raises(PermanentError, match="redirects"):
        fetch(site, "/r/loop", storage, http)


def test_redirect_to_unlisted_loopback_is_refused_before_connecting(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    holder: list[Site] = []
    inner_server, _ = _serve(holder, "127.0.0.2")
    inner = Site(base=f"http://127.0.0.2:{inner_server.server_address[1]}")
    holder.append(inner)
    try:
        site.redirects["/r/inner"] = inner.url("/secret")
        with pytest.raises(DownloadRefused, match="loopback"):
            fetch(site, "/r/inner", storage, http)
        assert inner.hits == []
    finally:
        inner_server.shutdown()
        inner_server.server_close()


def test_loopback_refused_without_allow_list(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    with pytest.raises(DownloadRefused, match="loopback"):
        fetch(site, "/v/out.mp4", storage, http, allowed_hosts=[])
    assert site.hits == []


def test_inspect_hook_sees_complete_file(
    site: Site, storage: LocalStorage, http: requests.Session, media: dict[str, bytes]
) -> None:
    seen: dict[str, Any] = {}

    def inspect(path: Path) -> dict[str, Any]:
        seen["path"] = path
        seen["data"] = path.read_bytes()
        return {"frames": 8}

    result = fetch(site, "/v/out.mp4", storage, http, inspect=inspect)
    assert seen["data"] == media["mp4"]
    assert not seen["path"].exists()  # temp file removed after the upload
    assert result.meta == {"frames": 8}


def test_inspect_verdict_propagates_and_crash_is_recorded(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    def refuse(path: Path) -> dict[str, Any]:
        raise TransientError("not playable")

    with pytest.raises(TransientError, match="not playable"):
        fetch(site, "/v/out.mp4", storage, http, inspect=refuse)
    assert not storage.exists("jobs/ab/abcdef12/output-0.mp4")

    def crash(path: Path) -> dict[str, Any]:
        raise RuntimeError("probe binary segfaulted")

    result = fetch(site, "/v/out.mp4", storage, http, inspect=crash)
    assert "segfaulted" in result.meta["inspect_error"]


def test_connection_refused_is_transient(storage: LocalStorage, http: requests.Session) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransientError):
        download_to_storage(
            f"http://127.0.0.1:{port}/x.mp4",
            storage,
            "k/x.mp4",
            session=http,
            limits=TransferLimits(
                max_bytes=MB, allowed_hosts=("127.0.0.1",), connect_timeout=1, read_timeout=1
            ),
        )


@pytest.mark.slow
def test_50mb_download_keeps_memory_flat(
    site: Site, storage: LocalStorage, http: requests.Session
) -> None:
    size = 50 * MB
    site.streamed["/v/huge.mp4"] = size
    gc.collect()
    tracemalloc.start()
    try:
        result = fetch(site, "/v/huge.mp4", storage, http, max_bytes=60 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.bytes == size
    expected = hashlib.sha256(FAKE_MP4_HEAD)
    remaining = size - len(FAKE_MP4_HEAD)
    while remaining:
        piece = CHUNK[: min(len(CHUNK), remaining)]
        expected.update(piece)
        remaining -= len(piece)
    assert result.sha256 == expected.hexdigest()
    print(f"peak traced memory: {peak / MB:.2f} MB")
    assert peak < 8 * MB, f"peak Python memory {peak / MB:.1f} MB for a 50 MB download"


def test_sniff_type() -> None:
    assert sniff_type(FAKE_MP4_HEAD) == "mp4"
    assert sniff_type(b"GIF87a....") == "gif"
    assert sniff_type(b"GIF89a") == "gif"
    assert sniff_type(b"<html>") is None
    assert sniff_type(b"") is None


# -- DNS rebinding: the connection goes to the address that was checked -----------------------
@pytest.mark.parametrize(
    "second_answer", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "fe80::1", "::ffff:127.0.0.1"]
)
def test_a_name_that_rebinds_after_the_check_never_reaches_the_second_address(
    site: Site,
    storage: LocalStorage,
    http: requests.Session,
    second_answer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check sees a public address; every later lookup of the name (the one a
    # connection would make) answers a loopback, private, link-local or metadata address.
    answers = iter(["93.184.216.34"])
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return [next(answers, second_answer)]

    real_getaddrinfo = socket.getaddrinfo

    def system_lookup(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "video.rebind.test":  # what the OS would answer now: the server below
            return real_getaddrinfo("127.0.0.1", *args, **kw)
        return real_getaddrinfo(host, *args, **kw)

    attempts: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], *args: Any, **kw: Any) -> socket.socket:
        attempts.append(address)
        # Where this connection would really go (a name is looked up now, as urllib3
        # does). Never leave loopback from a test: any other address is unreachable.
        ip = socket.getaddrinfo(address[0], address[1])[0][4][0]
        if ip != "127.0.0.1":
            raise OSError(f"blocked in the test: {address}")
        return real_create_connection((ip, address[1]), *args, **kw)

    real_create_connection = urllib3.util.connection.create_connection
    monkeypatch.setattr(socket, "getaddrinfo", system_lookup)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", connect)
    before = len(site.hits)
    port = urlsplit(site.base).port
    assert port is not None
    url = f"http://video.rebind.test:{port}/v/out.mp4"
    with pytest.raises(TransientError):
        download_to_storage(
            url,
            storage,
            "k/x.mp4",
            session=http,
            limits=TransferLimits(max_bytes=MB, connect_timeout=1, read_timeout=1),
            resolver=resolver,
        )
    assert asked == ["video.rebind.test"]
    assert attempts == [("93.184.216.34", port)]  # the vetted address, and only it
    assert len(site.hits) == before  # the loopback server never saw a request


def test_a_pinned_session_refuses_a_connection_nobody_checked(
    http: requests.Session, site: Site
) -> None:
    with pytest.raises(DownloadRefused, match="not checked first"):
        http.get(site.url("/v/out.mp4"), timeout=2)


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[tuple[str, int, str, list[str]]]:
    """An HTTPS server on loopback with a certificate for ``video.pinned.test`` only (from
    a test CA). Yields (host name, port, CA bundle path, SNI names it was asked for)."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("video.pinned.test")
    server_names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name or "")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    body = make_mp4()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "video.pinned.test", server.server_address[1], str(ca_path), server_names
    finally:
        server.shutdown()
        server.server_close()


def test_https_to_a_pinned_address_still_checks_the_name(
    tls_site: tuple[str, int, str, list[str]],
    storage: LocalStorage,
    http: requests.Session,
) -> None:
    # The name resolves (for the check) to loopback, allowed here; the connection goes to
    # that address without a DNS lookup of its own (the name exists nowhere else), and TLS
    # sends the name (SNI) and checks the certificate against it.
    host, port, ca_path, server_names = tls_site
    http.verify = ca_path
    limits = TransferLimits(
        max_bytes=MB, allowed_hosts=("127.0.0.1",), connect_timeout=2, read_timeout=5
    )
    result = download_to_storage(
        f"https://{host}:{port}/v/out.mp4",
        storage,
        "k/t.mp4",
        session=http,
        limits=limits,
        resolver=lambda name, _port: ["127.0.0.1"],
    )
    assert result.kind == "mp4" and result.bytes > 0
    assert server_names == [host]
    # A name the certificate does not cover is refused by the TLS check, pinned or not.
    with pytest.raises(TransientError, match="SSL|certificate"):
        download_to_storage(
            f"https://other.pinned.test:{port}/v/out.mp4",
            storage,
            "k/u.mp4",
            session=http,
            limits=limits,
            resolver=lambda name, _port: ["127.0.0.1"],
        )
