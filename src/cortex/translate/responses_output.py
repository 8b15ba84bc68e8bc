"""Chat Completions output -> OpenAI Responses output: a ``chat.completion`` as a Response object, and
``chat.completion.chunk`` streams as the Responses event sequence.

Output items, in the order a model produces them: ``reasoning`` (``content: [{type: reasoning_text}]``,
no summary; ``encrypted_content`` when the request's ``include`` asks for it), an assistant
``message`` (``output_text``, then ``refusal`` parts) and one ``function_call`` per tool call. A
finish reason ``length`` makes the response ``incomplete`` (``max_output_tokens``), and
``content_filter`` likewise; anything else is ``completed``.

The stream (:class:`ResponsesStreamBuilder`), every event numbered by ``sequence_number`` from 0:
``response.created`` and ``response.in_progress`` on the first chunk; per item
``response.output_item.added`` -> its deltas -> ``response.output_item.done``, one item open at a time:
reasoning and text parts are wrapped in ``response.content_part.added`` / ``.done`` with
``response.reasoning_text.delta`` / ``.done``, ``response.output_text.delta`` / ``.done`` or
``response.refusal.delta`` / ``.done`` inside; a function call's arguments come as
``response.function_call_arguments.delta`` / ``.done``. At the end, ``response.completed`` (or
``response.incomplete``) carries the whole Response with usage. An upstream ``{"error": ...}`` chunk
ends the stream with ``response.failed``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, as_list, dict_field, list_field
from cortex.translate.responses_items import (
    INCLUDE_ENCRYPTED_REASONING,
    encode_reasoning,
    includes,
    namespaces_of,
    new_id,
    split_namespace,
)

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ERROR_CODES = {"rate_limit_error": "rate_limit_exceeded", "invalid_request_error": "invalid_prompt"}


def response_skeleton(
    request: Mapping[str, Any], *, response_id: str | None = None, created_at: int | None = None
) -> JSON:
    """The Response object for ``request`` before any output: ``in_progress``, echoing its settings."""
    text, reasoning = _mapping(request.get("text")), _mapping(request.get("reasoning"))
    return {
        "id": response_id or new_id("resp"),
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": "in_progress",
        "model": request.get("model"),
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": list(request.get("tools") or []),
        "top_logprobs": request.get("top_logprobs"),
        "truncation": request.get("truncation") or "disabled",
        "metadata": dict(request.get("metadata") or {}),
        "user": request.get("user"),
        "usage": None,
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def responses_usage(usage: Any) -> JSON | None:
    """Chat Completions usage as Responses usage; None when absent."""
    if not isinstance(usage, Mapping):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt_details.get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)},
        "total_tokens": prompt + completion,
    }


def _logprobs(entries: Any) -> list[JSON]:
    """Chat ``logprobs.content`` entries as ``output_text`` logprobs."""

    def entry(value: Mapping[str, Any]) -> JSON:
        token = str(value.get("token", ""))
        raw = value.get("bytes")
        return {"token": token, "logprob": value.get("logprob"), "bytes": raw or list(token.encode())}

    return [
        {**entry(e), "top_logprobs": [entry(t) for t in e.get("top_logprobs") or []]}
        for e in entries or []
        if isinstance(e, Mapping)
    ]


def _status(finish_reason: Any) -> tuple[str, JSON | None]:
    reason = _INCOMPLETE.get(str(finish_reason))
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


class _Items:
    """What a request asks of the output items: ids, the carrier for reasoning, namespaces."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.encrypted = includes(request, INCLUDE_ENCRYPTED_REASONING)
        self.namespaces = namespaces_of(request.get("tools"))

    def reasoning(self, text: str, *, status: str, item_id: str | None = None) -> JSON:
        item: JSON = {
            "id": item_id or new_id("rs"),
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if text else [],
            "status": status,
        }
        if self.encrypted:
            item["encrypted_content"] = encode_reasoning(text)
        return item

    def function_call(self, call_id: str, name: str, arguments: str, *, status: str, item_id: str) -> JSON:
        namespace, inner = split_namespace(name, self.namespaces)
        item: JSON = {
            "id": item_id,
            "type": "function_call",
            "call_id": call_id,
            "name": inner,
            "arguments": arguments,
            "status": status,
        }
        if namespace is not None:
            item["namespace"] = namespace
        return item


