"""Chat over an engine: render the template, generate, split reasoning, parse tool calls.

``chat`` / ``stream_chat`` need only the engine's seam: ``engine.tokenizer`` (a
:class:`~cortex.engine.text.tokenizer.Tokenizer`), ``engine.generate([prompt_ids], params,
turn_boundaries=...)`` and the async ``engine.stream(prompt_ids, params, turn_boundary=...)``; sampling
params go to the engine untouched (it resolves defaults).

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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cortex.engine.outputs import ChatDelta, ChatFinishReason, ChatReply, RequestOutput, StreamDelta, Usage
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.output_grammar import constrain
from cortex.engine.text.reasoning import THINK_END, ReasoningParser, parse_reasoning, prompt_opens_reasoning
from cortex.engine.text.tokenizer import Tokenizer
from cortex.engine.text.tool_calls import ToolCall, ToolCallParser, parse_tool_calls
from cortex.errors import InvalidRequestError


class ChatEngine(Protocol):
    """What chat needs from :class:`cortex.engine.engine.Engine` (a scripted fake in tests)."""

    @property
    def tokenizer(self) -> Tokenizer | None: ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | None = None,
        *,
        turn_boundaries: Sequence[int | None] | None = None,
    ) -> list[RequestOutput]: ...

    def stream(
        self, prompt: Sequence[int], params: SamplingParams | None = None, *, turn_boundary: int | None = None
    ) -> AsyncIterator[StreamDelta]: ...


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A rendered chat prompt. ``turn_boundary``: how many of ``token_ids`` come before the generation
    prompt (None when there is none, or when it does not tokenize apart from what precedes it)."""

    text: str
    token_ids: list[int]
    turn_boundary: int | None


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
    return RenderedPrompt(prompt, token_ids, boundary)


def _constrained(
    params: SamplingParams | None,
    tokenizer: Tokenizer,
    opens_reasoning: bool,
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str,
    parallel_tool_calls: bool,
) -> SamplingParams | None:
    return constrain(
        params,
        tokenizer=tokenizer,
        opens_reasoning=opens_reasoning,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
    )


def _tokenizer_of(engine: ChatEngine) -> Tokenizer:
    if engine.tokenizer is None:
        raise InvalidRequestError(
            "this model folder has no tokenizer.json, so it cannot chat", param="messages"
        )
    return engine.tokenizer


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
    rendered = render_chat(tokenizer, messages, tools, **template_kwargs)
    starts_in_reasoning = prompt_opens_reasoning(rendered.text)
    params = _constrained(params, tokenizer, starts_in_reasoning, tools, tool_choice, parallel_tool_calls)
    output = engine.generate([rendered.token_ids], params, turn_boundaries=[rendered.turn_boundary])[0]
    reasoning, content = parse_reasoning(output.text, starts_in_reasoning=starts_in_reasoning)
    calls: list[ToolCall] = []
    if tools:
        content, calls = parse_tool_calls(content, tools)
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


async def stream_chat(
    engine: ChatEngine,
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
    rendered = await asyncio.to_thread(render_chat, tokenizer, messages, tools, **template_kwargs)
    starts_in_reasoning = prompt_opens_reasoning(rendered.text)
    params = _constrained(params, tokenizer, starts_in_reasoning, tools, tool_choice, parallel_tool_calls)
    reasoning_parser = ReasoningParser(starts_in_reasoning=starts_in_reasoning)
    tool_parser = ToolCallParser(tools) if tools else None
    counter = _ReasoningTokenCounter(tokenizer)
    reasoning_text: list[str] = []
    async for delta in engine.stream(rendered.token_ids, params, turn_boundary=rendered.turn_boundary):
        counter.add(delta.token_ids)
        reasoning, content = reasoning_parser.feed(delta.text)
        if delta.finish_reason is not None:
            tail_reasoning, tail_content = reasoning_parser.flush()
            reasoning, content = reasoning + tail_reasoning, content + tail_content
        tool_calls: list[dict[str, Any]] = []
        if tool_parser is not None:
            parsed = tool_parser.feed(content)
            content, tool_calls = parsed.content, parsed.tool_calls
            if delta.finish_reason is not None:
                tail = tool_parser.flush()
                content, tool_calls = content + tail.content, tool_calls + tail.tool_calls
        reasoning_text.append(reasoning)
        if delta.finish_reason is None:
            if reasoning or content or tool_calls or delta.logprobs:
                yield ChatDelta(
                    content=content, reasoning=reasoning, tool_calls=tool_calls, logprobs=delta.logprobs
                )
            continue
        made_calls = tool_parser is not None and bool(tool_parser.calls)
        usage = Usage(
            prompt_tokens=delta.num_prompt_tokens or len(rendered.token_ids),
            completion_tokens=delta.num_generated_tokens,
            cached_tokens=delta.num_cached_tokens,
            reasoning_tokens=counter.result(
                "".join(reasoning_text) if reasoning_parser.saw_reasoning else None
            ),
        )
        yield ChatDelta(
            content=content,
            reasoning=reasoning,
            tool_calls=tool_calls,
            finish_reason=_finish(made_calls, delta.finish_reason),
            usage=usage,
            logprobs=delta.logprobs,
            stop_reason=delta.stop_reason,
        )
        return
