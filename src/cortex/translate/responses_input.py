"""OpenAI Responses requests -> Chat Completions requests, and a request's input as stored items.

:func:`responses_to_openai_request` maps a ``POST /v1/responses`` body onto the Chat Completions body
that asks the same of a model (docs/translate.md, "Responses"); :func:`responses_input_items` gives
the body's ``input`` as Responses items, each with an id and a status, as ``GET
/v1/responses/{id}/input_items`` lists them. ``previous_response_id`` must be resolved before
translating (the gateway's store puts the conversation's items in front of ``input``).

An assistant turn is one run of ``reasoning``, assistant ``message`` and ``function_call`` items; it
becomes one assistant message (``reasoning_content``, ``content``, ``tool_calls``), because chat
templates render one assistant message per turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, as_list, as_str, field, str_field
from cortex.translate.responses_items import (
    INCLUDE_LOGPROBS,
    decode_reasoning,
    includes,
    namespaced_name,
    new_id,
)

# Tools that OpenAI's servers run themselves. cortex runs none of them; they are not offered to the
# model (Codex always sends web_search), and a tool_choice that forces one is refused.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "mcp",
        "tool_search",
    }
)
_PASSED_THROUGH = (
    *("temperature", "top_p", "parallel_tool_calls"),
    *("top_k", "min_p", "repetition_penalty", "seed", "chat_template_kwargs"),  # cortex extensions
)
_REFUSED = {
    "background": "background responses are not run; send the request without it",
    "conversation": "the Conversations API is not served; use previous_response_id",
    "prompt": "stored prompt templates are not served; send instructions and input",
}
_ROLES = ("user", "system", "developer", "assistant")


def responses_to_openai_request(body: Mapping[str, Any]) -> JSON:
    """A Responses create body as a Chat Completions body (``stream`` asks for the usage chunk)."""
    body = as_dict(body, "body")
    if body.get("previous_response_id") is not None:
        raise TranslationError(
            "previous_response_id is resolved by a cortex gateway's Responses store; this server keeps "
            "no conversation state (send the request to the gateway, or send the whole conversation)",
            param="previous_response_id",
        )
    for key, why in _REFUSED.items():
        if body.get(key):
            raise TranslationError(why, param=key)
    messages: list[JSON] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": as_str(instructions, "instructions")})
    messages += _messages(_input_list(body))
    if not messages:
        raise TranslationError("input is required", param="input")
    out: JSON = {"model": str_field(body, "model", ""), "messages": messages}
    out.update({key: body[key] for key in _PASSED_THROUGH if body.get(key) is not None})
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    tools, tool_choice = _tools(body)
    if tools:
        out["tools"] = tools
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    reasoning = body.get("reasoning")
    if reasoning is not None and as_dict(reasoning, "reasoning").get("effort") is not None:
        out["reasoning_effort"] = as_str(reasoning["effort"], "reasoning.effort")
    top_logprobs = body.get("top_logprobs")
    if includes(body, INCLUDE_LOGPROBS) or top_logprobs:
        out["logprobs"] = True
        out["top_logprobs"] = top_logprobs or 0
    user = body.get("user") or body.get("safety_identifier")
    if user is not None:
        out["user"] = user
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def responses_input_items(body: Mapping[str, Any]) -> list[JSON]:
    """The body's ``input`` as Responses items with ``id`` and ``status`` (a string is one user message)."""
    items: list[JSON] = []
    for i, item in enumerate(_input_list(as_dict(body, "body"))):
        path = f"input[{i}]"
        kind = item.get("type", "message")
        stored: JSON = {**item, "type": kind, "status": item.get("status") or "completed"}
        if kind == "message":
            role = item.get("role")
            content = field(item, "content", path)
            if isinstance(content, str):
                part = "output_text" if role == "assistant" else "input_text"
                text: JSON = {"type": part, "text": content}
                stored["content"] = [{**text, "annotations": []} if role == "assistant" else text]
        stored["id"] = item.get("id") or new_id(_ID_PREFIXES.get(str(kind), "item"))
        items.append(stored)
    return items


