"""The OpenAI dialect on the neuron: Chat Completions and Completions bodies in, JSON and chunks out.

Parsing checks types and values and raises :class:`cortex.errors.InvalidRequestError` naming the
field. A field whose meaning cannot be served (``logit_bias``, ``echo``, ...) is rejected;
``response_format`` (``json_object``, ``json_schema``) and a forcing ``tool_choice`` are enforced by
constrained decoding (docs/structured.md); fields that are only hints (``user``, ``metadata``, ``store``,
``parallel_tool_calls``, ``service_tier``, unknown keys) are accepted and ignored (docs/servers.md).

cortex extensions (as vLLM names them): ``top_k``, ``min_p``, ``repetition_penalty``, ``ignore_eos``,
``stop_token_ids``, ``chat_template_kwargs``.

Outputs: :func:`chat_completion` / :func:`chat_completion_chunks` and :func:`completion` /
:func:`completion_chunks` shape the choices a :class:`~cortex.server.generation.Generation` started:
``n`` choices (up to :data:`MAX_CHOICES`), each finishing choice with ``stop_reason``, the stop string
or stop token id that ended it (vLLM's extension; what Anthropic's ``stop_sequence`` is made from).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from cortex.engine.outputs import ChatDelta, StreamDelta, TokenLogprob, Usage
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.structured.params import StructuredOutputsParams
from cortex.errors import InvalidRequestError
from cortex.server.generation import Generation, combined_usage, stream_usage
from cortex.server.wire.fields import NUMBER, field, reject
from cortex.server.wire.openai_shapes import (
    ChatAccumulator,
    chat_chunk,
    chat_logprobs,
    completion_logprobs,
    delta_dict,
    usage_dict,
)
from cortex.server.wire.request import ChatRequest, CompletionRequest, new_id, now

MAX_CHOICES = 16  # n: each choice is an engine request of its own


def _common(body: dict[str, Any], *, logprobs: int | None) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model is required and must be a string", param="model")
    n = field(body, "n", int, 1)
    if not 1 <= n <= MAX_CHOICES:
        raise InvalidRequestError(f"n must be between 1 and {MAX_CHOICES}, got {n}", param="n")
    if field(body, "logit_bias", dict):
        reject("logit_bias", "cortex does not apply logit biases")
    max_tokens = field(body, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = field(body, "max_tokens", int, None)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise InvalidRequestError("stop must be a string or an array of strings", param="stop")
    stream_options = field(body, "stream_options", dict, {})
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=field(body, "temperature", NUMBER),
        top_p=field(body, "top_p", NUMBER),
        top_k=field(body, "top_k", int),
        min_p=field(body, "min_p", NUMBER),
        seed=field(body, "seed", int),
        stop=tuple([stop] if isinstance(stop, str) else stop or ()),
        stop_token_ids=field(body, "stop_token_ids", list, []),
        ignore_eos=field(body, "ignore_eos", bool, False),
        presence_penalty=field(body, "presence_penalty", NUMBER, 0.0),
        frequency_penalty=field(body, "frequency_penalty", NUMBER, 0.0),
        repetition_penalty=field(body, "repetition_penalty", NUMBER),
        logprobs=logprobs,
    )
    return {
        "model": model,
        "params": params,
        "stream": field(body, "stream", bool, False),
        "include_usage": bool(field(stream_options, "include_usage", bool, False)),
        "clamp_max_tokens": False,
        "logprobs": logprobs is not None,
        "n": n,
    }


def _check_tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str]:
    """The tools the model sees and whether a call is forced ("required"; a named choice leaves only
    that tool), or "auto"."""
    tools: list[dict[str, Any]] | None = field(body, "tools", list)
    if not tools:
        if body.get("tool_choice") not in (None, "none", "auto"):
            raise InvalidRequestError(
                "tool_choice forces a tool call, but no tools are given", param="tool_choice"
            )
        return None, "auto"
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function, dict)
        ):
            raise InvalidRequestError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param=f"tools[{i}]"
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequestError(f"tools[{i}].function.name must be a string", param=f"tools[{i}]")
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None, "auto"
    if choice in ("auto", "required"):
        return tools, choice
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise InvalidRequestError(
                f"tool_choice names {name!r}, which is not in tools", param="tool_choice"
            )
        return chosen, "required"
    raise InvalidRequestError(
        "tool_choice must be 'none', 'auto', 'required' or a named function", param="tool_choice"
    )


def parse_chat_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
        if message["role"] not in ("system", "developer", "user", "assistant", "tool"):
            raise InvalidRequestError(
                f"messages[{i}].role {message['role']!r} is not a chat role", param=f"messages[{i}].role"
            )
    structured = _response_format(field(body, "response_format", dict, {"type": "text"}))
    for name in ("functions", "function_call"):
        if name in body:
            reject(name, "use tools and tool_choice")
    for name in ("audio", "prediction", "web_search_options"):
        if body.get(name):
            reject(name, "text generation only")
    if field(body, "modalities", list, ["text"]) != ["text"]:
        reject("modalities", "text generation only")
    top_logprobs = field(body, "top_logprobs", int, None)
    logprobs = (top_logprobs or 0) if field(body, "logprobs", bool, False) else None
    template_kwargs = dict(field(body, "chat_template_kwargs", dict, {}))
    effort = field(body, "reasoning_effort", str)
    if effort in ("none", "minimal"):
        template_kwargs.setdefault("enable_thinking", False)
    tools, tool_choice = _check_tools(body)
    common = _common(body, logprobs=logprobs)
    if structured is not None:
        common["params"] = dataclasses.replace(common["params"], structured_outputs=structured)
    return ChatRequest(
        **common,
        messages=[m if m["role"] != "developer" else {**m, "role": "system"} for m in messages],
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=field(body, "parallel_tool_calls", bool, True),
        template_kwargs=template_kwargs,
    )


def _response_format(response_format: dict[str, Any]) -> StructuredOutputsParams | None:
    """OpenAI ``response_format`` as the engine's constraint: ``text`` (none), ``json_object``, or
    ``json_schema`` (``strict`` or not, the schema is enforced; without one, any JSON object)."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    if kind == "json_schema":
        spec = field(response_format, "json_schema", dict, None)
        if spec is None:
            raise InvalidRequestError("response_format.json_schema is required", param="response_format")
        schema = field(spec, "schema", dict, None)
        if schema is None:
            return StructuredOutputsParams(json_object=True)
        return StructuredOutputsParams.from_schema(schema)
    raise InvalidRequestError(
        "response_format.type must be 'text', 'json_object' or 'json_schema'", param="response_format"
    )


