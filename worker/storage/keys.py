"""Storage keys: where each job's outputs live inside a backend, and which keys are safe.

``object_key`` is deterministic per job and output index, so a retried download
overwrites the same object instead of leaving a duplicate; ``poster_key`` names the
poster JPEG beside an output. ``_check_key`` is what both backends run on every key.

Never: accept a key that could escape the root (``..``, ``.``, empty parts, absolute
paths, backslashes, NUL), or touch a backend: this module only spells names.
"""

from __future__ import annotations

import re

__all__ = ["object_key", "poster_key"]

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
