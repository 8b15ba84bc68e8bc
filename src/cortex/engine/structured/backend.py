"""GrammarBackend: one per engine. The tokenizer as llguidance sees it, and grammar compiling.

Building llguidance's view of a 248k-token vocabulary takes a few seconds, so an engine builds its
backend on the first structured request (off the event loop, see ``Engine.stream``) and keeps it.
Compiling a grammar takes about a millisecond; an unsupported JSON-schema feature (``not``,
look-around in ``pattern``, ...) fails here, before the request is admitted, with the feature named.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import llguidance

from cortex.engine.structured.errors import UnsupportedSchemaError
from cortex.engine.structured.matcher import GrammarMatcher
from cortex.engine.structured.params import StructuredOutputsParams
from cortex.engine.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# JSON as json.dumps writes it: ", " and ": " separators, no other whitespace.
JSON_COMPILE_OPTIONS: JsonCompileOptions = {
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
}


_SHARED: dict[tuple[object, ...], GrammarBackend] = {}
_SHARED_LOCK = threading.Lock()
_MAX_SHARED = 4
MAX_TOKEN_BYTES = 32  # longest token tried when following a closing path


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """llguidance's grammar for a JSON schema, with :data:`JSON_COMPILE_OPTIONS` as defaults."""
    return str(llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_COMPILE_OPTIONS))


class GrammarBackend:
    """Engines over the same tokenizer.json file share one (see :meth:`for_tokenizer`)."""

    def __init__(self, tokenizer: Tokenizer, *, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        if not eos_token_ids:
            raise UnsupportedSchemaError("structured outputs need a model with an end-of-sequence token")
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_ids[0]
        source = str(tokenizer.path) if tokenizer.path is not None else tokenizer.to_json()
        try:
            self.ll_tokenizer = llguidance.LLTokenizer(
                source, n_vocab=vocab_size, eos_token=list(eos_token_ids)
            )
        except ValueError as exc:  # a tokenizer.json llguidance cannot read (an unknown decoder, say)
            raise UnsupportedSchemaError(
                f"structured outputs cannot read this model's tokenizer: {exc}"
            ) from exc
        self.byte_tokens = [self._byte_token(b) for b in range(256)]
        # bytes -> token id, for the tokens that may follow a closing path
        self.tokens_by_bytes: dict[bytes, int] = {}
        for token_id in range(tokenizer.vocab_size):
            if not self.ll_tokenizer.is_special_token(token_id):
                self.tokens_by_bytes.setdefault(self.ll_tokenizer.decode_bytes([token_id]), token_id)
        self.tokens_by_bytes.update({bytes([b]): t for b, t in enumerate(self.byte_tokens)})

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Tokenizer, *, vocab_size: int, eos_token_ids: Sequence[int]
    ) -> GrammarBackend:
        """A backend for ``tokenizer``, shared by every engine over the same unchanged tokenizer.json."""
        if tokenizer.path is None:
            return cls(tokenizer, vocab_size=vocab_size, eos_token_ids=eos_token_ids)
        stat = tokenizer.path.stat()
        key = (
            str(tokenizer.path.resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            vocab_size,
            tuple(eos_token_ids),
        )
        with _SHARED_LOCK:
            backend = _SHARED.get(key)
            if backend is None:
                backend = _SHARED[key] = cls(tokenizer, vocab_size=vocab_size, eos_token_ids=eos_token_ids)
                while len(_SHARED) > _MAX_SHARED:
                    del _SHARED[next(iter(_SHARED))]
            return backend

    def special_token(self, token_id: int) -> bool:
        return bool(self.ll_tokenizer.is_special_token(token_id))

    def token_bytes(self, token_id: int) -> bytes:
        return bytes(self.ll_tokenizer.decode_bytes([token_id]))

    def greedy_tokens(self, data: bytes) -> list[int]:
        """``data`` as the longest known token at each position (how a closing path is followed)."""
        tokens: list[int] = []
        table = self.tokens_by_bytes
        start = 0
        while start < len(data):
            end = min(len(data), start + MAX_TOKEN_BYTES)
            while data[start:end] not in table:
                end -= 1  # single bytes are always in the table
            tokens.append(table[data[start:end]])
            start = end
        return tokens

    def _byte_token(self, byte: int) -> int:
        ids = self.ll_tokenizer.tokenize_bytes(bytes([byte]))
        if len(ids) != 1:
            raise UnsupportedSchemaError(f"the tokenizer has no token for the byte {byte:#04x}")
        return int(ids[0])

    def grammar(self, params: StructuredOutputsParams) -> str:
        if params.grammar is not None:
            return str(llguidance.LLMatcher.grammar_from_lark(params.grammar))
        schema: dict[str, Any] = {"type": "object"} if params.json_object else json.loads(params.json or "")
        return json_schema_grammar(schema)

    def matcher(self, params: StructuredOutputsParams, *, max_tokens: int) -> GrammarMatcher:
        """A compiled matcher for one request. Raises UnsupportedSchemaError naming what cannot be
        enforced, or InvalidRequestError when ``max_tokens`` cannot hold the shortest valid output."""
        grammar = self.grammar(params)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.ll_tokenizer)
        if is_error:
            raise UnsupportedSchemaError(
                f"the output constraint cannot be enforced: {messages[0]}", param="response_format"
            )
        ll_matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0)
        if ll_matcher.is_error():
            raise UnsupportedSchemaError(
                f"the output constraint cannot be enforced: {ll_matcher.get_error()}", param="response_format"
            )
        return GrammarMatcher(
            ll_matcher,
            self,
            max_tokens=max_tokens,
            reasoning_end_token_id=params.reasoning_end_token_id,
        )
