"""The neuron's OpenAI wire format: request bodies -> validated requests; engine outputs -> JSON.

Parsing checks types and values and raises :class:`cortex.errors.InvalidRequestError` naming the
field. A field whose meaning cannot be served (``n`` > 1, ``logit_bias``, JSON ``response_format``,
``echo``, ...) is rejected; fields that are only hints (``user``, ``metadata``, ``store``,
``parallel_tool_calls``, ``service_tier``, unknown keys) are accepted and ignored (docs/servers.md).

cortex extensions (used by the gateway, harmless for other callers): ``top_k``, ``min_p``,
``repetition_penalty``, ``ignore_eos``, ``stop_token_ids``, ``chat_template_kwargs``,
``clamp_max_tokens`` (lower ``max_tokens`` to what fits the context instead of failing) and
``stream_options.continuous_usage_stats`` (every chunk carries usage; the first one, sent before the
prefill, carries the exact ``prompt_tokens``).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cortex.engine.outputs import ChatDelta, TokenLogprob, Usage
from cortex.engine.sampling_params import SamplingParams
from cortex.errors import ContextLengthError, InvalidRequestError

_NUMBER = (int, float)


def _field(body: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InvalidRequestError(f"{name} must be {_type_name(types)}, got a boolean", param=name)
    if not isinstance(value, types):
        raise InvalidRequestError(
            f"{name} must be {_type_name(types)}, got {type(value).__name__}", param=name
        )
    return value


_TYPE_NAMES = {
    "int": "an integer",
    "str": "a string",
    "bool": "a boolean",
    "list": "an array",
    "dict": "an object",
    "int,float": "a number",
}


def _type_name(types: type | tuple[type, ...]) -> str:
    key = ",".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
    return _TYPE_NAMES.get(key, key)


def _reject(name: str, why: str) -> NoReturn:
    raise InvalidRequestError(f"{name} is not supported: {why}", param=name)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What both OpenAI endpoints share after parsing."""

    model: str
    params: SamplingParams
    stream: bool
    include_usage: bool
    continuous_usage: bool
    clamp_max_tokens: bool
    logprobs: bool


@dataclass(frozen=True, slots=True)
class ChatRequest(GenerationRequest):
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompletionRequest(GenerationRequest):
    prompt: str | list[int] = ""


def _common(body: dict[str, Any], *, logprobs: int | None) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model is required and must be a string", param="model")
    if _field(body, "n", int, 1) != 1:
        _reject("n", "only n=1 is served")
    if _field(body, "logit_bias", dict):
        _reject("logit_bias", "cortex does not apply logit biases")
    max_tokens = _field(body, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = _field(body, "max_tokens", int, None)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise InvalidRequestError("stop must be a string or an array of strings", param="stop")
    stream_options = _field(body, "stream_options", dict, {})
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=_field(body, "temperature", _NUMBER),
        top_p=_field(body, "top_p", _NUMBER),
        top_k=_field(body, "top_k", int),
        min_p=_field(body, "min_p", _NUMBER),
        seed=_field(body, "seed", int),
        stop=tuple([stop] if isinstance(stop, str) else stop or ()),
        stop_token_ids=_field(body, "stop_token_ids", list, []),
        ignore_eos=_field(body, "ignore_eos", bool, False),
        presence_penalty=_field(body, "presence_penalty", _NUMBER, 0.0),
        frequency_penalty=_field(body, "frequency_penalty", _NUMBER, 0.0),
        repetition_penalty=_field(body, "repetition_penalty", _NUMBER),
        logprobs=logprobs,
    )
    return {
        "model": model,
        "params": params,
        "stream": _field(body, "stream", bool, False),
        "include_usage": bool(_field(stream_options, "include_usage", bool, False)),
        "continuous_usage": bool(_field(stream_options, "continuous_usage_stats", bool, False)),
        "clamp_max_tokens": _field(body, "clamp_max_tokens", bool, False),
        "logprobs": logprobs is not None,
    }


