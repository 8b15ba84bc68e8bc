"""The neuron's OpenAI Responses dialect over the scripted engine, judged by the openai SDK: whole and
streamed responses, tools and tool outputs, reasoning, the stateless refusals, a failure mid-stream;
and n > 1 and stop_reason on the Chat Completions and Completions routes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter
from server_fakes import make_neuron, write_fake_model

from cortex.translate.responses_items import decode_reasoning

EVENTS = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
async def sdk(models_root):
    write_fake_model(models_root, "flaky", reply="hello world", fail_after=3)
    app, _ = make_neuron(models_root)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://neuron") as client:
        yield openai.AsyncOpenAI(base_url="http://neuron/v1", api_key="k", http_client=client, max_retries=0)


async def test_a_whole_response_and_a_streamed_one(sdk):
    response = await sdk.responses.create(model="alpha", input="hi", instructions="be brief", store=True)
    assert response.output_text == "hello world"
    assert response.status == "completed"
    assert response.store is False  # the neuron keeps nothing; the gateway's store says what it kept
    assert response.instructions == "be brief"
    assert response.usage.output_tokens == 11
    assert response.id.startswith("resp_")

    async with sdk.responses.stream(model="alpha", input=[{"role": "user", "content": "hi"}]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert final.output_text == "hello world"
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 11


async def test_max_output_tokens_makes_the_response_incomplete(sdk):
    response = await sdk.responses.create(model="alpha", input="hi", max_output_tokens=5)
    assert (response.status, response.incomplete_details.reason, response.output_text) == (
        "incomplete",
        "max_output_tokens",
        "hello",
    )
    events = [
        e
        async for e in await sdk.responses.create(model="alpha", input="hi", max_output_tokens=5, stream=True)
    ]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 5


async def test_function_calls_and_their_outputs(sdk):
    response = await sdk.responses.create(model="tooler", input="weather?", tools=[WEATHER])
    (call,) = response.output
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "get_weather",
        {"city": "Paris"},
    )
    async with sdk.responses.stream(model="tooler", input="weather?", tools=[WEATHER]) as stream:
        final = await stream.get_final_response()
    assert final.output[0].arguments == '{"city": "Paris"}'

    follow_up = await sdk.responses.create(
        model="alpha",
        input=[
            {"role": "user", "content": "weather?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert follow_up.output_text == "hello world"


async def test_reasoning_comes_as_a_reasoning_item_with_the_carrier_when_asked(sdk):
    response = await sdk.responses.create(model="thinker", input="q", include=["reasoning.encrypted_content"])
    reasoning, message = response.output
    assert reasoning.content[0].text == "let me think"
    assert decode_reasoning(reasoning.encrypted_content) == "let me think"
    assert message.content[0].text == "42"
    assert response.usage.output_tokens_details.reasoning_tokens == len("let me think")
    raw = [e async for e in await sdk.responses.create(model="thinker", input="q", stream=True)]
    assert "response.reasoning_text.delta" in [e.type for e in raw]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "custom", "name": "x"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"input": [], "instructions": None}, "input"),
    ],
)
async def test_what_the_neuron_cannot_serve_is_an_openai_400(sdk, body, param):
    with pytest.raises(openai.BadRequestError) as error:
        await sdk.responses.create(**{"model": "alpha", "input": "hi", **body})
    assert error.value.status_code == 400
    assert error.value.body["param"] == param


async def test_a_failure_mid_stream_ends_with_response_failed(sdk):
    events = [e async for e in await sdk.responses.create(model="flaky", input="hi", stream=True)]
    for event in events:
        EVENTS.validate_python(event.model_dump())
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "server_error"
    assert events[-1].response.output[0].content[0].text == "hel"


async def test_n_choices_and_stop_reasons_on_chat_and_completions(sdk):
    reply = await sdk.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "hi"}], n=3, stop=[" wor"], seed=7
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {"hello"}
    assert {c.model_extra["stop_reason"] for c in reply.choices} == {" wor"}
    assert reply.usage.completion_tokens == 15  # every choice counted, the prompt once
    chunks = [
        c
        async for c in await sdk.chat.completions.create(
            model="alpha",
            messages=[{"role": "user", "content": "hi"}],
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: "hello world", 1: "hello world"}
    assert chunks[-1].usage.completion_tokens == 22
    completion = await sdk.completions.create(model="alpha", prompt="hi", n=2, max_tokens=4)
    assert [c.text for c in completion.choices] == ["hell", "hell"]
    assert completion.usage.completion_tokens == 8
    streamed = [c async for c in await sdk.completions.create(model="alpha", prompt="hi", n=2, stream=True)]
    assert {c.choices[0].index for c in streamed if c.choices} == {0, 1}
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 16"):
        await sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}], n=17)
