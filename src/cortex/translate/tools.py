"""Tool definitions and ``tool_choice``: Anthropic custom tools <-> OpenAI function tools.

Anthropic server tools (web search, code execution, ...) and OpenAI custom / allowed-tools choices
have no counterpart a local model can serve, so they raise TranslationError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, as_list, as_str, dict_field, str_field


def anthropic_tools_to_openai(value: Any, path: str, loaded: set[str]) -> list[JSON]:
    """``[{name, description?, input_schema, strict?}]`` as ``[{type: function, function: {...}}]``.

    A ``defer_loading`` tool is only shown to the model once a tool search loaded it (its name is in
    ``loaded``), as Anthropic does. ``cache_control``, ``eager_input_streaming``, ``input_examples``
    and ``allowed_callers`` are hints and are dropped.
    """
    tools: list[JSON] = []
    for i, item in enumerate(as_list(value, path)):
        tool = as_dict(item, f"{path}[{i}]")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise TranslationError(f"server tool {kind!r} cannot be served", param=f"{path}[{i}].type")
        if tool.get("defer_loading") and tool.get("name") not in loaded:
            continue
        function: JSON = {"name": str_field(tool, "name", f"{path}[{i}]")}
        if tool.get("description") is not None:
            function["description"] = as_str(tool["description"], f"{path}[{i}].description")
        function["parameters"] = dict(dict_field(tool, "input_schema", f"{path}[{i}]"))
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    return tools


def openai_tools_to_anthropic(value: Any, path: str) -> list[JSON]:
    """``[{type: function, function: {name, description?, parameters?, strict?}}]`` as Anthropic tools."""
    tools: list[JSON] = []
    for i, item in enumerate(as_list(value, path)):
        tool = as_dict(item, f"{path}[{i}]")
        kind = tool.get("type", "function")
        if kind != "function":
            raise TranslationError(f"tool of type {kind!r} cannot be translated", param=f"{path}[{i}].type")
        function = dict_field(tool, "function", f"{path}[{i}]")
        out: JSON = {"name": str_field(function, "name", f"{path}[{i}].function")}
        if function.get("description") is not None:
            out["description"] = as_str(function["description"], f"{path}[{i}].function.description")
        parameters = function.get("parameters")
        out["input_schema"] = (
            dict(as_dict(parameters, f"{path}[{i}].function.parameters"))
            if parameters
            else {"type": "object", "properties": {}}
        )
        if function.get("strict") is not None:
            out["strict"] = function["strict"]
        tools.append(out)
    return tools


def anthropic_tool_choice_to_openai(value: Any, path: str) -> JSON:
    """The OpenAI fields (``tool_choice``, ``parallel_tool_calls``) for an Anthropic ``tool_choice``."""
    choice = as_dict(value, path)
    kind = str_field(choice, "type", path)
    out: JSON = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        return {"tool_choice": "none"}
    elif kind == "tool":
        name = str_field(choice, "name", path)
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise TranslationError(f"unknown tool_choice type {kind!r}", param=f"{path}.type")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def openai_tool_choice_to_anthropic(value: Any, parallel_tool_calls: Any) -> JSON | None:
    """The Anthropic ``tool_choice`` for OpenAI's ``tool_choice`` and ``parallel_tool_calls``."""
    choice: JSON
    if value is None or value == "auto":
        choice = {"type": "auto"}
    elif value == "required":
        choice = {"type": "any"}
    elif value == "none":
        return {"type": "none"}
    elif isinstance(value, Mapping) and value.get("type") == "function":
        function = dict_field(value, "function", "tool_choice")
        choice = {
            "type": "tool",
            "name": str_field(function, "name", "tool_choice.function"),
        }
    else:
        raise TranslationError(
            "only auto, required, none or a function tool_choice can be translated", param="tool_choice"
        )
    if parallel_tool_calls is False:
        choice["disable_parallel_tool_use"] = True
    elif value is None:
        return None
    return choice
