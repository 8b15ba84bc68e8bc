"""chat / stream_chat over a scripted fake engine that replays canned tokens through the real tokenizer."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

import pytest
from conversations import LOOP_START, agent_session, common_prefix
from conversations import TOOLS as SESSION_TOOLS

from cortex import translate
from cortex.engine.delta_stream import DeltaStream
from cortex.engine.outputs import RequestOutput, StreamDelta
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.chat import chat, render_chat, render_chat_prompt, stream_chat
from cortex.engine.text.detokenizer import IncrementalDetokenizer
from cortex.engine.text.errors import ChatTemplateError
from cortex.errors import InvalidRequestError

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
THINK_AND_CALL = (
    "The user wants weather.\n</think>\n\nChecking.\n\n<tool_call>\n<function=get_weather>\n"
    "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call><|im_end|>"
)


class ScriptedEngine:
    """The engine seam: generate / add_request replay ``script`` (text encoded by the real tokenizer)."""

    def __init__(self, tokenizer, script: str, finish_reason: str = "stop") -> None:
        self.tokenizer = tokenizer
        self.token_ids = tokenizer.encode(script) if tokenizer is not None else []
        self.finish_reason = finish_reason
        self.calls: list[tuple[list[int], SamplingParams | None]] = []
        self.turn_boundaries: list[int | None] = []
        self.aborted: list[str] = []

    def _texts(self) -> list[str]:
        detok = IncrementalDetokenizer(self.tokenizer)
        texts = [detok.add([token_id]) for token_id in self.token_ids]
        texts[-1] += detok.flush()
        return texts

    def generate(self, prompts, params=None, *, turn_boundaries=None):
        self.calls.append((list(prompts[0]), params))
        self.turn_boundaries.extend(turn_boundaries or [None])
        return [
            RequestOutput(
                request_id="r",
                prompt_token_ids=list(prompts[0]),
                token_ids=list(self.token_ids),
                text="".join(self._texts()),
                finish_reason=self.finish_reason,
                num_cached_tokens=3,
            )
        ]

    async def add_request(self, prompt, params=None, *, request_id=None, turn_boundary=None):
        self.calls.append((list(prompt), params))
        self.turn_boundaries.append(turn_boundary)
        deltas = DeltaStream("r", num_prompt_tokens=len(prompt), abort=self.aborted.append)
        texts = self._texts()
        for i, (token_id, text) in enumerate(zip(self.token_ids, texts, strict=True)):
            last = i == len(texts) - 1
            deltas.sink(
                StreamDelta(
                    request_id="r",
                    token_ids=[token_id],
                    text=text,
                    finish_reason=self.finish_reason if last else None,
                    num_prompt_tokens=len(prompt),
                    num_generated_tokens=i + 1,
                    num_cached_tokens=3 if last else 0,
                )
            )
        return deltas


async def collect(engine, *args, **kwargs):
    return [delta async for delta in stream_chat(engine, *args, **kwargs)]


def test_chat_with_thinking_and_a_tool_call(qwen):
    engine = ScriptedEngine(qwen, THINK_AND_CALL)
    params = SamplingParams(max_tokens=64, temperature=0.0)
    reply = chat(engine, MESSAGES, params, tools=TOOLS)
    assert reply.reasoning == "The user wants weather."
    assert reply.text == "Checking."
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}
    prompt_ids = render_chat_prompt(qwen, MESSAGES, TOOLS)
    assert engine.calls == [(prompt_ids, params)]  # params pass through untouched
    end = engine.token_ids.index(qwen.token_to_id("</think>"))
    assert reply.usage.reasoning_tokens == end + 1
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens == len(engine.token_ids)
    assert reply.usage.cached_tokens == 3


async def test_stream_chat_adds_up_to_chat(qwen):
    engine = ScriptedEngine(qwen, THINK_AND_CALL)
    whole = chat(engine, MESSAGES, None, tools=TOOLS)
    deltas = await collect(engine, MESSAGES, None, tools=TOOLS)
    assert "".join(d.content for d in deltas) == whole.text
    assert "".join(d.reasoning for d in deltas) == whole.reasoning
    fragments = [f for d in deltas for f in d.tool_calls]
    assert fragments[0]["function"]["name"] == "get_weather"
    assert re.fullmatch(r"call_[0-9a-f]{24}", fragments[0]["id"])
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    assert arguments == whole.tool_calls[0]["function"]["arguments"]
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage == whole.usage
    assert not any("<" in d.content for d in deltas)  # no markup ever reaches content


async def test_thinking_off_output_is_content(qwen):
    engine = ScriptedEngine(qwen, "Hello there!<|im_end|>", finish_reason="length")
    reply = chat(engine, MESSAGES, None, enable_thinking=False)
    assert (reply.reasoning, reply.text, reply.finish_reason) == (None, "Hello there!", "length")
    assert reply.usage.reasoning_tokens == 0
    prompt = qwen.decode(engine.calls[0][0], skip_special_tokens=False)
    assert prompt.endswith("<think>\n\n</think>\n\n")
    deltas = await collect(engine, MESSAGES, None, enable_thinking=False)
    assert "".join(d.content for d in deltas) == "Hello there!"
    assert deltas[-1].finish_reason == "length"


def test_without_tools_markup_stays_content(qwen):
    engine = ScriptedEngine(qwen, "<tool_call>\n{}\n</tool_call>")
    reply = chat(engine, MESSAGES, None, enable_thinking=False)
    assert reply.text == "<tool_call>\n{}\n</tool_call>"
    assert (reply.tool_calls, reply.finish_reason) == ([], "stop")


def test_hermes_call_and_cut_off_reasoning(qwen):
    engine = ScriptedEngine(
        qwen, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    reply = chat(engine, MESSAGES, None, tools=TOOLS, enable_thinking=False)
    assert json.loads(reply.tool_calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    engine = ScriptedEngine(qwen, "Still thinking about", finish_reason="length")
    reply = chat(engine, MESSAGES, None)
    assert (reply.reasoning, reply.text, reply.finish_reason) == ("Still thinking about", "", "length")
    assert reply.usage.reasoning_tokens == len(engine.token_ids)


async def test_errors_are_typed_and_raised_before_generation(qwen):
    engine = ScriptedEngine(qwen, "x")
    with pytest.raises(ChatTemplateError, match="No user query found"):
        chat(engine, [{"role": "assistant", "content": "hi"}], None)
    with pytest.raises(ChatTemplateError, match="No user query found"):
        await collect(engine, [{"role": "assistant", "content": "hi"}], None)
    assert engine.calls == []
    with pytest.raises(InvalidRequestError, match="no tokenizer"):
        chat(ScriptedEngine(None, ""), MESSAGES, None)


def test_claude_code_request_renders(qwen, shared_data):
    """Claude Code's real request: mid-conversation system message, text parts, many tools."""
    body = json.loads((shared_data / "claude_code_request.json").read_text())
    messages = [{"role": "system", "content": body["system"]}, *body["messages"]]
    tools = [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t["input_schema"],
            },
        }
        for t in body["tools"]
    ]
    prompt = qwen.apply_chat_template(messages, tools=tools)
    assert prompt.count("<|im_start|>system\n") == 1
    assert "# Environment" in prompt.split("<|im_end|>")[0]
    assert prompt.endswith("say hi<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert len(render_chat_prompt(qwen, messages, tools)) > 1000


def test_turn_boundary_is_where_the_generation_prompt_starts(qwen, chatml):
    for tokenizer, generation_prompt in (
        (qwen, "<|im_start|>assistant\n<think>\n"),
        (chatml, "<|im_start|>assistant\n"),
    ):
        rendered = render_chat(tokenizer, MESSAGES, TOOLS)
        assert rendered.token_ids == render_chat_prompt(tokenizer, MESSAGES, TOOLS)
        assert rendered.turn_boundary is not None
        assert (
            tokenizer.decode(rendered.token_ids[rendered.turn_boundary :], skip_special_tokens=False)
            == generation_prompt
        )
    thinking_off = render_chat(qwen, MESSAGES, enable_thinking=False)
    tail = qwen.decode(thinking_off.token_ids[thinking_off.turn_boundary :], skip_special_tokens=False)
    assert tail == "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert render_chat(qwen, MESSAGES, add_generation_prompt=False).turn_boundary is None


def test_each_call_repeats_the_last_one_up_to_its_turn_boundary_qwen3_6(qwen):
    """The real Qwen3.6 template over an agent session with tool calls: a tool loop re-renders the last
    prompt past its turn boundary (the reasoning of the turns since the last user query is kept); a new
    user query re-renders the answered turns without their reasoning, so that call diverges right after
    the turn boundary of the call that began the previous tool loop."""
    rendered = [render_chat(qwen, messages, SESSION_TOOLS) for messages in agent_session()]
    boundaries = [r.turn_boundary for r in rendered]
    assert None not in boundaries
    for i in range(1, len(rendered)):
        shared = common_prefix(rendered[i - 1].token_ids, rendered[i].token_ids)
        if LOOP_START[i] == LOOP_START[i - 1]:  # the tool loop goes on
            assert shared >= boundaries[i - 1]
        else:  # a new user query: earlier reasoning dropped
            assert shared < boundaries[i - 1]
            assert boundaries[LOOP_START[i - 1]] <= shared <= boundaries[LOOP_START[i - 1]] + 3
            start = rendered[LOOP_START[i - 1]].token_ids
            assert common_prefix(start, rendered[i].token_ids) >= boundaries[LOOP_START[i - 1]]


def test_each_call_repeats_the_last_one_up_to_its_turn_boundary_chatml(chatml):
    """ChatML renders every turn the same way each time: a call repeats all of the last prompt."""
    tokenizer = chatml
    rendered = [render_chat(tokenizer, messages, SESSION_TOOLS) for messages in agent_session()]
    for before, after in itertools.pairwise(rendered):
        assert before.turn_boundary is not None
        assert common_prefix(before.token_ids, after.token_ids) == len(before.token_ids)


def _as_written(message: dict[str, Any], *, qwen_format: bool) -> str:
    """An assistant turn as the model writes it after the generation prompt, in the format the template's
    tool instructions ask for, through its end-of-turn token (the reply the engine generated)."""
    content = message.get("content") or ""
    calls = [call["function"] for call in message.get("tool_calls", [])]
    if qwen_format:
        written_calls = [
            f"<tool_call>\n<function={call['name']}>\n"
            + "".join(
                f"<parameter={name}>\n{value if isinstance(value, str) else json.dumps(value)}\n"
                "</parameter>\n"
                for name, value in json.loads(call["arguments"]).items()
            )
            + "</function>\n</tool_call>"
            for call in calls
        ]
        reply = f"{message['reasoning_content']}\n</think>\n\n{content}"
        separator = "\n\n" if content else ""
    else:
        written_calls = [
            f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {call["arguments"]}}}\n</tool_call>'
            for call in calls
        ]
        reply, separator = content, "\n" if content else ""
    if written_calls:
        reply += separator + "\n".join(written_calls)
    return reply + "<|im_end|>"


