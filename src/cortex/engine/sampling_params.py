"""SamplingParams: what a request asks of the sampler, validated once at construction.

Fields left as ``None`` mean "the model's default": :meth:`SamplingParams.resolve` fills them from the
model's ``generation_config.json`` and then from :data:`FALLBACK_DEFAULTS`, so a request value always wins,
then the model's, then cortex's documented fallback. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cortex.engine.structured.params import StructuredOutputsParams
from cortex.errors import InvalidRequestError

# Used when neither the request nor the model's generation_config.json sets a value.
FALLBACK_DEFAULTS: Mapping[str, float | int] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
}

MAX_LOGPROBS = 20
# every generated token is matched against every stop string, in the engine's step: bounded, so that one
# request's stop list (100,000 strings cost ~30 ms a token on this CPU) cannot slow every other request
MAX_STOP_STRINGS = 64
MAX_STOP_CHARS = 1024
# top_k and stop_token_ids reach int64 tensors; values at or above the vocabulary size keep every token
MAX_TOKEN_INDEX = 2**31 - 1


def _as_tuple(value: Any, name: str, item_type: type) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, item_type):
        return (value,)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = tuple(value)
        if all(isinstance(item, item_type) and not isinstance(item, bool) for item in items):
            return items
    raise InvalidRequestError(f"{name} must be a {item_type.__name__} or a list of them", param=name)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample one request. ``temperature=0`` is greedy decoding.

    max_tokens: tokens to generate at most; ``None`` means until the context is full.
    top_k: 0 (or -1) disables top-k. min_p: 0 disables. repetition_penalty: 1 disables.
    stop: strings that end generation; the matched string is not part of the output.
    stop_token_ids: token ids that end generation (in addition to the model's eos unless ignore_eos).
    logprobs: when set, the log-probability of each sampled token and the top-``logprobs`` alternatives.
    structured_outputs: a JSON schema, JSON object or grammar the output must follow (docs/structured.md).
    """

    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    stop_token_ids: tuple[int, ...] = field(default=())
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float | None = None
    logprobs: int | None = None
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(dict.fromkeys(_as_tuple(self.stop, "stop", str))))
        object.__setattr__(self, "stop_token_ids", _as_tuple(self.stop_token_ids, "stop_token_ids", int))
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> InvalidRequestError:
            return InvalidRequestError(f"{name} {why}, got {getattr(self, name)!r}", param=name)

        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            raise bad("max_tokens", "must be at least 1")
        if self.temperature is not None and not 0.0 <= self.temperature <= 100.0:
            raise bad("temperature", "must be between 0 and 100")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1]")
        if self.top_k is not None and not -1 <= self.top_k <= MAX_TOKEN_INDEX:
            raise bad("top_k", f"must be -1, 0 (disabled) or a positive integer up to {MAX_TOKEN_INDEX}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", "must be in [0, 1]")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise bad("seed", "must be a non-negative 63-bit integer")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise bad("presence_penalty", "must be between -2 and 2")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise bad("frequency_penalty", "must be between -2 and 2")
        if self.repetition_penalty is not None and not 0.0 < self.repetition_penalty <= 10.0:
            raise bad("repetition_penalty", "must be in (0, 10]")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise bad("logprobs", f"must be between 0 and {MAX_LOGPROBS}")
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop strings must not be empty", param="stop")
        if len(self.stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in self.stop):
            raise InvalidRequestError(
                f"at most {MAX_STOP_STRINGS} distinct stop strings of at most {MAX_STOP_CHARS} characters "
                f"each, got {len(self.stop)} of up to {max(map(len, self.stop))}",
                param="stop",
            )
        if any(not 0 <= t <= MAX_TOKEN_INDEX for t in self.stop_token_ids):
            raise InvalidRequestError(
                f"stop_token_ids must be between 0 and {MAX_TOKEN_INDEX}", param="stop_token_ids"
            )

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax (after resolve())."""
        return self.temperature == 0.0

    def resolve(self, model_defaults: Mapping[str, Any] | None = None) -> SamplingParams:
        """Fill fields left as None: the model's generation_config.json value, else FALLBACK_DEFAULTS."""
        model_defaults = model_defaults or {}
        updates: dict[str, Any] = {}
        for name, fallback in FALLBACK_DEFAULTS.items():
            if getattr(self, name) is None:
                updates[name] = model_defaults.get(name, fallback)
        if updates.get("top_k") == -1:
            updates["top_k"] = 0
        return dataclasses.replace(self, **updates) if updates else self
