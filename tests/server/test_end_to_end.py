"""The whole system on loopback with real engines: a gateway in front of two neurons serving tiny random
Qwen3.5 / Qwen3 checkpoints with the real Qwen tokenizer, driven by the official SDKs, plus the replay
of a real Claude Code request (and the real ``claude -p`` where it is installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter
from server_live import LiveServer

from cortex.server.config import NeuronConfig, config_from_dict
from cortex.server.gateway import create_app as create_gateway
from cortex.server.neuron import create_app as create_neuron

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
MAX_MODEL_LEN = 4400  # the Claude Code request renders to ~4.2k tokens; the rest is what may be generated
CLAUDE_ARGS = [
    "claude",
    "-p",
    "say hi",
    "--model",
    "claude-opus-5-5",
    "--max-turns",
    "1",
    "--output-format",
    "json",
]
CLAUDE_CODE_MAX_MODEL_LEN = 32768  # the real CLI's prompt is ~20k tokens
EVENT = TypeAdapter(RawMessageStreamEvent)
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    from cortex.engine.checkpoint import make_model
    from cortex.engine.text.qwen import write_qwen_tokenizer_files

    root = tmp_path_factory.mktemp("models")
    for name, arch in (("qwen-a", "qwen3_5"), ("qwen-b", "qwen3")):
        make_model(root / name, arch=arch, preset="tiny", vocab_size=248320)
        write_qwen_tokenizer_files(root / name)
    return root


def _neuron(model_root: Path, name: str, *, max_model_len: int, cache_memory_bytes: int) -> LiveServer:
    config = NeuronConfig(
        name=name,
        model_dirs=(model_root,),
        device="cpu",
        dtype="float32",
        max_model_len=max_model_len,
        cache_memory_bytes=cache_memory_bytes,
        memory_budget_bytes=2 * 10**9,
        max_running=4,
        keepalive_s=0.5,
    )
    return LiveServer(create_neuron(config)).start()


@pytest.fixture(scope="module")
def system(model_root, tmp_path_factory) -> Iterator[dict]:
    neurons = {
        name: _neuron(model_root, name, max_model_len=MAX_MODEL_LEN, cache_memory_bytes=64 * 2**20)
        for name in ("n1", "n2")
    }
    models_toml = tmp_path_factory.mktemp("config") / "models.toml"
    models_toml.write_text('[[models]]\nid = "qwen-a"\naliases = ["claude-*"]\n')
    config = config_from_dict(
        {
            "gateway": {"models_file": str(models_toml), "keepalive_s": 0.5},
            "responses": {"path": str(tmp_path_factory.mktemp("state") / "responses.sqlite3")},
            "fleet": {"poll_interval_s": 0.5},
            "neurons": [{"name": name, "url": server.url} for name, server in neurons.items()],
        },
        environ={},
    )
    gateway = LiveServer(create_gateway(config)).start()
    clients: list = []
    try:
        yield {"gateway": gateway, "neurons": neurons, "clients": clients}
    finally:
        for client in clients:
            client.close()
        gateway.stop()
        for server in neurons.values():
            server.stop()


def test_openai_sdk_against_real_engines(system):
    sdk = openai.OpenAI(base_url=f"{system['gateway'].url}/v1", api_key="k", max_retries=0)
    system["clients"].append(sdk)
    assert {"qwen-a", "qwen-b"} <= {m.id for m in sdk.models.list()}
    for model in ("qwen-a", "qwen-b"):
        reply = sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            temperature=0,
            tools=[TOOL],
        )
        assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
        assert 0 < reply.usage.completion_tokens <= 6
    chunks = list(
        sdk.chat.completions.create(
            model="qwen-a",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
    )
    assert chunks[-1].usage.completion_tokens == 6
    scored = sdk.chat.completions.create(
        model="qwen-b",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
        temperature=0,
    )
    content = scored.choices[0].logprobs.content
    assert len(content) == 3
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in content)
    streamed = list(
        sdk.chat.completions.create(
            model="qwen-b",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            logprobs=True,
            top_logprobs=2,
            temperature=0,
            stream=True,
        )
    )
    entries = [
        e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert [e.token for e in entries] == [e.token for e in content]  # greedy: the same tokens, streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]


class Pet(pydantic.BaseModel):
    name: str
    legs: int = pydantic.Field(ge=0, le=8)


def test_responses_api_against_real_engines(system):
    sdk = openai.OpenAI(base_url=f"{system['gateway'].url}/v1", api_key="k", max_retries=0)
    system["clients"].append(sdk)
    common = {"model": "qwen-a", "reasoning": {"effort": "none"}, "max_output_tokens": 40}
    parsed = sdk.responses.parse(input="A pet, as JSON", text_format=Pet, temperature=0, **common)
    assert isinstance(parsed.output_parsed, Pet)  # constrained decoding: valid under the schema
    tools = [{"type": "function", "name": "lookup", "parameters": TOOL["function"]["parameters"]}]
    with sdk.responses.stream(
        input="Look it up",
        tools=tools,
        tool_choice="required",
        include=["message.output_text.logprobs"],
        **common,
    ) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls  # required: at least one call (the sampled random model may make several)
    for call in calls:
        assert call.name == "lookup"
        assert isinstance(json.loads(call.arguments), dict)
    follow_up = sdk.responses.create(
        previous_response_id=final.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "found"} for call in calls
        ],
        tools=tools,
        include=["message.output_text.logprobs"],
        top_logprobs=2,
        **{**common, "max_output_tokens": 4},
    )
    assert follow_up.usage.input_tokens > final.usage.input_tokens  # the conversation came along
    (message,) = [item for item in follow_up.output if item.type == "message"]
    assert all(len(lp.top_logprobs) == 2 for lp in message.content[0].logprobs)


def _stop_string(text: str) -> str:
    """Two characters from the middle of ``text`` (not blank, no partial character), to stop on."""
    for start in range(len(text) // 2, len(text) - 2):
        candidate = text[start : start + 2]
        if candidate.strip() and "\ufffd" not in candidate:
            return candidate
    pytest.fail(f"no stop string in {text!r}")


def test_stop_n_and_logprobs_through_the_gateway_with_real_engines(system):
    """A stop string taken from a greedy reply ends that reply there (both SDKs, streamed and not, the
    matched string reported); n choices sample with seed + i, each with its logprobs, streamed and not."""
    url = system["gateway"].url
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    claude = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    system["clients"] += [sdk, claude]
    chat = {
        "model": "qwen-a",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 10,
        "temperature": 0,
        "extra_body": {"chat_template_kwargs": {"enable_thinking": False}, "ignore_eos": True},
    }
    text = sdk.chat.completions.create(**chat).choices[0].message.content
    stop = _stop_string(text)
    stopped = sdk.chat.completions.create(**chat, stop=[stop]).choices[0]
    assert (stopped.message.content, stopped.finish_reason) == (text[: text.index(stop)], "stop")
    assert stopped.model_extra["stop_reason"] == stop
    with sdk.chat.completions.stream(**chat, stop=[stop]) as stream:
        assert stream.get_final_completion().choices[0].message.content == text[: text.index(stop)]

    message = {
        "model": "qwen-a",
        "max_tokens": 10,
        "messages": chat["messages"],
        "thinking": {"type": "disabled"},
        "extra_body": {"temperature": 0},  # this SDK release no longer names it
    }
    said = "".join(b.text for b in claude.messages.create(**message).content if b.type == "text")
    stop = _stop_string(said)
    with claude.messages.stream(**message, stop_sequences=[stop]) as stream:
        streamed_reply = stream.get_final_message()
    for reply in (claude.messages.create(**message, stop_sequences=[stop]), streamed_reply):
        assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", stop)
        assert "".join(b.text for b in reply.content if b.type == "text") == said[: said.index(stop)]

    sampled = {**chat, "n": 2, "temperature": 1.0, "seed": 5, "max_tokens": 4, "logprobs": True}
    reply = sdk.chat.completions.create(**sampled, top_logprobs=2)
    assert [c.index for c in reply.choices] == [0, 1]
    tokens = [[e.token for e in c.logprobs.content] for c in reply.choices]
    assert [len(t) for t in tokens] == [4, 4]
    assert tokens[0] != tokens[1]  # seed + i: different samples
    assert all(len(e.top_logprobs) == 2 for c in reply.choices for e in c.logprobs.content)
    assert reply.usage.completion_tokens == 8
    chunks = list(sdk.chat.completions.create(**sampled, top_logprobs=2, stream=True))
    streamed: dict[int, list[str]] = {0: [], 1: []}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] += [e.token for e in (choice.logprobs.content if choice.logprobs else [])]
    assert [streamed[0], streamed[1]] == tokens  # the same seeds give the same samples, streamed
    completion = sdk.completions.create(
        model="qwen-a",
        prompt="count",
        max_tokens=3,
        n=2,
        logprobs=2,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert [len(c.logprobs.tokens) for c in completion.choices] == [3, 3]
    assert all(len(top) == 2 for c in completion.choices for top in c.logprobs.top_logprobs)


def test_anthropic_sdk_against_real_engines_with_exact_token_counts(system, model_root):
    from cortex import translate
    from cortex.engine.text.chat import render_chat_prompt
    from cortex.engine.text.tokenizer import Tokenizer

    url = system["gateway"].url
    sdk = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    system["clients"].append(sdk)
    request = {
        "model": "claude-opus-5-5",
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "tools": [
            {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
        ],
    }
    counted = sdk.messages.count_tokens(**request).input_tokens
    as_openai = translate.anthropic_to_openai_request({**request, "max_tokens": 1})
    tokenizer = Tokenizer.from_folder(model_root / "qwen-a")
    expected = render_chat_prompt(
        tokenizer, as_openai["messages"], as_openai["tools"], **as_openai.get("chat_template_kwargs", {})
    )
    assert counted == len(expected)
    message = sdk.messages.create(max_tokens=8, **request)
    assert message.usage.input_tokens == counted
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")
    with sdk.messages.stream(max_tokens=8, **request) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start"
    assert events[0].message.usage.input_tokens == counted
    assert final.usage.output_tokens <= 8


def test_claude_code_request_replays_against_the_gateway(system):
    path = SHARED / "data" / "claude_code_request.json"
    if not path.is_file():
        pytest.skip("../shared/data/claude_code_request.json is absent")
    body = json.loads(path.read_text())
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
        "context-management-2025-06-27,effort-2025-11-24",
        "x-api-key": "local",
        "x-app": "cli",
        "X-Claude-Code-Session-Id": "00000000-0000-0000-0000-000000000001",
    }
    url = system["gateway"].url
    counted = httpx.post(
        f"{url}/v1/messages/count_tokens?beta=true", json=body, headers=headers, timeout=120
    ).json()
    snapshot, json_bufs, types = None, {}, []
    with httpx.stream(
        "POST", f"{url}/v1/messages?beta=true", json=body, headers=headers, timeout=120
    ) as reply:
        assert reply.status_code == 200
        event_name = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                event_name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == event_name
                types.append(data["type"])
                if data["type"] != "ping":  # keep-alives while a long prompt prefills
                    event = EVENT.validate_python(data)
                    snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert snapshot.usage.input_tokens == counted["input_tokens"] > 4000
    assert snapshot.model == "claude-opus-5-5"
    assert snapshot.stop_reason in ("end_turn", "max_tokens", "tool_use")
    # max_tokens 128000 was clamped to what fits after the prompt instead of failing
    assert 0 < snapshot.usage.output_tokens <= MAX_MODEL_LEN - counted["input_tokens"]
    # the session goes on, as Claude Code sends it: a tool call and its result, then the answer and a new
    # user message; each call reuses the recorded prompt from the neuron its session id sticks to
    for turn in _claude_code_turns():
        body = {**body, "stream": False, "max_tokens": 8, "messages": [*body["messages"], *turn]}
        reply = httpx.post(f"{url}/v1/messages?beta=true", json=body, headers=headers, timeout=120)
        assert reply.status_code == 200, reply.text
        usage = anthropic.types.Message.model_validate(reply.json()).usage
        total = httpx.post(
            f"{url}/v1/messages/count_tokens?beta=true", json=body, headers=headers, timeout=120
        ).json()["input_tokens"]
        assert usage.input_tokens + usage.cache_read_input_tokens == total
        # everything up to the last block boundary before the first call's generation prompt was cached
        assert usage.cache_read_input_tokens >= counted["input_tokens"] - 32


def _claude_code_turns() -> list[list[dict]]:
    """Two more turns of a Claude Code session: a tool call with its result; the answer and a new question."""
    thinking = {"type": "thinking", "thinking": "Look.", "signature": ""}
    call = {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "README.md\nsrc"}
    return [
        [
            {"role": "assistant", "content": [thinking, call]},
            {"role": "user", "content": [result]},
        ],
        [
            {"role": "assistant", "content": [{"type": "text", "text": "Hi! A README and src."}]},
            {"role": "user", "content": [{"type": "text", "text": "Read the README."}]},
        ],
    ]


@pytest.fixture
def claude_gateway(model_root, tmp_path) -> Iterator[str]:
    """One neuron with room for Claude Code's real prompt (~20k tokens), behind a gateway."""
    neuron = _neuron(
        model_root, "n1", max_model_len=CLAUDE_CODE_MAX_MODEL_LEN, cache_memory_bytes=512 * 2**20
    )
    models_toml = tmp_path / "models.toml"
    models_toml.write_text('[[models]]\nid = "qwen-a"\naliases = ["claude-*"]\n')
    config = config_from_dict(
        {"gateway": {"models_file": str(models_toml)}, "neurons": [{"name": "n1", "url": neuron.url}]},
        environ={},
    )
    gateway = LiveServer(create_gateway(config)).start()
    try:
        yield gateway.url
    finally:
        gateway.stop()
        neuron.stop()


