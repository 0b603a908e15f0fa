"""Fuzz target: the batch-file reader, ``producer.batch.read_batch``.

Rule: any file bytes give either the parsed lines (one ``BatchLine`` per line that is not
blank or ``#``) or ``RequestInvalid`` whose errors each name a line of the file (``line``
between 1 and the number of lines) - or, for a file with no request at all, a refusal
that says so. Nothing else is raised, and nothing is half-read: all lines or none.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from producer.batch import read_batch
from producer.request import UnknownModelWarning
from t2v_core.errors import RequestInvalid
from tests.fuzz.budget import classified, fuzz
from tests.fuzz.strategies import HOSTILE_BODIES, JSON_VALUES

good = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=20).filter(str.strip)},
    optional={
        "id": st.one_of(st.text(max_size=10), JSON_VALUES),
        "width": st.sampled_from([256, 512, 513, 1024]),
        "model_id": st.sampled_from(["wan2.2", "ltx-2.3", "other"]),
    },
)
lines = st.one_of(
    good.map(lambda d: json.dumps(d).encode()),
    good.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"# comment",
            b"  # x",
            b"{",
            b"\xff\xfe",
            b"\xef\xbb\xbf{}",
            b'{"prompt": "a", "id": "same"}',
            b'{"prompt": "b", "id": "same"}',
        ]
    ),
    st.binary(max_size=40),
    HOSTILE_BODIES,
)
separators = st.sampled_from([b"\n", b"\r\n", b"\r", "\u2028".encode(), b"\x0c", b"\x1e"])


@st.composite
def files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    parts = draw(st.lists(lines, max_size=6))
    out = b""
    for part in parts:
        out += part + draw(separators)
    return out


@fuzz("batch", 1000)
@given(raw=files(), dedupe=st.booleans())
# Regressions: inputs fuzzing found (each raised or was misclassified before its fix).
@example(raw=b'{"id":' + b"9" * 4301 + b"}", dedupe=False)  # int() digit limit: ValueError
@example(raw=b"[" * 100_000, dedupe=False)  # RecursionError (found at 1,987 deep)
@example(raw=b"\x80", dedupe=False)  # not UTF-8: UnicodeDecodeError
@example(raw=b'{"prompt": "ok"}\n{"prompt": "x", "clip_skip": "\\ud800x"}\n', dedupe=True)
@example(raw=b'{"prompt": "ok", "width": ' + b"[" * 900 + b"]" * 900 + b"}", dedupe=True)
def test_read_batch(raw: bytes, dedupe: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.jsonl"
        path.write_bytes(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownModelWarning)
            try:
                entries = read_batch(path, dedupe=dedupe)
            except RequestInvalid as exc:
                check_refusal(exc, raw)
                return
    classified("test_read_batch", "parsed")
    text = raw.decode("utf-8")
    wanted = [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert [e.line for e in entries] == wanted


def check_refusal(exc: RequestInvalid, raw: bytes) -> None:
    classified("test_read_batch", "RequestInvalid")
    try:
        count: Any = len(raw.decode("utf-8").splitlines())
    except UnicodeDecodeError:
        count = None
    if not exc.field_errors:
        assert "no requests in the file" in str(exc), str(exc)
        return
    for error in exc.field_errors:
        assert error.line is not None and error.line >= 1, f"{error} names no line"
        if count is not None:
            assert error.line <= count, f"{error}: the file has {count} lines"
        assert error.reason
        assert f"line {error.line}" in str(exc)
