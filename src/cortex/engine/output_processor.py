"""What a request's consumer receives: its sampled tokens turned into text deltas, stop strings, logprobs.

A :class:`RequestStream` (one per request, used by the Engine under its lock) decodes incrementally with
the text layer's ``IncrementalDetokenizer`` (special tokens skipped), holds back text that may be the
start of a stop string with ``StopStringMatcher``, and hands each :class:`StreamDelta` to the request's
sink. :class:`OutputCollector` is the sink ``Engine.generate`` waits on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cortex.engine.outputs import StreamDelta, TokenLogprob
from cortex.engine.request import Request
from cortex.engine.sampling import RowLogprobs
from cortex.engine.text.detokenizer import IncrementalDetokenizer
from cortex.engine.text.stop import StopStringMatcher
from cortex.engine.text.tokenizer import Tokenizer

# Called from the engine's step thread with each delta, or with the error that ended the request.
Sink = Callable[[StreamDelta | BaseException], None]


@dataclass(eq=False)
class RequestStream:
    request: Request
    sink: Sink
    detokenizer: IncrementalDetokenizer | None
    stop_matcher: StopStringMatcher | None

    @classmethod
    def create(cls, request: Request, sink: Sink, tokenizer: Tokenizer | None) -> RequestStream:
        return cls(
            request=request,
            sink=sink,
            detokenizer=IncrementalDetokenizer(tokenizer, skip_special_tokens=True) if tokenizer else None,
            stop_matcher=StopStringMatcher(request.params.stop) if request.params.stop else None,
        )

    def new_text(self, token_id: int, *, finishing: bool) -> tuple[str, str | None]:
        """The text that became safe to emit with ``token_id``, and the stop string it completed, if any.

        ``finishing``: the request ends with this token, so nothing is held back any more.
        After a stop string, the returned text ends just before it.
        """
        if self.detokenizer is None:
            return "", None
        text = self.detokenizer.add([token_id])
        if finishing:
            text += self.detokenizer.flush()
        if self.stop_matcher is None:
            return text, None
        text, matched = self.stop_matcher.feed(text)
        if matched is None and finishing:
            text += self.stop_matcher.flush()
        return text, matched

    def send(self, token_ids: list[int], text: str, logprobs: list[TokenLogprob] | None) -> None:
        request = self.request
        self.sink(
            StreamDelta(
                request_id=request.request_id,
                token_ids=token_ids,
                text=text,
                finish_reason=request.finish_reason if request.is_finished else None,
                stop_reason=request.stop_reason if request.is_finished else None,
                logprobs=logprobs,
                num_prompt_tokens=request.num_prompt_tokens,
                num_generated_tokens=request.num_output_tokens,
                num_cached_tokens=request.num_cached_tokens,
            )
        )


def token_logprobs(
    tokenizer: Tokenizer | None, token_id: int, row: RowLogprobs | None
) -> list[TokenLogprob] | None:
    """The sampler's logprobs for one token, with token texts (empty without a tokenizer)."""
    if row is None:
        return None

    def text(t: int) -> str:
        return tokenizer.decode([t], skip_special_tokens=False) if tokenizer else ""

    top = tuple((t, text(t), logprob) for t, logprob in row.top)
    return [TokenLogprob(token_id, text(token_id), row.logprob, top)]


@dataclass(eq=False)
class OutputCollector:
    """A sink that gathers one request's deltas; ``done`` is set on the last delta or an error."""

    token_ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    last: StreamDelta | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __call__(self, item: StreamDelta | BaseException) -> None:
        if isinstance(item, BaseException):
            self.error = item
            self.done.set()
            return
        self.token_ids.extend(item.token_ids)
        self.text.append(item.text)
        self.logprobs.extend(item.logprobs or ())
        if item.finish_reason is not None:
            self.last = item
            self.done.set()