@pytest.mark.parametrize("template", ["qwen3_6", "chatml"])
def test_the_next_call_repeats_the_prompt_and_the_reply_as_written(template, qwen, chatml):
    """Where each call of an agent session diverges from the last call's prompt followed by the reply the
    model wrote: nowhere (ChatML, and the Qwen3.6 template within a tool loop), so the engine's
    snapshot at the end of a generation is where the next call resumes; or inside the last prompt
    (Qwen3.6 after a new user query drops the answered turns' reasoning), where the turn boundary
    snapshot of the call that began the loop serves it."""
    tokenizer = qwen if template == "qwen3_6" else chatml
    calls = agent_session()
    rendered = [render_chat(tokenizer, messages, SESSION_TOOLS) for messages in calls]
    for i in range(1, len(calls)):
        before, after = rendered[i - 1], rendered[i]
        reply = calls[i][len(calls[i - 1])]
        written = [
            *before.token_ids,
            *tokenizer.encode(_as_written(reply, qwen_format=template == "qwen3_6")),
        ]
        shared = common_prefix(written, after.token_ids)
        if template == "chatml" or LOOP_START[i] == LOOP_START[i - 1]:
            assert shared == len(written), tokenizer.decode(written[shared:], skip_special_tokens=False)
        else:
            assert before.turn_boundary is not None
            assert shared < before.turn_boundary