def _message(parts: list[JSON], *, status: str, item_id: str | None = None) -> JSON:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": parts,
    }


def _text_part(text: str, logprobs: list[JSON]) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def openai_to_responses_response(
    completion: Mapping[str, Any],
    request: Mapping[str, Any],
    *,
    response_id: str | None = None,
    created_at: int | None = None,
) -> JSON:
    """A ``chat.completion`` (``choices[0]``) as the Response to the Responses ``request``."""
    completion = as_dict(completion, "body")
    choices = list_field(completion, "choices", "")
    if not choices:
        raise TranslationError("a completion needs at least one choice", param="choices")
    choice = as_dict(choices[0], "choices[0]")
    message = dict_field(choice, "message", "choices[0]")
    status, incomplete = _status(choice.get("finish_reason"))
    items = _Items(request)
    output: list[JSON] = []
    if message.get("reasoning_content") or message.get("reasoning"):
        output.append(
            items.reasoning(str(message.get("reasoning_content") or message["reasoning"]), status="completed")
        )
    parts: list[JSON] = []
    if message.get("content"):
        logprobs = _mapping(choice.get("logprobs"))
        parts.append(_text_part(str(message["content"]), _logprobs(logprobs.get("content"))))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": str(message["refusal"])})
    if parts:
        output.append(_message(parts, status="completed"))
    for i, value in enumerate(as_list(message.get("tool_calls") or [], "choices[0].message.tool_calls")):
        path = f"choices[0].message.tool_calls[{i}]"
        call = as_dict(value, path)
        function = dict_field(call, "function", path)
        output.append(
            items.function_call(
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                status="completed",
                item_id=new_id("fc"),
            )
        )
    if status == "incomplete" and output:
        output[-1]["status"] = "incomplete"
    response = response_skeleton(request, response_id=response_id, created_at=created_at)
    response.update(
        status=status,
        incomplete_details=incomplete,
        output=output,
        usage=responses_usage(completion.get("usage")),
    )
    return response


