"""SSE decoding, and the fleet's explicit load / unload against fake neurons on loopback."""

from __future__ import annotations

from fake_neuron import GB, FakeNeuron

from cortex.fleet import Fleet, FleetPolicy, NeuronSpec
from cortex.fleet.neuron_client import SSEDecoder


def test_sse_decoder_handles_events_comments_multiline_and_done() -> None:
    decoder = SSEDecoder()
    lines = [
        ": keep-alive comment",
        "event: message_start",
        'data: {"type": "message_start"}',
        "",
        "",
        'data: {"a":',
        "data: 1}",
        "",
        "data: [1, 2]",
        "",
        "data: [DONE]",
        "",
    ]
    events = [event for line in lines for event in decoder.feed(line)]
    assert events == [{"type": "message_start"}, {"a": 1}, {"data": [1, 2]}]
    assert decoder.done


async def test_fleet_serves_loads_and_unloads(serve) -> None:
    fakes = {"a": FakeNeuron("a", {"m": GB}), "b": FakeNeuron("b", {"m": GB}, loaded=["m"])}
    specs = [NeuronSpec(name, serve(fake).url) for name, fake in fakes.items()]
    fleet = Fleet(specs, policy=FleetPolicy())
    async with fleet:
        response = await fleet.post("m", "/v1/chat/completions", {"messages": []})
        assert (response.status, response.neuron, response.model) == (200, "b", "m")
        assert response.json["choices"][0]["message"]["content"] == "b:m"
        assert await fleet.load("m", neuron="a") == "a"
        assert fakes["a"].calls("load") == ["m"]
        await fleet.unload("m", "b")
        assert fakes["b"].calls("unload") == ["m"]
        assert fleet.catalogue()[0].loaded_on == ("a",)
        decisions = fleet.status().decisions
        assert [d["action"] for d in decisions] == ["serve", "load", "unload"]