def _anthropic_round_trip(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """``messages`` (an assistant reply and its tool result last) as a Claude Code client sends them
    back: the reply as the gateway returned it (an Anthropic message), then translated for the neuron."""
    reply, result = messages[-2:]
    returned = translate.openai_to_anthropic_response(
        {"id": "c", "model": "m", "choices": [{"message": reply, "finish_reason": "tool_calls"}]}
    )
    tool_result = {"type": "tool_result", "tool_use_id": result["tool_call_id"], "content": result["content"]}
    body = {
        "model": "m",
        "max_tokens": 64,
        "system": messages[0]["content"],
        "messages": [
            *({"role": m["role"], "content": m["content"]} for m in messages[1:-2]),
            {"role": "assistant", "content": returned["content"]},
            {"role": "user", "content": [tool_result]},
        ],
        "tools": [
            {
                "name": t["function"]["name"],
                "description": t["function"]["description"],
                "input_schema": t["function"]["parameters"],
            }
            for t in tools
        ],
    }
    return translate.anthropic_to_openai_request(body)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("template", ["qwen3_6", "chatml"])
def test_a_reply_comes_back_in_the_next_call_as_the_model_wrote_it(template, dialect, qwen, chatml):
    """The whole loop a tool call makes: the model writes reasoning and a call, ``chat`` parses them, the
    client gets them (OpenAI, or Anthropic through the gateway's translation) and sends them back with
    the tool result; the next call's prompt starts with the last prompt and the reply's tokens as
    generated, so it resumes from the snapshot at the end of that generation."""
    tokenizer = qwen if template == "qwen3_6" else chatml
    script = (
        THINK_AND_CALL
        if template == "qwen3_6"
        else 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
        "</tool_call><|im_end|>"
    )
    engine = ScriptedEngine(tokenizer, script)
    reply = chat(engine, MESSAGES, SamplingParams(max_tokens=64), tools=TOOLS)
    assert reply.finish_reason == "tool_calls"
    assistant: dict[str, Any] = {"role": "assistant", "content": reply.text, "tool_calls": reply.tool_calls}
    if reply.reasoning:
        assistant["reasoning_content"] = reply.reasoning
    call_id = reply.tool_calls[0]["id"]
    messages = [*MESSAGES, assistant, {"role": "tool", "tool_call_id": call_id, "content": "Paris: 18C"}]
    request: dict[str, Any] = {"messages": messages, "tools": TOOLS}
    if dialect == "anthropic":
        request = _anthropic_round_trip(messages, TOOLS)
    after = render_chat(tokenizer, request["messages"], request.get("tools"))
    written = [*engine.calls[0][0], *engine.token_ids]
    shared = common_prefix(written, after.token_ids)
    assert shared == len(written), tokenizer.decode(written[shared:], skip_special_tokens=False)


def test_chat_passes_the_turn_boundary_to_the_engine(qwen):
    engine = ScriptedEngine(qwen, "Hi.<|im_end|>")
    boundary = render_chat(qwen, MESSAGES, None).turn_boundary
    chat(engine, MESSAGES, None)

    async def consume() -> None:
        async for _ in stream_chat(engine, MESSAGES, None):
            pass

    asyncio.run(consume())
    assert engine.turn_boundaries == [boundary, boundary]
    assert boundary is not None
