"""Where finished videos are kept: local files or any S3-compatible bucket.

``storage_from_url`` turns ``T2V_STORAGE_URL`` into a backend: a plain path or
``file:///abs/path`` gives ``LocalStorage``; ``s3://bucket/prefix`` gives ``S3Storage``
(``T2V_S3_ENDPOINT_URL`` for MinIO, SeaweedFS, R2; credentials the standard AWS way).
Keys are deterministic per job and output index (``object_key``), so a retried download
overwrites the same object instead of leaving a duplicate.

Both backends stream: nothing here reads a whole video into memory. ``LocalStorage``
writes a temp file beside the target and ``os.replace``s it, so a reader never sees half
a file; S3 uploads are multipart above a threshold.

Never: accept a key that could escape the root (``..``, absolute paths), or swallow a
storage error: they surface as ``TransientError`` (retry) or ``ConfigError`` (bucket or
credentials wrong: fix and restart).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from t2v_core.errors import ConfigError, PermanentError, TransientError

__all__ = [
    "LocalStorage",
    "S3Storage",
    "Storage",
    "object_key",
    "poster_key",
    "storage_from_url",
]

_COPY_CHUNK = 1 << 20
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_EXT_RE = re.compile(r"^[a-z0-9]{1,8}$")


def object_key(job_id: str, index: int, ext: str) -> str:
    """``jobs/ab/abcdef.../output-0.mp4``: the same job and index always give the same key."""
    ext = ext.lower().lstrip(".")
    if not _ID_RE.match(job_id):
        raise ValueError(f"job id not usable in a storage key: {job_id!r}")
    if index < 0:
        raise ValueError("output index must be >= 0")
    if not _EXT_RE.match(ext):
        raise ValueError(f"bad file extension: {ext!r}")
    return f"jobs/{job_id[:2]}/{job_id}/output-{index}.{ext}"


def poster_key(job_id: str, index: int) -> str:
    """The poster JPEG beside output ``index``: ``.../output-0.poster.jpg``."""
    return object_key(job_id, index, "jpg").removesuffix(".jpg") + ".poster.jpg"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(f"unsafe storage key: {key!r}")
    return key


@runtime_checkable
class Storage(Protocol):
    """What the worker needs from a place to keep videos."""

    def uri_for(self, key: str) -> str: ...

    def put_stream(
        self,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        *,
        content_type: str,
        size_hint: int | None = None,
    ) -> str: ...

    def put_file(self, key: str, path: str | Path, *, content_type: str) -> str: ...

    def open(self, uri_or_key: str) -> BinaryIO: ...

    def get_bytes(self, uri_or_key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


def _chunks(stream: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    read = getattr(stream, "read", None)
    if callable(read):
        while chunk := read(_COPY_CHUNK):
            yield chunk
    else:
        for chunk in stream:
            if chunk:
                yield chunk


class _IterReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for boto3's ``upload_fileobj``)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# -- local files ------------------------------------------------------------------------


def _path_from_file_uri(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ConfigError(f"not a local file URI: {uri!r}")
    return Path(unquote(parts.path))


class LocalStorage:
    """Files under ``root``; URIs are ``file:///abs/path``."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        path = _path_from_file_uri(text) if text.startswith("file:") else Path(text)
        self.root = path.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _key_of(self, uri_or_key: str) -> str:
        if not uri_or_key.startswith("file:"):
            return uri_or_key
        path = _path_from_file_uri(uri_or_key).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            raise PermanentError(f"{uri_or_key!r} is outside this storage") from None

    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_stream(
        self,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        *,
        content_type: str,
        size_hint: int | None = None,
    ) -> str:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        except OSError as exc:
            raise TransientError(f"local storage cannot write {key!r}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in _chunks(stream):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            raise TransientError(f"local storage cannot write {key!r}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return target.as_uri()

    def put_file(self, key: str, path: str | Path, *, content_type: str) -> str:
        with open(path, "rb") as src:
            return self.put_stream(key, src, content_type=content_type)

    def open(self, uri_or_key: str) -> BinaryIO:
        return self._path(self._key_of(uri_or_key)).open("rb")

    def get_bytes(self, uri_or_key: str) -> bytes:
        with self.open(uri_or_key) as f:
            return f.read()

    def exists(self, key: str) -> bool:
        return self._path(self._key_of(key)).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(self._key_of(key)).unlink()


# -- S3 -----------------------------------------------------------------------------------

_CONFIG_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "AllAccessDisabled",
        "InvalidBucketName",
    }
)


