"""Shared Hypothesis strategies for hostile input: any JSON, cut bodies, odd numbers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Numbers that break naive parsers: huge, tiny, negative zero, non-finite, bool.
ODD_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**63,
        2**64 + 1,
        -(2**63),
        10**30,
        1.0,
        -0.0,
        0.5,
        1e308,
        -1e308,
        1e-320,
        float("inf"),
        float("-inf"),
        float("nan"),
        True,
        False,
        1.5e16,
        12345678901234567890,
    ]
)
ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "null",
        "None",
        "1e999",
        "-1",
        "NaN",
        "Infinity",
        "0x10",
        "1_000",
        "١٢٣",
        "²",
        "\u2028",
        "\ud800x",
        "a" * 300,
        "Rate limit exceeded",
        "try again",
        "invalid api key",
        "Maximum 999999 queued requests allowed",
        "spam detected",
    ]
)

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    ODD_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    ODD_STRINGS,
)

#: Any JSON value (with the NaN/Infinity Python's json reads and writes).
JSON_VALUES = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes, escaping lone surrogates like a server would."""
    return json.dumps(value).encode("utf-8")


@st.composite
def cut(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` cut short at any point (a connection dropped mid-answer)."""
    if not body:
        return body
    return body[: draw(st.integers(min_value=0, max_value=len(body) - 1))]


#: Bodies no well-behaved server sends: deep nesting, 5,000-digit numbers, odd encodings.
HOSTILE_BODIES = st.one_of(
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b'{"a":' * n),
    st.integers(min_value=900, max_value=5000).map(
        lambda n: b'{"status":"processing","id":' + b"[" * n + b"1" + b"]" * n + b"}"
    ),
    st.integers(min_value=100, max_value=990).map(
        lambda n: b'{"status":"error","message":' + b"[" * n + b'"x"' + b"]" * n + b"}"
    ),
    st.integers(min_value=100, max_value=990).map(
        lambda n: b'{"status":"failed","messege":' + b'{"a":' * n + b'"x"' + b"}" * n + b"}"
    ),
    st.integers(min_value=4000, max_value=20_000).map(lambda n: b'{"id":' + b"9" * n + b"}"),
    st.integers(min_value=4000, max_value=20_000).map(
        lambda n: b'{"status":"success","eta":1' + b"0" * n + b"}"
    ),
    st.sampled_from(
        [
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{\x00}\x00",
            b'{"status":"success"}\x00',
            b"NaN",
            b'{"eta": NaN, "id": Infinity}',
            b'{"id": -Infinity}',
            b"\x80\x81",
            b"{" * 3,
            b'{"status":"processing","id":1e400}',
            b'{"id":"\\ud800"}',
        ]
    ),
)
