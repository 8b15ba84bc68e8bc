"""Incremental detokenization: token ids in, text out, never broken UTF-8 and never retracted.

Byte-level BPE tokenizers (Qwen, GPT-2 style) map each id to raw bytes, and one character may be split
across tokens (an emoji is often two or three). For those, the ids' bytes go through an incremental UTF-8
decoder, which holds back an incomplete trailing sequence until its last byte arrives and turns bytes that
can never be valid into U+FFFD, exactly as ``tokenizers``' byte-level decoder does when decoding the whole
sequence. Other tokenizers (SentencePiece / Metaspace, WordPiece) decode context-dependently, so for them
the offsets method of vLLM / text-generation-inference is used: decode a short window of previous ids
with and without the new ids and emit the difference, holding it back while it ends in U+FFFD.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Protocol

# A window ending in U+FFFD is only held back while fewer than this many ids follow the last emitted text;
# longer runs are genuinely invalid output and are emitted (with U+FFFD) so the stream cannot stall.
_MAX_HELD_IDS = 6


class DetokenizerSource(Protocol):
    """What the detokenizer needs from :class:`~cortex.engine.text.tokenizer.Tokenizer`."""

    @property
    def is_byte_level(self) -> bool: ...

    @property
    def special_token_ids(self) -> frozenset[int]: ...

    def token_bytes(self, token_id: int) -> bytes | None: ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Turns a growing sequence of generated ids into text, one chunk at a time.

    ``add(ids)`` returns only the newly safe text; ``text`` is everything returned so far; ``flush()``
    returns whatever was held back (an incomplete character at the very end, as U+FFFD).
    """

    def __init__(self, tokenizer: DetokenizerSource, *, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._byte_level = tokenizer.is_byte_level
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._chunks: list[str] = []

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self._chunks)

    def add(self, token_ids: Sequence[int]) -> str:
        """Append generated ids; return the text that became safe to emit."""
        if self._byte_level:
            new = self._add_bytes(token_ids)
        else:
            self._ids.extend(token_ids)
            new = self._add_offsets(final=False)
        if new:
            self._chunks.append(new)
        return new

    def flush(self) -> str:
        """Emit what is held back at the end of the request (an incomplete character becomes U+FFFD)."""
        new = self._utf8.decode(b"", final=True) if self._byte_level else self._add_offsets(final=True)
        if new:
            self._chunks.append(new)
        return new

    def _add_bytes(self, token_ids: Sequence[int]) -> str:
        parts = []
        special = self._tokenizer.special_token_ids
        for token_id in token_ids:
            if self._skip_special_tokens and token_id in special:
                continue
            data = self._tokenizer.token_bytes(token_id)
            if data:
                parts.append(data)
        return self._utf8.decode(b"".join(parts)) if parts else ""

    def _add_offsets(self, *, final: bool) -> str:
        decode = self._tokenizer.decode
        skip = self._skip_special_tokens
        prefix_text = decode(self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=skip)
        full_text = decode(self._ids[self._prefix_offset :], skip_special_tokens=skip)
        held_ids = len(self._ids) - self._read_offset
        if not final and full_text.endswith("\ufffd") and held_ids < _MAX_HELD_IDS:
            return ""
        new = full_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new
