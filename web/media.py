"""Videos and posters from storage, for the pages' ``<video>``/``<img>`` and the API.

URLs are ``/media/<storage key>``, keys as ``worker.storage.keys`` writes them (only under
``jobs/``). Local storage answers with the file itself (Starlette's ``FileResponse``
serves ``Range`` requests, so a player can seek); S3 answers with a redirect to a
presigned GET URL (the bucket serves the ranges).

Never: serve anything outside the storage root. A key is refused (404) unless it passes
``_check_key`` (no ``..``, no absolute path, no backslash or NUL) and, for local files, its
resolved path (symlinks followed) is still inside the root.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import quote

from starlette.responses import FileResponse, RedirectResponse, Response

from worker.storage import LocalStorage, S3Storage, Storage
from worker.storage.keys import _check_key

KEY_PREFIX = "jobs/"
PRESIGN_SECONDS = 3600
TYPES = {".mp4": "video/mp4", ".gif": "image/gif", ".jpg": "image/jpeg", ".webm": "video/webm"}


class Media:
    """Turns storage URIs into ``/media/...`` URLs and serves them."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def url_for(self, uri: str | None) -> str | None:
        """``/media/<key>`` for a URI in this storage; None for one elsewhere."""
        if not uri:
            return None
        try:
            key = self.storage._key_of(uri)  # type: ignore[attr-defined]
            _check_key(key)
        except Exception:  # noqa: BLE001 - a URI of another storage has no URL here
            return None
        return "/media/" + quote(key)

    def response(self, key: str) -> Response:
        """The object at ``key``, or a 404 for anything that is not one of ours."""
        try:
            _check_key(key)
        except ValueError:
            return _not_found()
        if not key.startswith(KEY_PREFIX):
            return _not_found()
        if isinstance(self.storage, LocalStorage):
            return self._local(key)
        if isinstance(self.storage, S3Storage):
            url = self.storage.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.storage.bucket, "Key": self.storage._name(key)},
                ExpiresIn=PRESIGN_SECONDS,
            )
            return RedirectResponse(url, status_code=302)
        return _not_found()

    def _local(self, key: str) -> Response:
        assert isinstance(self.storage, LocalStorage)
        root = self.storage.root
        path = (root / key).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return _not_found()
        return FileResponse(path, media_type=content_type(path))


def content_type(path: Path | str) -> str:
    suffix = Path(str(path)).suffix.lower()
    return TYPES.get(suffix) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def _not_found() -> Response:
    return Response("not found", status_code=404, media_type="text/plain")