def _s3_error(exc: Exception, what: str) -> Exception:
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(f"S3 {what}: no credentials ({exc})")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _CONFIG_CODES:
            return ConfigError(f"S3 {what}: {code} (check bucket and credentials)")
        if code in ("NoSuchKey", "404", "NotFound"):
            return PermanentError(f"S3 {what}: no such object")
        return TransientError(f"S3 {what}: {code or exc}")
    return TransientError(f"S3 {what}: {type(exc).__name__}: {exc}")


class _BodyReader(io.RawIOBase):
    """A real file object over botocore's StreamingBody (read in chunks, never whole)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a half-read HTTP body may complain
            self._body.close()
        super().close()


class S3Storage:
    """Objects in ``bucket`` under ``prefix``; URIs are ``s3://bucket/prefix/key``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
        *,
        multipart_threshold: int = 16 * 1024 * 1024,
        multipart_chunksize: int = 8 * 1024 * 1024,
        max_concurrency: int = 4,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise ConfigError("S3 storage needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                # Custom endpoints (SeaweedFS, MinIO) rarely do virtual-host buckets.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            )
            # A session of its own: the default session caches credentials process-wide
            # and is not safe to create clients from in several threads.
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        self.client = client
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=max_concurrency > 1,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key_of(self, uri_or_key: str) -> str:
        if not uri_or_key.startswith("s3://"):
            return uri_or_key
        parts = urlsplit(uri_or_key)
        name = parts.path.lstrip("/")
        base = f"{self.prefix}/" if self.prefix else ""
        if parts.netloc != self.bucket or not name.startswith(base):
            raise PermanentError(f"{uri_or_key!r} is outside this storage")
        return name[len(base) :]

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}"

    def put_stream(
        self,
        key: str,
        stream: BinaryIO | Iterable[bytes],
        *,
        content_type: str,
        size_hint: int | None = None,
    ) -> str:
        name = self._name(key)
        fileobj: Any = stream
        if not callable(getattr(stream, "read", None)):
            # Buffered, so read(n) returns n bytes: s3transfer decides single vs multipart
            # from the size of its first read.
            fileobj = io.BufferedReader(_IterReader(stream), buffer_size=_COPY_CHUNK)
        try:
            self.client.upload_fileobj(
                fileobj,
                self.bucket,
                name,
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer,
            )
        except Exception as exc:  # boto3 raises botocore and s3transfer errors alike
            raise _s3_error(exc, f"upload of {name!r}") from exc
        return self.uri_for(key)

    def put_file(self, key: str, path: str | Path, *, content_type: str) -> str:
        name = self._name(key)
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                name,
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer,
            )
        except Exception as exc:  # see put_stream
            raise _s3_error(exc, f"upload of {name!r}") from exc
        return self.uri_for(key)

    def open(self, uri_or_key: str) -> BinaryIO:
        name = self._name(self._key_of(uri_or_key))
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        except Exception as exc:  # see put_stream
            raise _s3_error(exc, f"read of {name!r}") from exc
        return io.BufferedReader(_BodyReader(body), buffer_size=_COPY_CHUNK)

    def get_bytes(self, uri_or_key: str) -> bytes:
        with self.open(uri_or_key) as f:
            return f.read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        name = self._name(self._key_of(key))
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _s3_error(exc, f"head of {name!r}") from exc
        except Exception as exc:  # see put_stream
            raise _s3_error(exc, f"head of {name!r}") from exc
        return True

    def head(self, key: str) -> dict[str, Any]:
        """Size and content type of a stored object (for checks and tests)."""
        name = self._name(self._key_of(key))
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=name)
        except Exception as exc:  # see put_stream
            raise _s3_error(exc, f"head of {name!r}") from exc
        return {
            "bytes": int(meta["ContentLength"]),
            "content_type": meta.get("ContentType"),
            "etag": meta.get("ETag"),
        }

    def delete(self, key: str) -> None:
        name = self._name(self._key_of(key))
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except Exception as exc:  # see put_stream
            raise _s3_error(exc, f"delete of {name!r}") from exc


def storage_from_url(
    url: str, *, s3_endpoint_url: str | None = None, client: Any = None
) -> Storage:
    """``./var/videos``, ``file:///abs/path`` or ``s3://bucket/prefix`` → a backend."""
    text = url.strip()
    if not text:
        raise ConfigError("T2V_STORAGE_URL is empty")
    if text.startswith("s3://"):
        parts = urlsplit(text)
        return S3Storage(parts.netloc, parts.path, endpoint_url=s3_endpoint_url, client=client)
    scheme = urlsplit(text).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        return LocalStorage(text)
    raise ConfigError(f"unsupported storage URL {url!r}: use a path, file:/// or s3://")
