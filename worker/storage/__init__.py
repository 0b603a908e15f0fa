"""Where finished videos are kept: local files or any S3-compatible bucket.

``storage_from_url`` turns ``T2V_STORAGE_URL`` into a backend: a plain path or
``file:///abs/path`` gives ``LocalStorage``; ``s3://bucket/prefix`` gives ``S3Storage``
(``T2V_S3_ENDPOINT_URL`` for MinIO, SeaweedFS, R2; credentials the standard AWS way).
Keys are deterministic per job and output index (``object_key``), so a retried download
overwrites the same object instead of leaving a duplicate.

Both backends stream: nothing here reads a whole video into memory. ``LocalStorage``
writes a temp file beside the target and ``os.replace``s it, so a reader never sees half
a file; S3 uploads are multipart above a threshold.

    __init__.py  the ``Storage`` protocol (what the worker needs) and ``storage_from_url``
    keys.py      ``object_key``, ``poster_key``, and the check every key passes
    streams.py   chunked copying shared by the backends
    local.py     ``LocalStorage``
    s3.py        ``S3Storage`` (the only module that imports boto3)

Import from here (``from worker.storage import Storage, object_key``): the split into
modules is for reading, not for callers.

Never: accept a key that could escape the root (``..``, absolute paths), or swallow a
storage error: they surface as ``TransientError`` (retry) or ``ConfigError`` (bucket or
credentials wrong: fix and restart).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import urlsplit

from t2v_core.errors import ConfigError
from worker.storage.keys import object_key, poster_key
from worker.storage.local import LocalStorage
from worker.storage.s3 import S3Storage

__all__ = [
    "LocalStorage",
    "S3Storage",
    "Storage",
    "object_key",
    "poster_key",
    "storage_from_url",
]


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