@pytest.mark.skipif(
    shutil.which("claude") is None, reason="the claude CLI (@anthropic-ai/claude-code) is absent"
)
def test_real_claude_code_cli_talks_to_the_gateway(claude_gateway, tmp_path):
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": claude_gateway,
        "ANTHROPIC_API_KEY": "local",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "32",
        "HOME": str(tmp_path),  # the CLI writes its settings there, not into the real home
    }
    done = subprocess.run(
        CLAUDE_ARGS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    result = json.loads(done.stdout)
    # A random-weight model never ends its turn by itself, so the CLI stops at its own output cap
    # ("max_output_tokens"); what matters is that no request failed at the HTTP or stream level and
    # that the CLI assembled real usage from the streams.
    assert result["api_error_status"] is None, result
    assert result.get("api_error") in (None, "max_output_tokens"), result
    assert result["usage"]["input_tokens"] > 4000
    assert result["usage"]["output_tokens"] > 0


def _long_system(tag: str) -> str:
    rules = " ".join(f"Rule {i}: answer briefly." for i in range(30))
    return f"[{tag}] You are a careful assistant. {rules}"


def test_cached_tokens_reach_both_sdks_through_neuron_and_gateway(system):
    """A conversation's later calls reuse its prefix: OpenAI ``prompt_tokens_details.cached_tokens`` and
    Anthropic ``cache_read_input_tokens`` say how much, from a neuron directly and through the gateway
    (whose affinity keeps the conversation on one neuron), whole and streamed."""
    for where, url in (("neuron", system["neurons"]["n1"].url), ("gateway", system["gateway"].url)):
        oa = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        system["clients"].append(oa)
        messages = [
            {"role": "system", "content": _long_system(f"openai {where}")},
            {"role": "user", "content": "Say hi."},
        ]
        first = oa.chat.completions.create(model="qwen-a", messages=messages, max_tokens=4, temperature=0)
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        messages += [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Again."}]
        chunks = list(
            oa.chat.completions.create(
                model="qwen-a",
                messages=messages,
                max_tokens=4,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        # everything up to the block boundary before the first call's generation prompt came from cache
        assert first.usage.prompt_tokens // 16 * 16 - 16 <= usage.prompt_tokens_details.cached_tokens
        assert usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens

        an = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
        system["clients"].append(an)
        request = {
            "model": "claude-opus-5-5" if where == "gateway" else "qwen-a",  # aliases live in the gateway
            "system": _long_system(f"anthropic {where}"),
            "messages": [{"role": "user", "content": "Say hi."}],
        }
        message = an.messages.create(max_tokens=4, **request)
        assert message.usage.cache_read_input_tokens == 0
        request["messages"] += [
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again."},
        ]
        counted = an.messages.count_tokens(**request).input_tokens
        with an.messages.stream(max_tokens=4, **request) as stream:
            final = stream.get_final_message()
        again = an.messages.create(max_tokens=4, **request)
        for usage in (final.usage, again.usage):
            assert usage.cache_read_input_tokens >= message.usage.input_tokens // 16 * 16 - 16 > 0
            assert usage.input_tokens + usage.cache_read_input_tokens == counted
    n1 = system["neurons"]["n1"].url
    health = httpx.get(f"{n1}/health").json()
    (entry,) = [m for m in health["models"] if m["id"] == "qwen-a"]
    assert 0 < entry["prefix_cache"]["hit_rate"] < 1
    assert entry["prefix_cache"]["snapshots_used"] > 0
    metrics = httpx.get(f"{n1}/metrics").text
    hits = [line for line in metrics.splitlines() if line.startswith("cortex_prefix_cache_hit_tokens_total{")]
    assert any('model="qwen-a"' in line and float(line.split()[-1]) > 0 for line in hits)
    assert 'cortex_prefix_cache_snapshots{model="qwen-a",neuron="n1",type="total"}' in metrics
    assert "cortex_prefix_cache_snapshot_miss_tokens_total" in metrics
