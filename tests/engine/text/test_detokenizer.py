from __future__ import annotations

import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import decoders, models, pre_tokenizers

from cortex.engine.text.detokenizer import IncrementalDetokenizer
from cortex.engine.text.tokenizer import BYTE_TO_UNICODE, Tokenizer

TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from(list("世界你好😀🇫🇷👩‍👩‍👧é́ \n\t")),
    ),
    max_size=40,
)


def stream(tokenizer, ids, sizes, **kw):
    detok = IncrementalDetokenizer(tokenizer, **kw)
    chunks, start = [], 0
    for size in sizes:
        chunks.append(detok.add(ids[start : start + size]))
        start += size
    chunks.append(detok.add(ids[start:]))
    chunks.append(detok.flush())
    assert "".join(chunks) == detok.text
    return chunks


def test_multibyte_char_split_across_tokens_is_held_until_complete(qwen):
    ids = qwen.encode("a𓀀b")
    assert len(ids) > 3  # one byte token per UTF-8 byte of the hieroglyph
    chunks = stream(qwen, ids, [1] * len(ids))
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert "".join(chunks) == "a𓀀b"
    assert "𓀀" in chunks  # emitted whole, in one chunk


@settings(max_examples=60, deadline=None)
@given(text=TEXT, sizes=st.lists(st.integers(min_value=0, max_value=4), max_size=30))
def test_any_chunking_reproduces_decode_and_never_emits_broken_text(qwen, text, sizes):
    ids = qwen.encode(text)
    chunks = stream(qwen, ids, sizes)
    assert "".join(chunks) == qwen.decode(ids)
    assert all("\ufffd" not in chunk for chunk in chunks)


def test_invalid_bytes_match_tokenizers_replacement(qwen):
    lone = [qwen.token_to_id(BYTE_TO_UNICODE[0xC3])]  # the first byte of "é" alone
    ids = qwen.encode("x") + lone + qwen.encode("y") + lone
    text = "".join(stream(qwen, ids, [1] * len(ids)))
    assert text == qwen.decode(ids) == "x\ufffdy\ufffd"


def test_special_tokens_skipped_or_kept(qwen):
    ids = qwen.encode("<|im_start|>hi<think>x</think><|im_end|>")
    assert "".join(stream(qwen, ids, [1] * len(ids))) == "hi<think>x</think>"
    kept = "".join(stream(qwen, ids, [1] * len(ids), skip_special_tokens=False))
    assert kept == "<|im_start|>hi<think>x</think><|im_end|>"


def _byte_fallback_tokenizer() -> Tokenizer:
    """A Llama-style SentencePiece BPE (Metaspace + byte fallback): exercises the offsets path."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    for piece in ["▁", "h", "e", "l", "o", "▁h", "▁he", "▁hel", "▁hell", "▁hello", "w", "r", "d", "▁w"]:
        vocab[piece] = len(vocab)
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return Tokenizer(backend)


def test_offsets_path_for_non_byte_level_tokenizer():
    tokenizer = _byte_fallback_tokenizer()
    assert not tokenizer.is_byte_level
    ids = tokenizer.encode("hello 😀 world")
    chunks = stream(tokenizer, ids, [1] * len(ids))
    assert "".join(chunks) == tokenizer.decode(ids) == "hello 😀 world"
    assert all("\ufffd" not in chunk for chunk in chunks)


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(
        st.one_of(
            st.tuples(st.just("byte"), st.integers(min_value=0x80, max_value=0xFF)),
            st.tuples(st.just("id"), st.integers(min_value=248044, max_value=248076)),
            st.tuples(st.just("id"), st.integers(min_value=0, max_value=248043)),
        ),
        max_size=20,
    ),
    skip=st.booleans(),
)
def test_random_ids_including_broken_bytes_match_decode(qwen, items, skip):
    """Arbitrary id sequences (lone bytes, specials between bytes) decode exactly as tokenizers does."""
    ids = [qwen.token_to_id(BYTE_TO_UNICODE[n]) if kind == "byte" else n for kind, n in items]
    assert "".join(stream(qwen, ids, [1] * len(ids), skip_special_tokens=skip)) == qwen.decode(
        ids, skip_special_tokens=skip
    )