def parse_completion_request(body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    valid_ids = (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    )
    if not (isinstance(prompt, str) and prompt) and not valid_ids:
        raise InvalidRequestError(
            "prompt must be a non-empty string or token-id array (one prompt per request)", param="prompt"
        )
    if field(body, "echo", bool, False):
        reject("echo", "the prompt is not echoed")
    if field(body, "best_of", int, 1) != 1:
        reject("best_of", "only best_of=1 is served")
    if field(body, "suffix", str):
        reject("suffix", "fill-in-the-middle is not implemented")
    logprobs = field(body, "logprobs", int, None)
    assert isinstance(prompt, str | list)
    return CompletionRequest(**_common(body, logprobs=logprobs), prompt=prompt)


# outputs


async def chat_completion(
    gen: Generation, request: ChatRequest, choices: AsyncIterator[tuple[int, ChatDelta]]
) -> dict[str, Any]:
    """A whole ``chat.completion`` body with ``n`` choices."""
    accs = [ChatAccumulator() for _ in range(request.n)]
    async for index, delta in choices:
        accs[index].add(delta)
    usages = [acc.usage or Usage(gen.num_prompt_tokens, 0) for acc in accs]
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": gen.model,
        "choices": [
            {
                "index": index,
                "message": acc.message(),
                "finish_reason": acc.finish_reason or "stop",
                "stop_reason": acc.stop_reason,
                "logprobs": chat_logprobs(acc.logprobs) if request.logprobs else None,
            }
            for index, acc in enumerate(accs)
        ],
        "usage": usage_dict(combined_usage(usages)),
    }


