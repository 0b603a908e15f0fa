"""Chunked copying that both storage backends share: nothing here reads a whole video.

Never: read a stream whole or hold more than one chunk (``_COPY_CHUNK``) at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

_COPY_CHUNK = 1 << 20


def _chunks(stream: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    read = getattr(stream, "read", None)
    if callable(read):
        while chunk := read(_COPY_CHUNK):
            yield chunk
    else:
        for chunk in stream:
            if chunk:
                yield chunk
