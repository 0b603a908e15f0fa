"""``S3Storage``: finished videos in any S3-compatible bucket (AWS, MinIO, SeaweedFS, R2).

URIs are ``s3://bucket/prefix/key``. Uploads stream through boto3's transfer manager,
multipart above a threshold; reads stream the body in chunks. ``T2V_S3_ENDPOINT_URL``
selects a custom endpoint (path-style addressing); credentials come the standard AWS way.
boto3 and botocore are imported here only, and lazily, so a worker with local storage
never loads them.

Never: read a whole object into memory on the way in or out, or swallow a storage error:
they surface as ``TransientError`` (retry), ``PermanentError`` (no such object) or
``ConfigError`` (bucket or credentials wrong: fix and restart).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from t2v_core.errors import ConfigError, PermanentError, TransientError
from worker.storage.keys import _check_key
from worker.storage.streams import _COPY_CHUNK

__all__ = ["S3Storage"]

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
