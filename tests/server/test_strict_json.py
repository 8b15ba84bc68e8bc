"""Strict JSON: what Python's json accepts and the servers refuse, each with a 400 that says why."""

from __future__ import annotations

import pytest

from cortex.errors import InvalidRequestError
from cortex.server.strict_json import MAX_DEPTH, loads


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"temperature": NaN}', "NaN and Infinity are not JSON numbers"),
        (b"[-Infinity]", "NaN and Infinity are not JSON numbers"),
        (b'{"top_p": 1e999}', "Number out of range"),
        (b'{"n": -' + b"9" * 5000 + b"}", "Integer value out of range"),
        (b"[" * 100_000 + b"]" * 100_000, f"nested more than {MAX_DEPTH} levels"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels"),
        (b'{"content": "\\ud800"}', r"lone UTF-16 surrogate (\ud800)"),
        (b'{"content": "x\\uDFFFy"}', r"lone UTF-16 surrogate (\uDFFF)"),
        (b'{"\\ud83d": 1}', r"lone UTF-16 surrogate (\ud83d)"),
        (b'{"content": "\xff\xfe"}', "not UTF-8 (byte 13)"),
        (b'\xef\xbb\xbf{"a": 1}', "not valid JSON"),  # a BOM
        (b"{'a': 1}", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_refusals(raw, why):
    with pytest.raises(InvalidRequestError) as info:
        loads(raw)
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"content": "\\ud83d\\ude00"}', {"content": "\U0001f600"}),  # an escaped pair is one character
        (b'{"a": [[1, {"b": []}]]}', {"a": [[1, {"b": []}]]}),
        (b'{"seed": 18446744073709551615, "t": 1e-400}', {"seed": 2**64 - 1, "t": 0.0}),
        ('{"text": "caf\u00e9 \u202e"}'.encode(), {"text": "caf\u00e9 \u202e"}),
        (b'{"stop": ["NaN", "Infinity"]}', {"stop": ["NaN", "Infinity"]}),
    ],
)
def test_acceptances(raw, value):
    assert loads(raw) == value


def test_nesting_at_the_limit_passes_and_one_more_level_fails():
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(InvalidRequestError):
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
