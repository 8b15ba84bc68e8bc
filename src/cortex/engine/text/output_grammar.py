"""The constraint a chat turn's output must follow: a forced tool call, or JSON, in the model's own form.

- Forced tool calls (OpenAI ``tool_choice`` ``required`` or a named function; Anthropic ``any`` / ``tool``,
  translated to those): one or more calls in the syntax the chat template asks for, the Qwen3.5 / 3.6 XML
  form when the template shows ``<function=``, Hermes JSON otherwise, with arguments valid under each
  tool's ``parameters`` schema. In the XML form a string parameter's value is raw text up to
  ``\\n</parameter>`` (``enum`` / ``const`` and ``minLength`` / ``maxLength`` enforced; ``pattern`` and
  ``format`` refused with a 400), any other parameter a JSON value under its schema. Parameters come in
  schema order; optional ones may be left out.
- JSON output (``response_format``): the engine's JSON constraint as given.
- With thinking on (the prompt leaves ``<think>`` open) the constraint starts after ``</think>``, and the
  constrained part may begin with the blank line templates put after the reasoning block.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cortex.engine.sampling_params import SamplingParams
from cortex.engine.structured.backend import JSON_COMPILE_OPTIONS
from cortex.engine.structured.errors import UnsupportedSchemaError
from cortex.engine.structured.params import StructuredOutputsParams
from cortex.engine.text.reasoning import THINK_END
from cortex.engine.text.tokenizer import Tokenizer

REASONING_GAP = '"\\n\\n"?'
_STRING_KEYWORDS_REFUSED = ("pattern", "format")


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _json_rule(schema: Mapping[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_COMPILE_OPTIONS}, ensure_ascii=False)


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function", tool)
    return function if isinstance(function, Mapping) else {}


def _string_value(name: str, schema: Mapping[str, Any], rule: str) -> list[str]:
    """Rules for a string parameter's raw text, ending with its closing tag."""
    refused = [k for k in _STRING_KEYWORDS_REFUSED if k in schema]
    if refused:
        raise UnsupportedSchemaError(
            f"tool parameter {name!r} uses {refused[0]!r}: a forced tool call constrains string parameters "
            "by enum, const, minLength and maxLength only",
            param="tools",
        )
    choices = [schema["const"]] if "const" in schema else schema.get("enum")
    if choices is not None:
        options = " | ".join(_literal(str(c)) for c in choices)
        return [f'{rule}: ({options}) "\\n</parameter>\\n"']
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    repeat = "*" if not low and high is None else f"{{{low},{'' if high is None else int(high)}}}"
    return [f'{rule}[suffix="\\n</parameter>\\n"]: /(?s:.){repeat}/']


def _xml_function(index: int, tool: Mapping[str, Any]) -> list[str]:
    function = _function(tool)
    parameters = function.get("parameters") or {}
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    definitions = {k: parameters[k] for k in ("$defs", "definitions") if k in parameters}
    rule = f"f{index}"
    parts: list[str] = []
    rules: list[str] = []
    for j, (name, schema) in enumerate(properties.items()):
        param_rule, value_rule = f"{rule}_p{j}", f"{rule}_v{j}"
        schema = schema if isinstance(schema, Mapping) else {}
        if schema.get("type") == "string":
            rules += _string_value(name, schema, value_rule)
            rules.append(f'{param_rule}: "<parameter={name}>\\n" {value_rule}')
        else:
            rules.append(f"{value_rule}: {_json_rule({**schema, **definitions})}")
            rules.append(f'{param_rule}: "<parameter={name}>\\n" {value_rule} "\\n</parameter>\\n"')
        parts.append(param_rule if name in required else f"{param_rule}?")
    rules.insert(0, f"{rule}: {_literal(str(function.get('name', '')) + '>' + chr(10))} {' '.join(parts)}")
    return rules


def _hermes_call(tools: Sequence[Mapping[str, Any]]) -> str:
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": _function(t).get("name")},
                "arguments": _function(t).get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return f'call: <tool_call> "\\n" body "\\n" </tool_call>\nbody: {_json_rule({"anyOf": options})}'


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]], *, xml: bool, parallel: bool, after_reasoning: bool
) -> str:
    """A Lark grammar (llguidance's dialect) for one or more calls to ``tools``."""
    calls = 'call ("\\n" call)*' if parallel else "call"
    lines = [f"start: {REASONING_GAP + ' ' if after_reasoning else ''}{calls}"]
    if xml:
        lines.append('call: <tool_call> "\\n<function=" fn "</function>\\n" </tool_call>')
        lines.append("fn: " + " | ".join(f"f{i}" for i in range(len(tools))))
        for i, tool in enumerate(tools):
            lines += _xml_function(i, tool)
    else:
        lines.append(_hermes_call(tools))
    return "\n".join(lines)


def json_grammar(structured: StructuredOutputsParams) -> str:
    """The JSON constraint as a Lark grammar that may start with the post-reasoning blank line."""
    schema = {"type": "object"} if structured.json_object else json.loads(structured.json or "{}")
    return f"start: {REASONING_GAP} body\nbody: {_json_rule(schema)}"


def constrain(
    params: SamplingParams | None,
    *,
    tokenizer: Tokenizer,
    opens_reasoning: bool,
    tools: Sequence[Mapping[str, Any]] | None,
    tool_choice: str,
    parallel_tool_calls: bool = True,
) -> SamplingParams | None:
    """``params`` with the turn's output constraint, or unchanged when nothing is forced."""
    structured = params.structured_outputs if params is not None else None
    forced_tools = bool(tools) and tool_choice == "required"
    if not forced_tools and structured is None:
        return params
    end_id = tokenizer.token_to_id(THINK_END) if opens_reasoning else None
    after_reasoning = end_id is not None
    if forced_tools:
        assert tools is not None
        xml = "<function=" in (tokenizer.chat_template.source or "")
        grammar = tool_call_grammar(
            tools, xml=xml, parallel=parallel_tool_calls, after_reasoning=after_reasoning
        )
        constraint = StructuredOutputsParams(grammar=grammar, reasoning_end_token_id=end_id)
    elif after_reasoning:
        assert structured is not None
        constraint = StructuredOutputsParams(grammar=json_grammar(structured), reasoning_end_token_id=end_id)
    else:
        return params
    return dataclasses.replace(params or SamplingParams(), structured_outputs=constraint)