class ResponsesStreamBuilder:
    """``chat.completion.chunk`` dicts in, Responses stream events out (see the module docstring).

    ``feed(chunk)`` returns the events a chunk makes; ``finish()`` closes the stream (it returns
    nothing once :attr:`done`). ``"[DONE]"`` may be fed; it finishes the stream.
    """

    def __init__(
        self, request: Mapping[str, Any], *, response_id: str | None = None, created_at: int | None = None
    ) -> None:
        self.response = response_skeleton(request, response_id=response_id, created_at=created_at)
        self.done = False
        self._items = _Items(request)
        self._sequence = 0
        self._started = False
        self._output: list[JSON] = []
        self._open: _OpenItem | None = None
        self._calls: dict[int, _OpenCall] = {}
        self._closed_calls: set[int] = set()
        self._finish_reason: Any = None
        self._usage: Any = None

    def _event(self, kind: str, **fields: Any) -> JSON:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _lifecycle(self, kind: str) -> JSON:
        return self._event(kind, response={**self.response, "output": list(self._output)})

    def _start(self) -> list[JSON]:
        if self._started:
            return []
        self._started = True
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def feed(self, chunk: Any) -> list[JSON]:
        if self.done:
            return []
        if chunk == "[DONE]":
            return self.finish()
        chunk = as_dict(chunk, "chunk")
        if "error" in chunk:
            return self._fail(as_dict(chunk["error"], "chunk.error"))
        events = self._start()
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = chunk["usage"]
        for i, value in enumerate(as_list(chunk.get("choices") or [], "chunk.choices")):
            choice = as_dict(value, f"chunk.choices[{i}]")
            if choice.get("index", 0) != 0:
                continue
            events += self._choice(choice)
        return events

    def _choice(self, choice: Mapping[str, Any]) -> list[JSON]:
        events: list[JSON] = []
        delta = as_dict(choice.get("delta") or {}, "chunk.choices[0].delta")
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            events += self._text("reasoning", str(reasoning), [])
        if delta.get("content"):
            logprobs = _mapping(choice.get("logprobs"))
            events += self._text("output_text", str(delta["content"]), _logprobs(logprobs.get("content")))
        if delta.get("refusal"):
            events += self._text("refusal", str(delta["refusal"]), [])
        for j, value in enumerate(
            as_list(delta.get("tool_calls") or [], "chunk.choices[0].delta.tool_calls")
        ):
            events += self._tool_fragment(as_dict(value, f"chunk.choices[0].delta.tool_calls[{j}]"))
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice["finish_reason"]
        return events

    def _text(self, kind: str, text: str, logprobs: list[JSON]) -> list[JSON]:
        """Reasoning text, output text or refusal text: into the open item when it can take it."""
        events: list[JSON] = []
        item = self._open
        wanted = "reasoning" if kind == "reasoning" else "message"
        if item is None or item.kind != wanted:
            events += self._close()
            item = self._open = _OpenItem(
                wanted, len(self._output), new_id("rs" if wanted == "reasoning" else "msg")
            )
            added = (
                self._items.reasoning("", status="in_progress", item_id=item.item_id)
                if wanted == "reasoning"
                else _message([], status="in_progress", item_id=item.item_id)
            )
            if wanted == "reasoning":
                added.pop("encrypted_content", None)
            events.append(
                self._event("response.output_item.added", output_index=item.output_index, item=added)
            )
        if item.part_kind != kind:
            events += self._close_part()
            item.open_part(kind)
            events.append(self._part_event("response.content_part.added", item, _empty_part(kind)))
        item.text += text
        item.logprobs += logprobs
        fields: JSON = {"item_id": item.item_id, "output_index": item.output_index}
        fields["content_index"] = item.content_index
        if kind == "output_text":
            fields["logprobs"] = logprobs
        name = {"reasoning": "reasoning_text", "output_text": "output_text", "refusal": "refusal"}[kind]
        events.append(self._event(f"response.{name}.delta", delta=text, **fields))
        return events

    def _part_event(self, kind: str, item: _OpenItem, part: JSON) -> JSON:
        return self._event(
            kind,
            item_id=item.item_id,
            output_index=item.output_index,
            content_index=item.content_index,
            part=part,
        )

    def _close_part(self) -> list[JSON]:
        item = self._open
        if item is None or item.part_kind is None:
            return []
        kind, text = item.part_kind, item.text
        base: JSON = {
            "item_id": item.item_id,
            "output_index": item.output_index,
            "content_index": item.content_index,
        }
        if kind == "reasoning":
            part: JSON = {"type": "reasoning_text", "text": text}
            done = self._event("response.reasoning_text.done", text=text, **base)
        elif kind == "output_text":
            part = _text_part(text, item.logprobs)
            done = self._event("response.output_text.done", text=text, logprobs=item.logprobs, **base)
        else:
            part = {"type": "refusal", "refusal": text}
            done = self._event("response.refusal.done", refusal=text, **base)
        item.parts.append(part)
        item.part_kind = None
        return [done, self._part_event("response.content_part.done", item, part)]

    def _close(self, status: str = "completed") -> list[JSON]:
        """Close the open reasoning or message item, or the open function call."""
        events = self._close_part()
        item, self._open = self._open, None
        if item is None:
            return events + self._close_calls(status)
        if item.kind == "reasoning":
            text = "".join(p["text"] for p in item.parts)
            done = self._items.reasoning(text, status=status, item_id=item.item_id)
        else:
            done = _message(item.parts, status=status, item_id=item.item_id)
        self._output.append(done)
        events.append(self._event("response.output_item.done", output_index=item.output_index, item=done))
        return events

    def _tool_fragment(self, fragment: Mapping[str, Any]) -> list[JSON]:
        index = int(fragment.get("index", 0))
        if index in self._closed_calls:
            raise TranslationError(
                f"a fragment of tool call {index} arrived after the call closed",
                param="chunk.choices[0].delta",
            )
        events: list[JSON] = []
        call = self._calls.get(index)
        if call is None:
            events += self._close()
            call = self._calls[index] = _OpenCall(str(fragment.get("id") or new_id("call")), new_id("fc"))
        function = fragment.get("function") or {}
        call.name += str(function.get("name") or "")
        arguments = str(function.get("arguments") or "")
        if arguments:
            events += self._open_call(call)
            call.arguments += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=arguments,
                )
            )
        return events

    def _open_call(self, call: _OpenCall) -> list[JSON]:
        if call.output_index is not None:
            return []
        call.output_index = len(self._output) + sum(
            1 for c in self._calls.values() if c.output_index is not None
        )
        item = self._items.function_call(
            call.call_id, call.name, "", status="in_progress", item_id=call.item_id
        )
        return [self._event("response.output_item.added", output_index=call.output_index, item=item)]

    def _close_calls(self, status: str) -> list[JSON]:
        events: list[JSON] = []
        for index, call in self._calls.items():
            events += self._open_call(call)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    arguments=call.arguments,
                )
            )
            item = self._items.function_call(
                call.call_id, call.name, call.arguments, status=status, item_id=call.item_id
            )
            self._output.append(item)
            events.append(self._event("response.output_item.done", output_index=call.output_index, item=item))
            self._closed_calls.add(index)
        self._calls.clear()
        return events

    def finish(self) -> list[JSON]:
        if self.done:
            return []
        status, incomplete = _status(self._finish_reason)
        events = self._start() + self._close(status)
        self.done = True
        self.response.update(status=status, incomplete_details=incomplete, usage=responses_usage(self._usage))
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*events, self._lifecycle(kind)]

    def _fail(self, error: Mapping[str, Any]) -> list[JSON]:
        events = self._start() + self._close("incomplete")
        self.done = True
        code = _ERROR_CODES.get(str(error.get("type")), "server_error")
        self.response.update(
            status="failed",
            error={"code": code, "message": str(error.get("message") or "the upstream failed")},
            usage=responses_usage(self._usage),
        )
        return [*events, self._lifecycle("response.failed")]


