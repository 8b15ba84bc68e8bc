"""Tool calls in Qwen output: the Qwen3.5 XML form and the Hermes JSON form, whole or streaming.

XML (what the Qwen3.5 / 3.6 template asks for)::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Parameter values are text; they are coerced to the tool's JSON-schema type (integer, number, boolean,
null, object / array via JSON, string as is; a value that does not parse stays a string, and parameters
absent from the schema stay strings, as vLLM's qwen3_coder parser does). One newline after
``<parameter=p>`` and one before ``</parameter>`` belong to the markup. Hermes JSON::

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

The streaming parser emits OpenAI stream fragments: an index's first fragment carries ``id``, ``type``
and ``function.name``; XML arguments follow as JSON text (``{"city": "Par``, ``is"``, ``, "days": 3``,
``}``): string parameters as their text arrives (a long file body streams), other types once complete,
so the concatenated fragments equal ``json.dumps(arguments)``; Hermes calls arrive whole at
``</tool_call>``. Content never contains partial markup: a suffix that may start ``<tool_call>`` is held
back. Whitespace before and after a tool call is dropped from content, and a reply that made calls loses
its trailing whitespace. A ``<tool_call>`` block that is not a valid call is passed through as content.
Output cut off inside an XML call keeps the parameters seen (the last value as far as it got); inside a
Hermes call, it is content unless the JSON is already complete.
Parsing whole text is the streaming parser fed once, so any chunking gives the same final result.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cortex.engine.text.markup import WhitespaceTrimmer, held_prefix_len

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"
FUNCTION_START = "<function="
FUNCTION_END = "</function>"
PARAM_START = "<parameter="
PARAM_END = "</parameter>"
# Tags that end a parameter's value (a missing </parameter> is tolerated).
_VALUE_ENDS = (PARAM_END, PARAM_START, FUNCTION_END, CALL_END)
_LONGEST_VALUE_END = max(len(tag) for tag in _VALUE_ENDS)
_HEADER = re.compile(r"\s*<function=([^>\n]+)>")
_PARAM_HEADER = re.compile(r"<parameter=([^>\n]+)>")
_NON_SPACE = re.compile(r"\S")


def new_call_id() -> str:
    """An OpenAI-style tool call id: ``call_`` and 24 hex digits."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    """One parsed call; ``arguments`` is the JSON text (OpenAI's shape)."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ToolParserDelta:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def parameter_types(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """{tool name: {parameter: JSON schema}} from OpenAI-style (or bare function) tool definitions."""
    types: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters") or function.get("input_schema") or {}
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        types[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return types


def _schema_types(schema: Any) -> list[str]:
    if not isinstance(schema, Mapping):
        return []
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    found: list[str] = []
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            found += _schema_types(option)
    if not found and "enum" in schema:
        found = sorted({type(v).__name__ for v in schema["enum"]} & {"str", "int", "float", "bool"})
        found = [{"str": "string", "int": "integer", "float": "number", "bool": "boolean"}[k] for k in found]
    return found


def coerce_value(value: str, schema: Any) -> Any:
    """Turn a parameter's text into the JSON value its schema asks for; unparseable text stays a string."""
    kinds = _schema_types(schema)
    text = value.strip()
    for kind in kinds:
        if kind == "null" and text.lower() in ("null", "none"):
            return None
        if kind == "integer" and re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        if kind == "number":
            try:
                number = float(text)
            except ValueError:
                continue
            return int(number) if re.fullmatch(r"[-+]?\d+", text) else number
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in ("object", "array"):
            try:
                parsed = json.loads(text)
            except ValueError:
                continue
            if isinstance(parsed, dict if kind == "object" else list):
                return parsed
    return value


def _tag_end(text: str, start: int) -> int:
    """Index just past the ``>`` or newline that ends the tag opened at ``start``; -1 if none yet."""
    ends = [i for i in (text.find(">", start), text.find("\n", start)) if i != -1]
    return min(ends) + 1 if ends else -1


def _first_non_space(text: str, start: int) -> int:
    match = _NON_SPACE.search(text, start)
    return match.start() if match else len(text)


def _is_tag_prefix(text: str, start: int, tags: Sequence[str]) -> bool:
    """True when ``text[start:]`` (possibly empty) is still the beginning of one of ``tags``."""
    if len(text) - start >= max(len(tag) for tag in tags):
        return False
    rest = text[start:]
    return any(tag.startswith(rest) for tag in tags)


def _strip_markup_newlines(value: str) -> str:
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


class ToolCallParser:
    """Streaming tool-call parser over content text: ``feed(text) -> ToolParserDelta``, ``flush()``.

    ``calls`` holds the finished calls, in order.
    """

    def __init__(
        self, tools: Sequence[Mapping[str, Any]] | None = None, *, make_id: Callable[[], str] = new_call_id
    ) -> None:
        self._types = parameter_types(tools)
        self._make_id = make_id
        self._buffer = ""
        self._in_call = False
        self._content = WhitespaceTrimmer(trim_leading=False)
        self.calls: list[ToolCall] = []
        # XML call in progress: name once its header is parsed, arguments emitted so far.
        self._name: str | None = None
        self._params: dict[str, Any] = {}
        self._pos = 0
        self._is_json = False  # the block in progress is not XML: wait for </tool_call>, then parse JSON
        self._scan = 0
        self._streamed: int | None = None  # characters of a string value already emitted
        self._space_before_call = ""  # restored if the block turns out not to be a call

    def feed(self, text: str) -> ToolParserDelta:
        self._buffer += text
        delta = ToolParserDelta()
        while (self._in_call and self._step_call(delta, final=False)) or self._step_content(delta):
            pass
        return delta

    def flush(self) -> ToolParserDelta:
        delta = ToolParserDelta()
        if self._in_call:
            self._step_call(delta, final=True)
            while self._step_content(delta) or (self._in_call and self._step_call(delta, final=True)):
                pass
        if self._buffer:
            delta.content += self._content.push(self._buffer)
            self._buffer = ""
        pending = self._content.take_pending()
        if not self.calls:
            delta.content += pending
        return delta

    # content ------------------------------------------------------------------------------------
    def _step_content(self, delta: ToolParserDelta) -> bool:
        """Emit content up to the next <tool_call>; True when a call was entered (keep going)."""
        if self._in_call:
            return False
        start = self._buffer.find(CALL_START)
        if start == -1:
            keep = held_prefix_len(self._buffer, (CALL_START,))
            delta.content += self._content.push(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        delta.content += self._content.push(self._buffer[:start])
        self._space_before_call = self._content.take_pending()
        self._buffer = self._buffer[start + len(CALL_START) :]
        self._in_call, self._name, self._params, self._pos = True, None, {}, 0
        self._is_json, self._scan, self._streamed = False, 0, None
        return True

    def _end_call(self, consumed: int) -> None:
        self._buffer = self._buffer[consumed:]
        self._in_call = False
        self._content.trim_leading = True

    def _as_content(self, delta: ToolParserDelta, consumed: int) -> None:
        """Pass an invalid block through as content (the opening tag included)."""
        delta.content += self._content.push(self._space_before_call + CALL_START + self._buffer[:consumed])
        self._buffer = self._buffer[consumed:]
        self._in_call = False

    # calls --------------------------------------------------------------------------------------
    # Long calls (a file's content as a parameter) arrive a few characters at a time, so the buffer is
    # never copied or rescanned from the start: ``_scan`` is where the next search for an end tag begins.
    def _step_call(self, delta: ToolParserDelta, *, final: bool) -> bool:
        """Advance the call in progress; True when it ended (content parsing resumes)."""
        if self._name is not None:
            return self._step_xml(delta, final=final)
        buffer = self._buffer
        if not self._is_json:
            offset = _first_non_space(buffer, 0)
            if buffer.startswith(FUNCTION_START, offset):
                header = _HEADER.match(buffer)
                if header is None:
                    bad_end = _tag_end(buffer, offset)
                    if bad_end == -1 and not final:
                        return False
                    self._as_content(delta, len(buffer) if bad_end == -1 else bad_end)
                    return True
                self._start_call(delta, header.group(1).strip())
                self._pos = header.end()
                return self._step_xml(delta, final=final)
            if not final and _is_tag_prefix(buffer, offset, (FUNCTION_START,)):
                return False  # empty or a prefix of "<function="
            self._is_json = True
        end = buffer.find(CALL_END, self._scan)
        if end == -1 and not final:
            self._scan = max(0, len(buffer) - len(CALL_END) + 1)
            return False
        body = self._buffer if end == -1 else self._buffer[:end]
        consumed = len(self._buffer) if end == -1 else end + len(CALL_END)
        call = self._parse_json(body)
        if call is None:
            self._as_content(delta, consumed)
            return True
        name, arguments = call
        self._start_call(delta, name)
        self._finish_call(delta, json.dumps(arguments, ensure_ascii=False))
        self._end_call(consumed)
        return True

    def _start_call(self, delta: ToolParserDelta, name: str) -> None:
        self._name = name
        self.calls.append(ToolCall(id=self._make_id(), name=name, arguments=""))
        index = len(self.calls) - 1
        delta.tool_calls.append(
            {
                "index": index,
                "id": self.calls[index].id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
        )

    def _emit_arguments(self, delta: ToolParserDelta, text: str) -> None:
        self.calls[-1].arguments += text
        delta.tool_calls.append({"index": len(self.calls) - 1, "function": {"arguments": text}})

    def _finish_call(self, delta: ToolParserDelta, text: str) -> None:
        self._emit_arguments(delta, text)
        self._name = None

    def _parse_json(self, body: str) -> tuple[str, dict[str, Any]] | None:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return None
        arguments = data.get("arguments", data.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        return data["name"], arguments

    def _step_xml(self, delta: ToolParserDelta, *, final: bool) -> bool:
        buffer = self._buffer
        while True:
            offset = _first_non_space(buffer, self._pos)
            if buffer.startswith(PARAM_START, offset):
                header = _PARAM_HEADER.match(buffer, offset)
                if header is None:
                    bad_end = _tag_end(buffer, offset)
                    if bad_end == -1 and not final:
                        return False
                    self._pos = len(buffer) if bad_end == -1 else bad_end
                    continue
                scan = max(header.end(), self._scan)
                ends = [(i, tag) for tag in _VALUE_ENDS if (i := buffer.find(tag, scan)) != -1]
                if not ends and not final:
                    self._stream_string(delta, header.group(1).strip(), header.end())
                    self._scan = max(header.end(), len(buffer) - _LONGEST_VALUE_END + 1)
                    return False
                value_end, tag = min(ends) if ends else (len(buffer), "")
                self._add_param(delta, header.group(1).strip(), buffer[header.end() : value_end])
                self._pos = value_end + (len(tag) if tag == PARAM_END else 0)
                self._scan, self._streamed = 0, None
                continue
            if buffer.startswith(FUNCTION_END, offset):
                self._pos = offset + len(FUNCTION_END)
                continue
            if buffer.startswith(CALL_END, offset) or (final and offset == len(buffer)):
                self._close_xml(delta)
                self._end_call(offset + (len(CALL_END) if offset < len(buffer) else 0))
                return True
            if final:
                self._pos = len(buffer)
                continue
            if _is_tag_prefix(buffer, offset, (PARAM_START, FUNCTION_END, CALL_END)):
                return False  # whitespace, or a tag still arriving
            nxt = buffer.find("<", offset + 1)
            self._pos = nxt if nxt != -1 else len(buffer)

    def _schema(self, name: str) -> Any:
        assert self._name is not None
        return self._types.get(self._name, {}).get(name)

    def _key(self, name: str) -> str:
        return ("{" if not self._params else ", ") + json.dumps(name, ensure_ascii=False) + ": "

    def _stream_string(self, delta: ToolParserDelta, name: str, value_start: int) -> None:
        """Emit the safe part of a string parameter's value while it is still arriving.

        Held back: a suffix that may start an end tag, and one newline before it (markup). JSON escaping
        is per character, so the escaped pieces concatenate to ``json.dumps(value)``.
        """
        if _schema_types(self._schema(name)) not in ([], ["string"]):
            return
        buffer = self._buffer
        if len(buffer) == value_start:
            return
        start = value_start + (1 if buffer.startswith("\n", value_start) else 0)
        tail_from = max(start, len(buffer) - _LONGEST_VALUE_END)
        safe = len(buffer) - held_prefix_len(buffer[tail_from:], _VALUE_ENDS)
        if safe > start and buffer[safe - 1] == "\n":
            safe -= 1
        done = start + (self._streamed or 0)
        if safe <= done:
            return
        piece = json.dumps(buffer[done:safe], ensure_ascii=False)[1:-1]
        if self._streamed is None:
            piece = self._key(name) + '"' + piece
        self._emit_arguments(delta, piece)
        self._streamed = safe - start

    def _add_param(self, delta: ToolParserDelta, name: str, raw: str) -> None:
        value = coerce_value(_strip_markup_newlines(raw), self._schema(name))
        if self._streamed is not None:
            assert isinstance(value, str)
            rest = json.dumps(value[self._streamed :], ensure_ascii=False)[1:-1]
            self._emit_arguments(delta, rest + '"')
        else:
            self._emit_arguments(delta, self._key(name) + json.dumps(value, ensure_ascii=False))
        self._params[name] = value

    def _close_xml(self, delta: ToolParserDelta) -> None:
        self._finish_call(delta, "}" if self._params else "{}")


def parse_tool_calls(
    text: str, tools: Sequence[Mapping[str, Any]] | None = None, *, make_id: Callable[[], str] = new_call_id
) -> tuple[str, list[ToolCall]]:
    """Whole-text parse: (content without the call markup, the calls)."""
    parser = ToolCallParser(tools, make_id=make_id)
    content = parser.feed(text).content + parser.flush().content
    return content, parser.calls