_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def _input_list(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [as_dict(item, f"input[{i}]") for i, item in enumerate(as_list(value, "input"))]


class _Turns:
    """Chat messages being built; an assistant turn stays open while its items arrive."""

    def __init__(self) -> None:
        self.messages: list[JSON] = []
        self._assistant: JSON | None = None

    def assistant(self) -> JSON:
        if self._assistant is None:
            self._assistant = {"role": "assistant", "content": None}
            self.messages.append(self._assistant)
        return self._assistant

    def add(self, message: JSON) -> None:
        self._assistant = None
        self.messages.append(message)


def _messages(items: list[Mapping[str, Any]]) -> list[JSON]:
    turns = _Turns()
    for i, item in enumerate(items):
        path = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = str_field(item, "role", path)
            if role not in _ROLES:
                raise TranslationError(
                    f"role {role!r} is not one of {', '.join(_ROLES)}", param=f"{path}.role"
                )
            content = _content(field(item, "content", path), f"{path}.content", role)
            if role == "assistant":
                message = turns.assistant()
                message["content"] = (message["content"] or "") + content
            else:
                turns.add({"role": role, "content": content})
        elif kind == "function_call":
            name = namespaced_name(item.get("namespace"), str_field(item, "name", path))
            call = {
                "id": str_field(item, "call_id", path),
                "type": "function",
                "function": {"name": name, "arguments": str_field(item, "arguments", path)},
            }
            turns.assistant().setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            output = _tool_output(field(item, "output", path), f"{path}.output")
            turns.add({"role": "tool", "tool_call_id": str_field(item, "call_id", path), "content": output})
        elif kind == "reasoning":
            text = _reasoning_text(item, path)
            if text:
                message = turns.assistant()
                previous = message.get("reasoning_content")
                message["reasoning_content"] = f"{previous}\n\n{text}" if previous else text
        else:
            raise TranslationError(f"input items of type {kind!r} are not supported", param=f"{path}.type")
    return turns.messages


def _content(content: Any, path: str, role: str) -> Any:
    """Message content as chat content: a string stays one; parts become text / image_url parts (an
    assistant's, its text)."""
    if isinstance(content, str):
        return content
    parts: list[JSON] = []
    for i, value in enumerate(as_list(content, path)):
        part_path = f"{path}[{i}]"
        part = as_dict(value, part_path)
        kind = str_field(part, "type", part_path)
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": str_field(part, "text", part_path)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str_field(part, "refusal", part_path)})
        elif kind == "input_image" and role != "assistant":
            if part.get("image_url") is None:
                raise TranslationError(
                    "only images given by image_url are supported (no Files API here)", param=part_path
                )
            url = as_str(part["image_url"], f"{part_path}.image_url")
            detail = part.get("detail") or "auto"
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        else:
            raise TranslationError(
                f"content of type {kind!r} is not supported here", param=f"{part_path}.type"
            )
    if role == "assistant":
        return "".join(p["text"] for p in parts)
    return parts


def _tool_output(output: Any, path: str) -> str | list[JSON]:
    if isinstance(output, str):
        return output
    texts: list[JSON] = []
    for i, value in enumerate(as_list(output, path)):
        part = as_dict(value, f"{path}[{i}]")
        if part.get("type") != "input_text":
            raise TranslationError("function outputs may hold text only", param=f"{path}[{i}].type")
        texts.append({"type": "text", "text": str_field(part, "text", f"{path}[{i}]")})
    return texts


def _reasoning_text(item: Mapping[str, Any], path: str) -> str:
    """A reasoning item's text: its ``content``, else its summary, else a cortex carrier's text."""
    for key in ("content", "summary"):  # reasoning_text / summary_text parts
        parts = as_list(item.get(key) or [], f"{path}.{key}")
        texts = [
            str_field(as_dict(p, f"{path}.{key}[{j}]"), "text", f"{path}.{key}[{j}]")
            for j, p in enumerate(parts)
        ]
        if texts:
            return "\n\n".join(texts)
    carrier = item.get("encrypted_content")
    if not isinstance(carrier, str):
        return ""
    return decode_reasoning(carrier) or ""


def _function(tool: Mapping[str, Any], path: str, namespace: str | None) -> JSON:
    function: JSON = {"name": namespaced_name(namespace, str_field(tool, "name", path))}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tools(body: Mapping[str, Any]) -> tuple[list[JSON], Any]:
    """The function tools the model is offered (namespaces flattened, hosted tools left out) and the
    chat ``tool_choice``."""
    tools: list[JSON] = []
    for i, value in enumerate(as_list(body.get("tools") or [], "tools")):
        path = f"tools[{i}]"
        tool = as_dict(value, path)
        kind = str_field(tool, "type", path)
        if kind == "function":
            tools.append(_function(tool, path, None))
        elif kind == "namespace":
            namespace = str_field(tool, "name", path)
            for j, inner in enumerate(as_list(field(tool, "tools", path), f"{path}.tools")):
                inner_path = f"{path}.tools[{j}]"
                inner_tool = as_dict(inner, inner_path)
                if inner_tool.get("type") != "function":
                    raise TranslationError("only function tools are supported", param=f"{inner_path}.type")
                tools.append(_function(inner_tool, inner_path, namespace))
        elif kind not in HOSTED_TOOLS:
            raise TranslationError(
                f"tools of type {kind!r} are not supported (function and namespace tools are)",
                param=f"{path}.type",
            )
    return _tool_choice(body.get("tool_choice"), tools)


def _tool_choice(choice: Any, tools: list[JSON]) -> tuple[list[JSON], Any]:
    if choice is None or isinstance(choice, str):
        return tools, choice
    choice = as_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        name = namespaced_name(choice.get("namespace"), str_field(choice, "name", "tool_choice"))
        return tools, {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        allowed = set()
        for i, value in enumerate(as_list(field(choice, "tools", "tool_choice"), "tool_choice.tools")):
            entry = as_dict(value, f"tool_choice.tools[{i}]")
            if entry.get("type") != "function":
                raise TranslationError("only function tools can be allowed", param=f"tool_choice.tools[{i}]")
            allowed.add(
                namespaced_name(entry.get("namespace"), str_field(entry, "name", f"tool_choice.tools[{i}]"))
            )
        kept = [tool for tool in tools if tool["function"]["name"] in allowed]
        return kept, "required" if choice.get("mode") == "required" else "auto"
    raise TranslationError(f"tool_choice of type {kind!r} cannot be served", param="tool_choice.type")


def _response_format(text: Any) -> JSON | None:
    if text is None:
        return None
    fmt = as_dict(text, "text").get("format")
    if fmt is None:
        return None
    fmt = as_dict(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec: JSON = {"name": fmt.get("name") or "output", "schema": field(fmt, "schema", "text.format")}
        if fmt.get("strict") is not None:
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    raise TranslationError(
        "text.format.type must be 'text', 'json_object' or 'json_schema'", param="text.format"
    )
