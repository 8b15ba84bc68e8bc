"""Structured outputs: grammar-constrained sampling with llguidance.

A request whose :class:`~cortex.engine.sampling_params.SamplingParams` carries
:class:`StructuredOutputsParams` gets a :class:`GrammarMatcher` when the engine admits it; each step the
runner asks the matcher for a token bitmask and masks the request's logits before sampling, and the
scheduler advances the matcher with the sampled token. The matcher also guarantees termination within
the request's token budget (see :mod:`cortex.engine.structured.closing`). docs/structured.md has the
rules; benchmarks/grammar.py measured why llguidance.

    params.py     StructuredOutputsParams: what a request asks for (no llguidance import)
    backend.py    GrammarBackend: one per engine; the tokenizer's llguidance view, grammar compiling
    matcher.py    GrammarMatcher: one per request; bitmask, accept, termination
    closing.py    the closing path: the bytes that complete a grammar soonest
    bitmask.py    bitmask allocation and application to logits
    errors.py     UnsupportedSchemaError
"""

from __future__ import annotations

from cortex.engine.structured.errors import UnsupportedSchemaError
from cortex.engine.structured.params import StructuredOutputsParams

__all__ = ["StructuredOutputsParams", "UnsupportedSchemaError"]
