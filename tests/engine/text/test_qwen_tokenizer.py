"""The offline Qwen3.5 tokenizer is the official one: reference ids, tiktoken parity, lossless decode."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex.engine.text import qwen as qwen_build

CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
EMOJI = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)
CODE = st.sampled_from(
    [*"(){}[]<>=+-*/\\|&^%$#@!~`'\";:,._?", "def ", "    ", "\t", "\n", "\r\n", "'s", "'LL"]
)
WHITESPACE = st.sampled_from([" ", "  ", "   ", "\n", "\n\n", "\t", " \n ", "\u3000", "\xa0", "\r"])
ANY = st.characters(codec="utf-8", exclude_categories=["Cs"])
TEXT = st.lists(st.one_of(CJK, EMOJI, CODE, WHITESPACE, ANY, st.text(max_size=5)), max_size=40).map("".join)


@pytest.fixture(scope="module")
def tiktoken_encoding():
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(
        "qwen3_5",
        pat_str=qwen_build.pretokenizer_pattern(),
        mergeable_ranks=qwen_build.load_ranks(),
        special_tokens={text: token_id for token_id, text in qwen_build.special_tokens()},
    )


def test_reference_ids_from_the_official_tokenizer(qwen, shared_data):
    reference = json.loads((shared_data / "qwen3_5_tokenizer_reference.json").read_text())
    assert qwen.encode(reference["prompt"]) == reference["token_ids"]
    assert qwen.decode(reference["token_ids"]) == reference["prompt"]


def test_special_tokens_have_the_official_ids(qwen):
    specials = qwen_build.special_tokens()
    assert len(specials) == 33
    assert specials[0] == (248044, "<|endoftext|>")
    assert specials[-1] == (248076, "<|audio_pad|>")
    for token_id, text in specials:
        assert qwen.encode(text) == [token_id]
        assert qwen.id_to_token(token_id) == text


def test_hand_picked_cases_match_tiktoken(qwen, tiktoken_encoding):
    cases = [
        "Hello, world!  How's it going?\n\n\n",
        "def f(x):\n    return x ** 2  # squares\n\t\t",
        "中文测试：你好，世界！🇫🇷👩‍👩‍👧 café naïve",
        "      \n\n   \t \u3000 text",
        "1234567890 3.14159 1e-10",
        "I'M HERE, YOU'LL SEE, WE'VE",
    ]
    for text in cases:
        assert qwen.encode(text) == tiktoken_encoding.encode(text, disallowed_special=()), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
def test_random_text_encodes_like_tiktoken_and_round_trips(qwen, tiktoken_encoding, text):
    normalized = unicodedata.normalize("NFC", text)
    ids = qwen.encode(text)
    assert ids == tiktoken_encoding.encode(normalized, disallowed_special=())
    assert qwen.decode(ids) == normalized
