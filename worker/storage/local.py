"""``LocalStorage``: finished videos as files under a root directory.

URIs are ``file:///abs/path``. A write streams into a temp file beside the target,
fsyncs it and ``os.replace``s it, so a reader never sees half a file and a failed write
leaves the previous file in place.

Never: accept a key or URI outside the root, or swallow an ``OSError``: it surfaces as
``TransientError`` (retry).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from t2v_core.errors import ConfigError, PermanentError, TransientError
from worker.storage.keys import _check_key
from worker.storage.streams import _chunks

__all__ = ["LocalStorage"]


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
