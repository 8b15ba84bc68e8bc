from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex.engine.text.stop import StopStringMatcher


def run(stops: list[str], chunks: list[str]) -> tuple[str, str | None]:
    matcher = StopStringMatcher(stops)
    out = []
    for chunk in chunks:
        text, matched = matcher.feed(chunk)
        out.append(text)
        if matched is not None:
            return "".join(out), matched
    out.append(matcher.flush())
    return "".join(out), None


def expected(stops: list[str], text: str) -> tuple[str, str | None]:
    hits = sorted((text.find(s) + len(s), text.find(s), s) for s in stops if s in text)
    if not hits:
        return text, None
    _, pos, stop = hits[0]
    return text[:pos], stop


def test_stop_split_across_chunks_is_found_and_excluded():
    assert run(["###"], ["ab#", "#", "#cd"]) == ("ab", "###")


def test_possible_prefix_is_held_back_then_released():
    matcher = StopStringMatcher(["</end>"])
    assert matcher.feed("hello </e") == ("hello ", None)
    assert matcher.feed("nd") == ("", None)
    assert matcher.feed("x") == ("</endx", None)
    assert matcher.flush() == ""


def test_flush_returns_held_text_and_no_output_after_match():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("abc ST") == ("abc ", None)
    assert matcher.flush() == "ST"
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("aSTOPb") == ("a", "STOP")
    assert matcher.feed("more") == ("", "STOP")
    assert matcher.flush() == ""


def test_first_stop_to_complete_wins():
    assert run(["bc", "abcd"], ["xab", "cd"]) == ("xa", "bc")
    assert run(["abcd", "bc"], ["xabcd"]) == ("xa", "bc")
    assert run(["b", "ab"], ["ab"]) == ("", "ab")


def test_empty_stop_rejected():
    with pytest.raises(ValueError, match="empty"):
        StopStringMatcher([""])


@given(
    stops=st.lists(st.text(alphabet="ab#\n", min_size=1, max_size=4), min_size=0, max_size=3),
    text=st.text(alphabet="ab#\nc", max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=8),
)
def test_any_chunking_equals_whole_text(stops, text, cuts):
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(stops, chunks) == expected(stops, text)