class _OpenItem:
    """The reasoning or message item being streamed, and its open content part."""

    def __init__(self, kind: str, output_index: int, item_id: str) -> None:
        self.kind = kind
        self.output_index = output_index
        self.item_id = item_id
        self.parts: list[JSON] = []
        self.part_kind: str | None = None
        self.text = ""
        self.logprobs: list[JSON] = []

    @property
    def content_index(self) -> int:
        return len(self.parts)

    def open_part(self, kind: str) -> None:
        self.part_kind, self.text, self.logprobs = kind, "", []


class _OpenCall:
    """A function call being streamed; its item opens once its arguments start (or at the end)."""

    def __init__(self, call_id: str, item_id: str) -> None:
        self.call_id = call_id
        self.item_id = item_id
        self.name = ""
        self.arguments = ""
        self.output_index: int | None = None


def _empty_part(kind: str) -> JSON:
    if kind == "reasoning":
        return {"type": "reasoning_text", "text": ""}
    if kind == "output_text":
        return _text_part("", [])
    return {"type": "refusal", "refusal": ""}


def openai_to_responses_stream(
    chunks: Iterable[Any],
    request: Mapping[str, Any],
    *,
    response_id: str | None = None,
    created_at: int | None = None,
) -> Iterator[JSON]:
    """Chat Completions chunks as the Responses events for ``request`` (see the module docstring)."""
    builder = ResponsesStreamBuilder(request, response_id=response_id, created_at=created_at)
    for chunk in chunks:
        yield from builder.feed(chunk)
        if builder.done:
            return
    yield from builder.finish()


async def aopenai_to_responses_stream(
    chunks: AsyncIterable[Any],
    request: Mapping[str, Any],
    *,
    response_id: str | None = None,
    created_at: int | None = None,
) -> AsyncIterator[JSON]:
    """The async twin of :func:`openai_to_responses_stream`."""
    builder = ResponsesStreamBuilder(request, response_id=response_id, created_at=created_at)
    async for chunk in chunks:
        for event in builder.feed(chunk):
            yield event
        if builder.done:
            return
    for event in builder.finish():
        yield event
