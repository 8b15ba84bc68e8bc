"""Chat over an engine: render the template, generate, split reasoning, parse tool calls.

A turn's prompt is rendered and tokenised once, by :func:`render_chat`, into a :class:`RenderedPrompt`
that carries everything the rest of the turn needs: the token ids, where the generation prompt starts
(the prefix cache's turn boundary), and what the output parsers and the output constraint need (whether
the prompt opens reasoning, the tools, ``tool_choice``). :func:`chat` runs a turn to completion;
:func:`start_chat` queues a rendered turn on the engine (bad input, such as a prompt that does not fit
the context, raises there) and returns its :class:`ChatStream`; :func:`stream_chat` does both from
messages. They need only the engine's seam (:class:`ChatEngine`): ``engine.tokenizer`` (a
:class:`~cortex.engine.text.tokenizer.Tokenizer`), ``engine.generate([prompt_ids], params,
turn_boundaries=...)`` and the async ``engine.add_request(prompt_ids, params, turn_boundary=...)``;
sampling params go to the engine untouched (it resolves defaults and checks the context length).

- Reasoning: when the rendered prompt leaves ``<think>`` open (Qwen with thinking on) the output starts
  inside reasoning; see :mod:`cortex.engine.text.reasoning`.
- Tool calls are parsed only when ``tools`` are given (Qwen XML and Hermes JSON forms); a reply with a
  call has ``finish_reason="tool_calls"``. ``tool_choice="required"`` forces one or more calls (pass only
  the named tool to force that one), and ``params.structured_outputs`` constrains the reply, both by
  grammar-constrained sampling (:mod:`cortex.engine.text.output_grammar`).
- ``usage.reasoning_tokens``: generated tokens up to and including the one that closes the reasoning
  block (exact when ``</think>`` is a single token, as for Qwen); otherwise the reasoning text re-encoded.
- Prefix caching: the next turn of a conversation re-renders this prompt up to where the generation
  prompt starts, and no further (the Qwen3.6 template does not reproduce the generation prompt's
  ``<think>``, and re-renders an answered turn without its reasoning once a new user turn follows), so
  that position goes to the engine as the request's ``turn_boundary``, where it keeps a state snapshot.
- A prompt too long for the context is a ContextLengthError naming ``messages``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cortex.engine.delta_stream import DeltaStream
from cortex.engine.outputs import ChatDelta, ChatFinishReason, ChatReply, RequestOutput, StreamDelta, Usage
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.output_grammar import constrain
from cortex.engine.text.reasoning import THINK_END, ReasoningParser, parse_reasoning, prompt_opens_reasoning
from cortex.engine.text.tokenizer import Tokenizer
from cortex.engine.text.tool_calls import ToolCall, ToolCallParser, parse_tool_calls
from cortex.errors import ContextLengthError, InvalidRequestError


class StreamingChatEngine(Protocol):
    """What a streamed chat turn needs of an engine (the neuron's engines, a scripted fake in tests)."""

    @property
    def tokenizer(self) -> Tokenizer | None: ...

    async def add_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        turn_boundary: int | None = None,
    ) -> DeltaStream: ...


class ChatEngine(StreamingChatEngine, Protocol):
    """What chat needs from :class:`cortex.engine.engine.Engine` (a scripted fake in tests)."""

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | None = None,
        *,
        turn_boundaries: Sequence[int | None] | None = None,
    ) -> list[RequestOutput]: ...


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A chat turn's prompt, rendered and tokenised once, with what its output needs.

    ``turn_boundary``: how many of ``token_ids`` come before the generation prompt (None when there is
    none, or when it does not tokenize apart from what precedes it). ``tools`` (None: no tool calls
    are parsed), ``tool_choice`` and ``parallel_tool_calls`` shape the output constraint and parsing.
    """

    text: str
    token_ids: list[int]
    turn_boundary: int | None
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True

    @property
    def opens_reasoning(self) -> bool:
        """The prompt leaves a ``<think>`` block open: the output starts inside reasoning."""
        return prompt_opens_reasoning(self.text)


def render_chat_prompt(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    **template_kwargs: Any,
) -> list[int]:
    """The prompt ids ``chat`` would send (also what the servers' count_tokens counts)."""
    return render_chat(tokenizer, messages, tools, **template_kwargs).token_ids


def render_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_choice: str = "auto",
    parallel_tool_calls: bool = True,
    **template_kwargs: Any,
) -> RenderedPrompt:
    """Render and tokenize the prompt, and find where its generation prompt starts.

    The template is rendered a second time without the generation prompt; when the first rendering
    extends that one, the generation prompt's own tokens are counted off the end (a template's
    generation prompt starts with a special token, which tokenizes apart from the text before it; the
    count is kept only if those tokens really end the prompt).
    """
    add_generation_prompt = bool(template_kwargs.pop("add_generation_prompt", True))
    tools = tools or None
    prompt = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, **template_kwargs
    )
    token_ids = tokenizer.encode(prompt)
    boundary = None
    if add_generation_prompt:
        head = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=False, **template_kwargs
        )
        if len(head) < len(prompt) and prompt.startswith(head):
            tail_ids = tokenizer.encode(prompt[len(head) :])
            if (
                0 < len(tail_ids) <= len(token_ids)
                and token_ids[len(token_ids) - len(tail_ids) :] == tail_ids
            ):
                boundary = len(token_ids) - len(tail_ids)
    return RenderedPrompt(prompt, token_ids, boundary, tools, tool_choice, parallel_tool_calls)