def _check_tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools: list[dict[str, Any]] | None = _field(body, "tools", list)
    if not tools:
        return None
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
        return None
    if choice in ("auto", "required"):
        return tools
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise InvalidRequestError(
                f"tool_choice names {name!r}, which is not in tools", param="tool_choice"
            )
        return chosen
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
    response_format = _field(body, "response_format", dict, {"type": "text"})
    if response_format.get("type") != "text":
        _reject("response_format", "constrained JSON output is not implemented; ask in the prompt")
    for name in ("functions", "function_call"):
        if name in body:
            _reject(name, "use tools and tool_choice")
    for name in ("audio", "prediction", "web_search_options"):
        if body.get(name):
            _reject(name, "text generation only")
    if _field(body, "modalities", list, ["text"]) != ["text"]:
        _reject("modalities", "text generation only")
    top_logprobs = _field(body, "top_logprobs", int, None)
    logprobs = (top_logprobs or 0) if _field(body, "logprobs", bool, False) else None
    template_kwargs = dict(_field(body, "chat_template_kwargs", dict, {}))
    effort = _field(body, "reasoning_effort", str)
    if effort in ("none", "minimal"):
        template_kwargs.setdefault("enable_thinking", False)
    tools = _check_tools(body)
    return ChatRequest(
        **_common(body, logprobs=logprobs),
        messages=[m if m["role"] != "developer" else {**m, "role": "system"} for m in messages],
        tools=tools,
        template_kwargs=template_kwargs,
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
    if _field(body, "echo", bool, False):
        _reject("echo", "the prompt is not echoed")
    if _field(body, "best_of", int, 1) != 1:
        _reject("best_of", "only best_of=1 is served")
    if _field(body, "suffix", str):
        _reject("suffix", "fill-in-the-middle is not implemented")
    logprobs = _field(body, "logprobs", int, None)
    assert isinstance(prompt, str | list)
    return CompletionRequest(**_common(body, logprobs=logprobs), prompt=prompt)


def clamp_params(
    params: SamplingParams, *, prompt_len: int, max_model_len: int, clamp: bool
) -> SamplingParams:
    """Check that the prompt and the requested output fit; with ``clamp`` lower max_tokens to fit."""
    room = max_model_len - prompt_len
    if room < 1:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens; this model's context is {max_model_len} tokens",
            param="messages",
        )
    if params.max_tokens is not None and params.max_tokens > room:
        if not clamp:
            raise ContextLengthError(
                f"max_tokens ({params.max_tokens}) + the prompt ({prompt_len} tokens) exceed this model's "
                f"context of {max_model_len} tokens; at most {room} tokens can be generated",
                param="max_tokens",
            )
        return dataclasses.replace(params, max_tokens=room)
    return params


# responses


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**entry(lp.token, lp.logprob), "top_logprobs": [entry(text, value) for _, text, value in lp.top]}
            for lp in logprobs
        ]
    }


def completion_logprobs(logprobs: list[TokenLogprob] | None, *, offset: int = 0) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    offsets, position = [], offset
    for lp in logprobs:
        offsets.append(position)
        position += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{text: value for _, text, value in lp.top} for lp in logprobs],
        "text_offset": offsets,
    }


@dataclass(slots=True)
class ChatAccumulator:
    """Folds ChatDeltas into one OpenAI ``chat.completion`` message (tool calls merged by index)."""

    content: str = ""
    reasoning: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None

    def add(self, delta: ChatDelta) -> None:
        self.content += delta.content
        self.reasoning += delta.reasoning
        for fragment in delta.tool_calls:
            call = self.tool_calls.setdefault(
                fragment["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        self.logprobs.extend(delta.logprobs or ())
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.usage = delta.usage or self.usage

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message


def chat_completion(
    acc: ChatAccumulator, *, response_id: str, model: str, created: int, logprobs: bool
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": acc.message(),
                "finish_reason": acc.finish_reason or "stop",
                "logprobs": chat_logprobs(acc.logprobs) if logprobs else None,
            }
        ],
        "usage": usage_dict(acc.usage or Usage(0, 0)),
    }


def chat_chunk(
    *,
    response_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}],
    }
    if with_usage:
        chunk["usage"] = usage
    return chunk


def delta_dict(delta: ChatDelta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.content:
        out["content"] = delta.content
    if delta.reasoning:
        out["reasoning_content"] = delta.reasoning
    if delta.tool_calls:
        out["tool_calls"] = delta.tool_calls
    return out


def now() -> int:
    return int(time.time())