async def chat_completion_chunks(
    gen: Generation, request: ChatRequest, choices: AsyncIterator[tuple[int, ChatDelta]]
) -> AsyncIterator[dict[str, Any]]:
    """``chat.completion.chunk`` dicts: a role chunk per choice first (before the prefill), then deltas."""
    ids: dict[str, Any] = {"response_id": new_id("chatcmpl"), "model": gen.model, "created": now()}
    with_usage = request.include_usage  # then every chunk carries usage: null, the last one the usage
    for index in range(request.n):
        yield chat_chunk(
            **ids, index=index, delta={"role": "assistant", "content": ""}, with_usage=with_usage
        )
    usages: dict[int, Usage] = {}
    async for index, delta in choices:
        if delta.usage is not None:
            usages[index] = delta.usage
        body = delta_dict(delta)
        if not body and delta.finish_reason is None:
            continue
        yield chat_chunk(
            **ids,
            index=index,
            delta=body,
            finish_reason=delta.finish_reason,
            stop_reason=delta.stop_reason,
            logprobs=chat_logprobs(delta.logprobs) if request.logprobs else None,
            with_usage=with_usage,
        )
    if request.include_usage:
        usage = combined_usage(list(usages.values())) if usages else Usage(gen.num_prompt_tokens, 0)
        chunk = chat_chunk(**ids, delta={}, usage=usage_dict(usage), with_usage=True)
        chunk["choices"] = []
        yield chunk


async def completion(
    gen: Generation, request: CompletionRequest, choices: AsyncIterator[tuple[int, StreamDelta]]
) -> dict[str, Any]:
    """A whole ``text_completion`` body with ``n`` choices."""
    texts = [""] * request.n
    finishes: list[str] = ["stop"] * request.n
    stop_reasons: list[str | int | None] = [None] * request.n
    usages = [Usage(gen.num_prompt_tokens, 0)] * request.n
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(request.n)]
    async for index, delta in choices:
        texts[index] += delta.text
        logprobs[index].extend(delta.logprobs or ())
        usages[index] = stream_usage(delta, gen.num_prompt_tokens)
        finishes[index] = delta.finish_reason or finishes[index]
        stop_reasons[index] = delta.stop_reason if delta.stop_reason is not None else stop_reasons[index]
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": gen.model,
        "choices": [
            {
                "index": index,
                "text": texts[index],
                "finish_reason": finishes[index],
                "stop_reason": stop_reasons[index],
                "logprobs": completion_logprobs(logprobs[index]) if request.logprobs else None,
            }
            for index in range(request.n)
        ],
        "usage": usage_dict(combined_usage(usages)),
    }


async def completion_chunks(
    gen: Generation, request: CompletionRequest, choices: AsyncIterator[tuple[int, StreamDelta]]
) -> AsyncIterator[dict[str, Any]]:
    """``text_completion`` chunks (each choice's with its index), then a usage chunk when
    ``include_usage`` was asked for."""
    ids = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": gen.model}
    usages = [Usage(gen.num_prompt_tokens, 0)] * request.n
    offsets = [0] * request.n
    async for index, delta in choices:
        usages[index] = stream_usage(delta, gen.num_prompt_tokens)
        if not delta.text and delta.finish_reason is None:
            continue
        choice: dict[str, Any] = {
            "index": index,
            "text": delta.text,
            "finish_reason": delta.finish_reason,
            "logprobs": completion_logprobs(delta.logprobs, offset=offsets[index])
            if request.logprobs
            else None,
        }
        if delta.finish_reason is not None:
            choice["stop_reason"] = delta.stop_reason
        chunk: dict[str, Any] = {**ids, "choices": [choice]}
        offsets[index] += len(delta.text)
        yield chunk
    if request.include_usage:
        yield {**ids, "choices": [], "usage": usage_dict(combined_usage(usages))}