def _constrained(
    params: SamplingParams | None, tokenizer: Tokenizer, prompt: RenderedPrompt
) -> SamplingParams | None:
    return constrain(
        params,
        tokenizer=tokenizer,
        opens_reasoning=prompt.opens_reasoning,
        tools=prompt.tools,
        tool_choice=prompt.tool_choice,
        parallel_tool_calls=prompt.parallel_tool_calls,
    )


def _tokenizer_of(engine: StreamingChatEngine) -> Tokenizer:
    if engine.tokenizer is None:
        raise InvalidRequestError(
            "this model folder has no tokenizer.json, so it cannot chat", param="messages"
        )
    return engine.tokenizer


@contextlib.contextmanager
def _prompt_is_messages() -> Iterator[None]:
    """The engine names a prompt that does not fit ``prompt``; a chat caller sent ``messages``."""
    try:
        yield
    except ContextLengthError as error:
        if error.param != "prompt":
            raise
        raise ContextLengthError(error.message, param="messages") from None


class _ReasoningTokenCounter:
    """Counts generated tokens until the one that closes the reasoning block."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._end_id = tokenizer.token_to_id(THINK_END)
        self._count = 0
        self._closed = False

    def add(self, token_ids: Sequence[int]) -> None:
        for token_id in token_ids:
            if self._closed:
                return
            self._count += 1
            if token_id == self._end_id:
                self._closed = True

    def result(self, reasoning: str | None) -> int:
        if reasoning is None:
            return 0
        if self._end_id is None:
            return len(self._tokenizer.encode(reasoning)) if reasoning else 0
        return self._count


_FINISH_REASONS: dict[str, ChatFinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}


def _finish(calls: bool, reason: str | None) -> ChatFinishReason:
    return "tool_calls" if calls else _FINISH_REASONS.get(reason or "stop", "stop")


def chat(
    engine: ChatEngine,
    messages: Sequence[Mapping[str, Any]],
    params: SamplingParams | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_choice: str = "auto",
    parallel_tool_calls: bool = True,
    **template_kwargs: Any,
) -> ChatReply:
    """Run one chat turn to completion (see the module docstring)."""
    tokenizer = _tokenizer_of(engine)
    prompt = render_chat(
        tokenizer,
        messages,
        tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        **template_kwargs,
    )
    params = _constrained(params, tokenizer, prompt)
    with _prompt_is_messages():
        output = engine.generate([prompt.token_ids], params, turn_boundaries=[prompt.turn_boundary])[0]
    reasoning, content = parse_reasoning(output.text, starts_in_reasoning=prompt.opens_reasoning)
    calls: list[ToolCall] = []
    if prompt.tools:
        content, calls = parse_tool_calls(content, prompt.tools)
    counter = _ReasoningTokenCounter(tokenizer)
    counter.add(output.token_ids)
    usage = Usage(
        prompt_tokens=len(output.prompt_token_ids),
        completion_tokens=len(output.token_ids),
        cached_tokens=output.num_cached_tokens,
        reasoning_tokens=counter.result(reasoning),
    )
    return ChatReply(
        text=content,
        reasoning=reasoning,
        tool_calls=[call.to_openai() for call in calls],
        finish_reason=_finish(bool(calls), output.finish_reason),
        usage=usage,
        logprobs=output.logprobs,
        stop_reason=output.stop_reason,
    )


@dataclass(eq=False)
class _TurnParser:
    """Turns one request's engine deltas into chat deltas: reasoning split, tool calls, usage."""

    prompt: RenderedPrompt
    tokenizer: Tokenizer
    reasoning: ReasoningParser = field(init=False)
    tool_calls: ToolCallParser | None = field(init=False)
    counter: _ReasoningTokenCounter = field(init=False)
    reasoning_text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reasoning = ReasoningParser(starts_in_reasoning=self.prompt.opens_reasoning)
        self.tool_calls = ToolCallParser(self.prompt.tools) if self.prompt.tools else None
        self.counter = _ReasoningTokenCounter(self.tokenizer)

    def feed(self, delta: StreamDelta) -> ChatDelta | None:
        """The chat delta for ``delta`` (None when it holds nothing to say yet)."""
        self.counter.add(delta.token_ids)
        reasoning, content = self.reasoning.feed(delta.text)
        finished = delta.finish_reason is not None
        if finished:
            tail_reasoning, tail_content = self.reasoning.flush()
            reasoning, content = reasoning + tail_reasoning, content + tail_content
        tool_calls: list[dict[str, Any]] = []
        if self.tool_calls is not None:
            parsed = self.tool_calls.feed(content)
            content, tool_calls = parsed.content, parsed.tool_calls
            if finished:
                tail = self.tool_calls.flush()
                content, tool_calls = content + tail.content, tool_calls + tail.tool_calls
        self.reasoning_text.append(reasoning)
        if not finished:
            if reasoning or content or tool_calls or delta.logprobs:
                return ChatDelta(
                    content=content, reasoning=reasoning, tool_calls=tool_calls, logprobs=delta.logprobs
                )
            return None
        made_calls = self.tool_calls is not None and bool(self.tool_calls.calls)
        usage = Usage(
            prompt_tokens=delta.num_prompt_tokens or len(self.prompt.token_ids),
            completion_tokens=delta.num_generated_tokens,
            cached_tokens=delta.num_cached_tokens,
            reasoning_tokens=self.counter.result(
                "".join(self.reasoning_text) if self.reasoning.saw_reasoning else None
            ),
        )
        return ChatDelta(
            content=content,
            reasoning=reasoning,
            tool_calls=tool_calls,
            finish_reason=_finish(made_calls, delta.finish_reason),
            usage=usage,
            logprobs=delta.logprobs,
            stop_reason=delta.stop_reason,
        )


