"""The neuron's side of tensor parallelism over the scripted engine: a model split over devices by the
config, a catalogue entry or the load call; /discovery, /models and /health report the devices each
model spans and what it reserves on each; bad splits get a 400 naming the problem, too few devices a
507; a model whose ranks failed is reported failed, freed, and loads again."""

from __future__ import annotations

import re

import httpx
import pytest
from server_fakes import make_neuron, write_fake_model

from cortex.engine.errors import RankFailedError

GIB = 2**30


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "models"
    split = {"2": 300, "4": 200}
    write_fake_model(root, "big", reply="big", memory_bytes=500, split_memory_bytes=split)
    write_fake_model(root, "small", reply="small", memory_bytes=100)
    uneven = (
        "fake cannot be split over 3 ranks: num_attention_heads=4 (attention query heads) is not divisible"
    )
    write_fake_model(root, "odd", memory_bytes=100, split_memory_bytes=split, split_errors={"3": uneven})
    return root


def client_of(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://neuron")


async def test_a_cpu_neuron_splits_what_its_config_says_and_reports_it(root):
    app, loader = make_neuron(root, tensor_parallel=2)
    async with client_of(app) as client:
        discovered = {m["id"]: m for m in (await client.get("/discovery")).json()["models"]}
        assert discovered["big"]["tensor_parallel"] == 2
        assert discovered["big"]["memory_per_device_bytes"] == {"1": 500, "2": 300, "4": 200}
        assert discovered["big"]["estimated_memory_bytes"] == 600  # both ranks' shares
        loaded = (await client.post("/models/load", json={"model": "big"})).json()
        assert loaded == {"id": "big", "status": "loaded", "tensor_parallel": 2, "devices": ["cpu", "cpu"]}
        assert loader.plans["big"].devices == ("cpu", "cpu")
        health = (await client.get("/health")).json()
        (model,) = health["models"]
        assert (model["tensor_parallel"], model["devices"], model["memory_per_device_bytes"]) == (
            2,
            ["cpu", "cpu"],
            300,
        )
        assert health["memory_used_bytes"] == 600
        (cpu,) = health["devices"]
        assert (cpu["device"], cpu["memory_reserved_bytes"], cpu["models"]) == ("cpu", 600, ["big"])
        # [neuron] tensor_parallel is a default: a model whose shapes do not split so loads whole
        assert (discovered["small"]["tensor_parallel"], discovered["small"]["estimated_memory_bytes"]) == (
            1,
            100,
        )
        small = await client.post("/models/load", json={"model": "small"})
        assert small.json()["devices"] == ["cpu"]


async def test_a_gpu_neuron_places_each_split_on_the_gpus_with_room(root):
    app, loader = make_neuron(root, gpus=[1000, 1000, 1000, 1000], memory_budget_bytes=4000)
    async with client_of(app) as client:
        big = await client.post("/models/load", json={"model": "big", "tensor_parallel": 2})
        assert big.json()["devices"] == ["cuda:0", "cuda:1"]
        small = await client.post("/models/load", json={"model": "small"})
        assert small.json()["devices"] == ["cuda:2"]  # the most room, then the lowest index
        health = (await client.get("/health")).json()
        reserved = {d["device"]: (d["memory_reserved_bytes"], d["models"]) for d in health["devices"]}
        assert reserved == {
            "cuda:0": (300, ["big"]),
            "cuda:1": (300, ["big"]),
            "cuda:2": (100, ["small"]),
            "cuda:3": (0, []),
        }
        await client.post("/models/unload", json={"model": "small"})
        pinned = await client.post("/models/load", json={"model": "odd", "devices": [3, 1]})
        assert pinned.json() == {
            "id": "odd",
            "status": "loaded",
            "tensor_parallel": 2,
            "devices": ["cuda:1", "cuda:3"],
        }
        assert loader.plans["odd"].devices == ("cuda:1", "cuda:3")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "odd", "tensor_parallel": 3}, 400, r"num_attention_heads=4 \(attention query heads\)"),
        ({"model": "big", "tensor_parallel": 8}, 400, "at most 4 device"),
        ({"model": "big", "devices": [0, 0]}, 400, "distinct GPU indices"),
        ({"model": "big", "devices": [0, 9]}, 400, "distinct GPU indices"),
        ({"model": "big", "tensor_parallel": 0}, 400, "tensor_parallel"),
        ({"model": "big", "devices": ["cuda:0"]}, 400, "devices"),
        ({"model": "big", "tensor_parallel": 4}, 507, r"cuda:0 has 150 left"),
    ],
)
async def test_bad_splits_are_400_and_too_few_devices_507(root, body, status, message):
    app, loader = make_neuron(root, gpus=[250, 1000, 1000, 1000], memory_budget_bytes=4000)
    async with client_of(app) as client:
        assert (await client.post("/models/load", json={"model": "small", "devices": [0]})).status_code == 200
        reply = await client.post("/models/load", json=body)
        assert reply.status_code == status, reply.text
        assert re.search(message, reply.json()["error"]["message"]), reply.json()
        assert loader.load_calls == ["small"]


async def test_catalogue_entries_pin_devices(root):
    app, _ = make_neuron(
        root,
        gpus=[1000] * 4,
        memory_budget_bytes=4000,
        catalogue=[{"id": "pinned", "path": str(root / "big"), "devices": [2, 3]}],
    )
    async with client_of(app) as client:
        discovered = {m["id"]: m for m in (await client.get("/discovery")).json()["models"]}
        assert (discovered["pinned"]["tensor_parallel"], discovered["pinned"]["devices"]) == (2, [2, 3])
        assert (await client.post("/models/load", json={"model": "pinned"})).json()["devices"] == [
            "cuda:2",
            "cuda:3",
        ]


async def test_a_model_whose_ranks_failed_is_reported_freed_and_loads_again(root):
    app, loader = make_neuron(root, tensor_parallel=2)
    async with client_of(app) as client:
        await client.post("/models/load", json={"model": "big"})
        await client.post("/models/load", json={"model": "small"})
        failed_engine = loader.engines["big"]
        failed_engine.failure = RankFailedError("tensor-parallel group of 2 ranks stopped: rank 1 exited")
        health = (await client.get("/health")).json()
        status = {m["id"]: m for m in health["models"]}
        assert status["big"]["status"] == "failed"
        assert "rank 1 exited" in status["big"]["error"]
        assert status["small"]["status"] == "loaded"
        assert health["memory_used_bytes"] == 100  # the failed model's estimate is released
        assert failed_engine.closed
        body = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
        reply = await client.post("/v1/chat/completions", json=body)
        assert reply.json()["choices"][0]["message"]["content"] == "small"  # the others keep serving
        assert (await client.post("/models/load", json={"model": "big"})).status_code == 200
        assert loader.engines["big"] is not failed_engine
        status = {m["id"]: m["status"] for m in (await client.get("/models")).json()["models"]}
        assert status == {"big": "loaded", "small": "loaded"}
