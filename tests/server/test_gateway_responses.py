"""The gateway's Responses API over a scripted neuron on loopback, judged by the official openai SDK:
every route streamed and not, tools and tool outputs, previous_response_id, store: false, and a real
gateway process restarted between turns (the store survives it; a deleted response stays gone)."""

from __future__ import annotations

import sqlite3
import types
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server_fakes import make_neuron
from server_live import LiveServer

from cortex import translate
from cortex.server.affinity import affinity_key
from cortex.server.config import config_from_dict
from cortex.server.gateway import create_app as create_gateway
from processes import gateway_process

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def neuron(models_root) -> Iterator[tuple[LiveServer, object]]:
    app, loader = make_neuron(models_root)
    server = LiveServer(app).start()
    try:
        yield server, loader
    finally:
        server.stop()


@pytest.fixture
def system(neuron, tmp_path) -> Iterator[dict]:
    server, loader = neuron
    store = tmp_path / "state" / "responses.sqlite3"
    config = config_from_dict(
        {
            "gateway": {"keepalive_s": 0.5},
            "fleet": {"poll_interval_s": 0.5},
            "responses": {"path": str(store)},
            "neurons": [{"name": "n1", "url": server.url}],
        },
        environ={},
    )
    app = create_gateway(config)
    gateway = LiveServer(app).start()
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0)
    try:
        yield {"sdk": sdk, "loader": loader, "store": store, "fleet": app.state.fleet}
    finally:
        sdk.close()
        gateway.stop()


def _last_messages(loader, model: str) -> list[dict]:
    return loader.engines[model].last_messages


def _text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def test_create_retrieve_list_and_delete(system):
    sdk = system["sdk"]
    created = sdk.responses.create(model="alpha", input="hi", instructions="be brief", metadata={"k": "v"})
    assert created.output_text == "hello world"
    assert (created.store, created.model, created.previous_response_id) == (True, "alpha", None)
    retrieved = sdk.responses.retrieve(created.id)
    assert retrieved == created
    items = list(sdk.responses.input_items.list(created.id))
    assert [item.content[0].text for item in items] == ["hi"]
    assert items[0].id.startswith("msg_")
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.input_items.list(created.id)


def test_input_items_pages_and_orders(system):
    sdk = system["sdk"]
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    created = sdk.responses.create(model="alpha", input=inputs)
    newest_first = [item.content[0].text for item in sdk.responses.input_items.list(created.id, limit=2)]
    assert newest_first == ["m4", "m3", "m2", "m1", "m0"]  # the SDK follows has_more / after
    page = sdk.responses.input_items.list(created.id, limit=2, order="asc")
    assert ([i.content[0].text for i in page.data], page.has_more) == (["m0", "m1"], True)
    with pytest.raises(openai.BadRequestError):
        sdk.responses.input_items.list(created.id, limit=101)


def test_a_conversation_continues_with_tools_and_streams(system):
    sdk = system["sdk"]
    first = sdk.responses.create(model="tooler", input="weather in Paris?", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call"
    with sdk.responses.stream(
        model="tooler",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    ) as stream:
        kinds = [event.type for event in stream]
        second = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert second.previous_response_id == first.id
    messages = _last_messages(system["loader"], "tooler")
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    assert sdk.responses.retrieve(second.id).output[0].arguments == second.output[0].arguments

    third = sdk.responses.create(model="alpha", previous_response_id=second.id, input="thanks")
    assert [m["role"] for m in _last_messages(system["loader"], "alpha")] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert third.output_text == "hello world"


def test_a_continued_conversation_is_routed_by_its_first_items(system):
    """previous_response_id stands for the stored turns: the fleet's affinity key is the whole
    conversation's (its first message), not the new input's, so every turn goes to one neuron."""
    sdk, fleet = system["sdk"], system["fleet"]
    first = sdk.responses.create(model="alpha", instructions="Be brief.", input="hi")
    sdk.responses.create(model="alpha", instructions="Be brief.", input="more", previous_response_id=first.id)

    def routed_before(text: str) -> bool:
        body = {"instructions": "Be brief.", "input": translate.responses_input_items({"input": text})}
        return "affinity" in fleet.explain("alpha", affinity_key=affinity_key({}, body))["reason"]

    assert routed_before("hi")
    assert not routed_before("more")


def test_store_false_is_never_written_and_unknown_previous_ids_are_400(system):
    sdk = system["sdk"]
    unstored = sdk.responses.create(model="alpha", input="hi", store=False)
    assert unstored.store is False
    events = list(sdk.responses.create(model="alpha", input="hi", store=False, stream=True))
    assert events[-1].type == "response.completed"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)
    with sqlite3.connect(system["store"]) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)
    with pytest.raises(openai.BadRequestError) as error:
        sdk.responses.create(model="alpha", input="hi", previous_response_id="resp_missing")
    assert error.value.body["param"] == "previous_response_id"
    assert error.value.body["code"] == "previous_response_not_found"


def test_the_store_survives_a_gateway_process_restart_and_deleted_stays_gone(neuron, tmp_path):
    server, loader = neuron
    spec = types.SimpleNamespace(name="n1", url=server.url)
    gateway = gateway_process(tmp_path, [spec], state_dir=str(tmp_path / "state")).start()
    try:
        sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0)
        first = sdk.responses.create(model="alpha", input="one")
        second = sdk.responses.create(model="alpha", input="two", previous_response_id=first.id)
        gateway.restart()
        third = sdk.responses.create(model="alpha", input="three", previous_response_id=second.id)
        assert [_text(m) for m in loader.engines["alpha"].last_messages] == [
            "one",
            "hello world",
            "two",
            "hello world",
            "three",
        ]
        assert sdk.responses.retrieve(first.id).output_text == "hello world"
        sdk.responses.delete(second.id)
        gateway.restart()
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(second.id)
        for gone in (second.id, third.id):  # a deleted response is gone from every conversation
            with pytest.raises(openai.BadRequestError, match="not found"):
                sdk.responses.create(model="alpha", input="four", previous_response_id=gone)
        assert sdk.responses.retrieve(third.id).previous_response_id == second.id
        sdk.close()
    finally:
        gateway.stop()
    assert Path(tmp_path / "state" / "responses.sqlite3").is_file()