class ChatStream:
    """One queued chat turn's content, reasoning and tool-call deltas as they are generated; the last
    has ``finish_reason`` and ``usage``. ``aclose()`` aborts the turn in the engine unless it has
    finished, also when it was never iterated: whoever holds a ChatStream must close it."""

    def __init__(self, prompt: RenderedPrompt, deltas: DeltaStream, tokenizer: Tokenizer) -> None:
        self.prompt = prompt
        self._deltas = deltas
        self._parser = _TurnParser(prompt, tokenizer)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt.token_ids)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ChatDelta:
        while True:
            chat_delta = self._parser.feed(await self._deltas.__anext__())
            if chat_delta is not None:
                return chat_delta

    async def aclose(self) -> None:
        await self._deltas.aclose()


async def start_chat(
    engine: StreamingChatEngine, prompt: RenderedPrompt, params: SamplingParams | None = None
) -> ChatStream:
    """Queue a rendered turn on the engine now and return its stream; bad input (a prompt or
    ``max_tokens`` that does not fit the context, a schema the grammar cannot serve) raises here."""
    tokenizer = _tokenizer_of(engine)
    params = _constrained(params, tokenizer, prompt)
    with _prompt_is_messages():
        deltas = await engine.add_request(prompt.token_ids, params, turn_boundary=prompt.turn_boundary)
    return ChatStream(prompt, deltas, tokenizer)


async def stream_chat(
    engine: StreamingChatEngine,
    messages: Sequence[Mapping[str, Any]],
    params: SamplingParams | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_choice: str = "auto",
    parallel_tool_calls: bool = True,
    **template_kwargs: Any,
) -> AsyncIterator[ChatDelta]:
    """Stream one chat turn as content, reasoning and tool-call deltas; the last has finish_reason, usage.

    The template is rendered and tokenised in a worker thread, never on the event loop."""
    tokenizer = _tokenizer_of(engine)
    prompt = await asyncio.to_thread(
        render_chat,
        tokenizer,
        messages,
        tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        **template_kwargs,
    )
    turn = await start_chat(engine, prompt, params)
    try:
        async for delta in turn:
            yield delta
    finally:
        await turn.aclose()
