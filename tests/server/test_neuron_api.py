"""The neuron app over the scripted engine: the contract routes, both dialects through the official SDKs,
admission control, bad input, keep-alives, disconnects and drain."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import anthropic
import httpx
import httpx2
import openai
import pytest
from server_fakes import make_neuron
from server_live import LiveServer, serve

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def sdk_openai(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://neuron/v1", api_key="unused", http_client=client, max_retries=0
    )


def sdk_anthropic(app) -> anthropic.AsyncAnthropic:
    """The anthropic SDK runs on httpx2, so it gets its own ASGI transport."""
    client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://neuron")
    return anthropic.AsyncAnthropic(
        base_url="http://neuron", api_key="unused", http_client=client, max_retries=0
    )


async def test_health_discovery_and_models_follow_the_contract(client):
    health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert {"index", "name", "memory_total_bytes", "memory_used_bytes", "memory_free_bytes"} <= set(
        health["devices"][0]
    )
    assert health["models"] == []
    assert health["in_flight"] == 0
    assert health["queued"] == 0
    assert health["memory_budget_bytes"] == 10**6
    assert health["memory_used_bytes"] == 0
    discovery = (await client.get("/discovery")).json()
    ids = {m["id"] for m in discovery["models"]}
    assert {"alpha", "thinker", "tooler", "huge", "slow"} <= ids
    alpha = next(m for m in discovery["models"] if m["id"] == "alpha")
    assert alpha["architecture"] == "fake"
    assert alpha["estimated_memory_bytes"] == 1000
    assert alpha["max_model_len"] == 4096
    assert "hostname" in discovery["host"]
    assert (await client.get("/models")).json() == {"models": []}

    loaded = await client.post("/models/load", json={"model": "alpha"})
    assert loaded.status_code == 200
    assert loaded.json() == {"id": "alpha", "status": "loaded", "tensor_parallel": 1, "devices": ["cpu"]}
    (model,) = (await client.get("/models")).json()["models"]
    assert model["id"] == "alpha"
    assert model["status"] == "loaded"
    assert model["in_flight"] == 0
    assert (await client.get("/health")).json()["memory_used_bytes"] == 1000


async def test_load_is_single_flight(models_root):
    app, loader = make_neuron(models_root)
    write_slow = models_root / "alpha" / "config.json"
    script = json.loads(write_slow.read_text())
    script["fake"]["load_delay_s"] = 0.2
    write_slow.write_text(json.dumps(script))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        replies = await asyncio.gather(
            *(client.post("/models/load", json={"model": "alpha"}) for _ in range(20))
        )
    assert {r.status_code for r in replies} == {200}
    assert loader.load_calls == ["alpha"]


@pytest.mark.parametrize(
    "model_id", ["../alpha", "..", "/etc/passwd", "alpha/../alpha", "a/b", "", "escape", "~", "nope", 42]
)
async def test_unknown_models_and_path_traversal_are_404(client, models_root, tmp_path, model_id):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"fake": {}}))
    os.symlink(outside, models_root / "escape")  # a symlink leading out of the root is not a model
    reply = await client.post("/models/load", json={"model": model_id})
    assert reply.status_code in (400, 404)
    assert reply.json()["error"]["message"]
    if reply.status_code == 404:
        assert reply.json()["error"]["code"] == "model_not_found"
    discovered = {m["id"] for m in (await client.get("/discovery")).json()["models"]}
    assert "escape" not in discovered


async def test_load_that_does_not_fit_is_507_and_failures_are_reported(client):
    reply = await client.post("/models/load", json={"model": "huge"})
    assert reply.status_code == 507
    assert "budget" in reply.json()["error"]["message"]
    failed = await client.post("/models/load", json={"model": "broken"})
    assert failed.status_code == 500
    assert "scripted load failure" in failed.json()["error"]["message"]
    (entry,) = (await client.get("/models")).json()["models"]
    assert entry["status"] == "failed"
    assert "scripted" in entry["error"]


async def test_unload_refuses_while_busy_unless_forced(neuron, client):
    _app, loader = neuron
    await client.post("/models/load", json={"model": "slow"})
    stream = asyncio.create_task(
        client.post(
            "/v1/chat/completions", json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
        )
    )
    while not loader.engines["slow"].num_running:
        await asyncio.sleep(0.01)
    busy = await client.post("/models/unload", json={"model": "slow"})
    assert busy.status_code == 409
    forced = await client.post("/models/unload", json={"model": "slow", "force": True})
    assert forced.status_code == 200
    assert forced.json()["status"] == "unloaded"
    assert loader.engines["slow"].closed
    await asyncio.wait_for(stream, 10)
    again = await client.post("/models/unload", json={"model": "slow"})
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "model_not_found"


async def test_openai_sdk_chat_stream_and_not(client):
    sdk = sdk_openai(client)
    reply = await sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 11
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 11

    chunks = [
        c
        async for c in await sdk.chat.completions.create(
            model="alpha",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_tools_and_reasoning(client):
    sdk = sdk_openai(client)
    reply = await sdk.chat.completions.create(
        model="tooler", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"

    async with sdk.chat.completions.stream(
        model="tooler", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'

    raw = (
        await client.post(
            "/v1/chat/completions", json={"model": "thinker", "messages": [{"role": "user", "content": "q"}]}
        )
    ).json()
    assert raw["choices"][0]["message"]["reasoning_content"] == "let me think"
    assert raw["choices"][0]["message"]["content"] == "42"
    assert raw["usage"]["completion_tokens_details"]["reasoning_tokens"] == len("let me think")


async def test_tool_choice_none_hides_tools_and_unknown_named_tool_is_400(neuron, client):
    _, _loader = neuron
    reply = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tooler",
            "messages": [{"role": "user", "content": "q"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "none",
        },
    )
    assert reply.json()["choices"][0]["finish_reason"] == "stop"
    bad = await client.post(
        "/v1/chat/completions",
        json={
            "model": "tooler",
            "messages": [{"role": "user", "content": "q"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "other"}},
        },
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "tool_choice"


async def test_completions_stream_and_not(client):
    sdk = sdk_openai(client)
    reply = await sdk.completions.create(model="alpha", prompt="say", max_tokens=20)
    assert reply.choices[0].text == "hello world"
    assert reply.usage.prompt_tokens == 3
    chunks = [c async for c in await sdk.completions.create(model="alpha", prompt=[1, 2], stream=True)]
    assert "".join(c.choices[0].text for c in chunks) == "hello world"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_anthropic_sdk_messages_and_count_tokens(neuron, client):
    from cortex.engine.text.chat import render_chat_prompt

    app, loader = neuron
    sdk = sdk_anthropic(app)
    message = await sdk.messages.create(
        model="alpha", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "hello world"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 11

    async with sdk.messages.stream(
        model="thinker", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == "42"

    request = {"model": "alpha", "messages": [{"role": "user", "content": "count me"}], "system": "be brief"}
    counted = await sdk.messages.count_tokens(**request)
    tokenizer = loader.engines["alpha"].tokenizer
    expected = render_chat_prompt(
        tokenizer, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count me"}], None
    )
    assert counted.input_tokens == len(expected)
    async with sdk.messages.stream(max_tokens=10, **request) as stream:
        events = [e async for e in stream]
    assert events[0].type == "message_start"
    assert events[0].message.usage.input_tokens == len(expected)


async def test_each_chat_request_renders_its_prompt_once_and_a_prompt_too_long_is_a_400_before_a_stream(
    neuron, client
):
    _, loader = neuron
    messages = [{"role": "user", "content": "hi"}]
    for path, body in [
        ("/v1/chat/completions", {"model": "alpha", "messages": messages}),
        ("/v1/chat/completions", {"model": "alpha", "messages": messages, "stream": True}),
        ("/v1/messages", {"model": "alpha", "messages": messages, "max_tokens": 10**6}),
        ("/v1/messages", {"model": "alpha", "messages": messages, "max_tokens": 10**6, "stream": True}),
    ]:
        assert (await client.post(path, json=body)).status_code == 200
    assert loader.engines["alpha"].tokenizer.num_prompts_rendered == 4
    too_long = [{"role": "user", "content": "x" * 5000}]
    for path, param in [("/v1/chat/completions", "messages"), ("/v1/messages", None)]:
        reply = await client.post(
            path, json={"model": "alpha", "messages": too_long, "max_tokens": 5, "stream": True}
        )
        assert reply.status_code == 400
        assert reply.headers["content-type"].startswith("application/json")
        assert (reply.json()["error"].get("param"), "context" in reply.json()["error"]["message"]) == (
            param,
            True,
        )


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "alpha", "messages": "hi"}, 400, "messages"),
        (
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            400,
            "temperature",
        ),
        (
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "temperature": -1},
            400,
            "temperature",
        ),
        ({"model": "alpha", "messages": [{"role": "user", "content": "x"}], "top_p": 0}, 400, "top_p"),
        ({"model": "alpha", "messages": [{"role": "user", "content": "x"}], "n": 17}, 400, "n"),
        (
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
        ),
        (
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
            400,
            "max_tokens",
        ),
        (
            {
                "model": "alpha",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "regex"},
            },
            400,
            "response_format",
        ),
        ({"model": "alpha", "messages": [{"role": "user", "content": "x" * 5000}]}, 400, "messages"),
        ({"model": "alpha", "messages": [{"role": "user", "content": "x"}], "top_k": 2**63}, 400, "top_k"),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, None),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ],
)
async def test_bad_input_gets_the_documented_4xx_and_the_neuron_keeps_serving(client, body, status, param):
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["message"]
    if param:
        assert error.get("param") == param
    ok = await client.post(
        "/v1/chat/completions", json={"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
    )
    assert ok.status_code == 200


async def test_malformed_json_oversized_body_and_anthropic_dialect_errors(models_root):
    app, _ = make_neuron(models_root, max_body_bytes=2000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        bad = await client.post("/v1/chat/completions", content=b"{not json")
        assert bad.status_code == 400
        assert "JSON" in bad.json()["error"]["message"]
        big = await client.post("/v1/chat/completions", content=b"{" + b" " * 5000 + b"}")
        assert big.status_code == 413
        anthropic_bad = await client.post(
            "/v1/messages", json={"model": "alpha", "max_tokens": 5, "messages": "x"}
        )
        assert anthropic_bad.status_code == 400
        assert anthropic_bad.json()["type"] == "error"
        assert anthropic_bad.json()["error"]["type"] == "invalid_request_error"
        missing = await client.post(
            "/v1/messages",
            json={"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"


async def test_admission_queue_full_is_429_and_queue_timeout_is_503(models_root):
    app, loader = make_neuron(models_root, max_running=1, max_queue=1, queue_timeout_s=0.3, retry_after_s=3)
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        await client.post("/models/load", json={"model": "slow"})
        first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        while not loader.engines["slow"].num_running:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        hosted = app.state.neuron.store.get("slow")
        while not hosted.admission.num_queued:
            await asyncio.sleep(0.005)
        health = (await client.get("/health")).json()
        assert health["in_flight"] == 1
        assert health["queued"] == 1
        full = await client.post("/v1/chat/completions", json=body)
        assert full.status_code == 429
        assert full.headers["retry-after"] == "3"
        timed_out = await queued
        assert timed_out.status_code == 503
        assert timed_out.headers["retry-after"] == "3"
        assert (await first).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'cortex_request_errors_total{model="slow",neuron="n1",type="rate_limited"} 1.0' in metrics


def test_keepalives_during_prefill_and_disconnect_aborts_in_the_engine(models_root):
    from server_fakes import write_fake_model

    write_fake_model(models_root, "prefill", reply="y" * 500, prefill_delay_s=0.5, token_delay_s=0.02)
    app, loader = make_neuron(models_root, keepalive_s=0.1)
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        body = {"model": "prefill", "messages": [{"role": "user", "content": "x"}], "stream": True}
        lines = []
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            for line in reply.iter_lines():
                lines.append(line)
                if line.startswith("data: {") and '"content":"y"' in line:
                    break
        assert ": keep-alive" in lines
        engine = loader.engines["prefill"]
        deadline = time.monotonic() + 5
        while not engine.aborted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.aborted == engine.started
        assert client.get("/health").json()["in_flight"] == 0
        assert (
            client.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 3}).status_code
            == 200
        )


def test_shutdown_drains_in_flight_requests(models_root):
    app, loader = make_neuron(models_root, drain_timeout_s=10)
    server = LiveServer(app, graceful_s=10).start()
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            client.post("/models/load", json={"model": "slow"})
            result: dict[str, httpx.Response] = {}
            worker = threading.Thread(
                target=lambda: result.setdefault(
                    "r",
                    client.post(
                        "/v1/chat/completions",
                        json={"model": "slow", "messages": [{"role": "user", "content": "x"}]},
                    ),
                )
            )
            worker.start()
            while not loader.engines["slow"].num_running:
                time.sleep(0.01)
            server.stop()
            worker.join(20)
    finally:
        server.sock.close()
    assert result["r"].status_code == 200
    assert result["r"].json()["choices"][0]["message"]["content"] == "x" * 200
    assert loader.engines["slow"].closed


async def test_metrics_are_present_and_increase(client):
    def value(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
    await client.post("/v1/chat/completions", json=body)
    before = (await client.get("/metrics")).text
    await client.post("/v1/chat/completions", json=body)
    after = (await client.get("/metrics")).text
    for name in (
        "cortex_requests_total",
        "cortex_completion_tokens_total",
        "cortex_prompt_tokens_total",
        "cortex_request_duration_seconds_count",
        "cortex_time_to_first_token_seconds_count",
    ):
        assert value(after, name) > value(before, name), name
    for name in (
        "cortex_model_loads_total",
        "cortex_queue_depth",
        "cortex_in_flight_requests",
        "cortex_device_memory_used_bytes",
        "cortex_tokens_per_second_bucket",
        "cortex_kv_cache_usage",
    ):
        assert name in after, name
    assert 'model="alpha",neuron="n1"' in after


async def test_catalogue_entries_name_folders_outside_the_model_dirs(models_root, tmp_path):
    from server_fakes import write_fake_model

    elsewhere = write_fake_model(tmp_path / "elsewhere", "Some-Model", reply="listed")
    app, _ = make_neuron(models_root, catalogue=[{"id": "listed", "path": str(elsewhere)}], auto_load=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        ids = {m["id"] for m in (await client.get("/discovery")).json()["models"]}
        assert "listed" in ids
        assert "Some-Model" not in ids
        body = {"model": "listed", "messages": [{"role": "user", "content": "x"}]}
        not_loaded = await client.post("/v1/chat/completions", json=body)
        assert not_loaded.status_code == 404  # auto_load off: the fleet loads explicitly
        assert not_loaded.json()["error"]["code"] == "model_not_found"
        assert (await client.post("/models/load", json={"model": "listed"})).status_code == 200
        reply = await client.post("/v1/chat/completions", json=body)
        assert reply.json()["choices"][0]["message"]["content"] == "listed"
