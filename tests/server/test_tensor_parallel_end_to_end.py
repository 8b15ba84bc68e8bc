"""A neuron serving a model at tensor_parallel=2 (two gloo rank processes on the CPU) through the
gateway, driven by the official SDKs: the same greedy text as the same checkpoint at tensor_parallel=1
on the same neuron, in both dialects; /health shows the devices it spans; a rank killed mid-stream
ends that stream with an error event in bounded time, the model is reported failed while the other
keeps serving, and the next request loads it again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from server_live import LiveServer

from cortex.engine.engine import Engine
from cortex.server.config import NeuronConfig, config_from_dict
from cortex.server.gateway import create_app as create_gateway
from cortex.server.neuron import create_app as create_neuron
from cortex.server.neuron_state import NeuronState

pytestmark = pytest.mark.slow
DETECTED_WITHIN_S = 30.0  # a killed rank is noticed when its process ends; slack for a loaded 2-core CI
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[dict]:
    from cortex.engine.checkpoint import make_model
    from cortex.engine.text.qwen import write_qwen_tokenizer_files

    root = tmp_path_factory.mktemp("models")
    make_model(root / "qwen", arch="qwen3_5", preset="tiny", vocab_size=248320, progress=lambda _: None)
    write_qwen_tokenizer_files(root / "qwen")
    neuron_config = NeuronConfig(
        model_dirs=(root,),
        # the folder splits over 2 ranks ([neuron] tensor_parallel); the same weights on one device
        catalogue=({"id": "qwen-one", "path": root / "qwen", "tensor_parallel": 1},),
        tensor_parallel=2,
        device="cpu",
        dtype="float32",
        max_model_len=512,
        cache_memory_bytes=32 * 2**20,
        memory_budget_bytes=8 * 10**9,
        max_running=2,
        keepalive_s=0.5,
    )
    neuron_app = create_neuron(neuron_config)
    neuron = LiveServer(neuron_app).start()
    config = config_from_dict(
        {
            "gateway": {"keepalive_s": 0.5},
            "responses": {"path": str(tmp_path_factory.mktemp("state") / "responses.sqlite3")},
            "fleet": {"poll_interval_s": 0.5},
            "neurons": [{"name": "n1", "url": neuron.url}],
        },
        environ={},
    )
    gateway = LiveServer(create_gateway(config)).start()
    clients = {
        "openai": openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0),
        "anthropic": anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0),
    }
    try:
        yield {"neuron": neuron, "state": neuron_app.state.neuron, **clients}
    finally:
        for client in clients.values():
            client.close()
        gateway.stop()
        neuron.stop()


def _chat(sdk: openai.OpenAI, model: str, content: str, max_tokens: int = 8) -> str:
    reply = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens, **GREEDY
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == max_tokens
    return reply.choices[0].message.content or ""


def _health_models(system: dict) -> dict[str, dict]:
    health = httpx.get(f"{system['neuron'].url}/health", timeout=10).json()
    return {model["id"]: model for model in health["models"]}


def _rank_pids(state: NeuronState, model_id: str) -> list[int]:
    hosted = state.store.get(model_id)
    assert hosted is not None
    assert isinstance(hosted.engine, Engine)
    assert hosted.engine._parallel is not None
    return hosted.engine._parallel.pids


def _kill_after_first_text(stream: openai.Stream, pid: int) -> float:
    """Read ``stream``, killing ``pid`` at its first chunk (generation has begun: the answer is 200);
    when it was killed, once the stream has ended with an error (an error event: the SDK's APIError)."""
    killed_at = None
    try:
        for chunk in stream:
            if killed_at is None and chunk.choices:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
    except openai.APIError:
        assert killed_at is not None
        return killed_at
    raise AssertionError("the stream ended without an error")


def test_a_tensor_parallel_model_answers_both_sdks_as_one_device_does(system):
    sdk, claude = system["openai"], system["anthropic"]
    assert _chat(sdk, "qwen", "hi") == _chat(sdk, "qwen-one", "hi")
    streamed = sdk.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True, **GREEDY
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == _chat(sdk, "qwen", "hi")
    # this SDK's stream() takes no temperature argument: the body's field, as the wire has it
    message = {"max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]}
    message["extra_body"] = {"temperature": 0}
    with claude.messages.stream(model="qwen", **message) as stream:
        split = stream.get_final_message()
    whole = claude.messages.create(model="qwen-one", **message)
    assert split.content  # thinking and/or text: whatever the random weights say
    assert [block.model_dump() for block in split.content] == [block.model_dump() for block in whole.content]
    assert 0 < split.usage.output_tokens <= 8
    models = _health_models(system)
    assert (models["qwen"]["tensor_parallel"], models["qwen"]["devices"]) == (2, ["cpu", "cpu"])
    assert (models["qwen-one"]["tensor_parallel"], models["qwen-one"]["devices"]) == (1, ["cpu"])


def test_a_rank_killed_mid_stream_fails_that_model_alone_and_it_loads_again(system):
    sdk = system["openai"]
    expected = _chat(sdk, "qwen", "count")
    pids = _rank_pids(system["state"], "qwen")
    stream = sdk.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "go"}], max_tokens=400, stream=True, **GREEDY
    )
    killed_at = _kill_after_first_text(stream, pids[1])
    assert time.monotonic() - killed_at < DETECTED_WITHIN_S
    models = _health_models(system)
    assert models["qwen"]["status"] == "failed"
    assert "rank 1" in models["qwen"]["error"]
    assert models["qwen-one"]["status"] == "loaded"
    assert _chat(sdk, "qwen-one", "count") == expected  # the neuron keeps serving its other model
    assert _chat(sdk, "qwen", "count") == expected  # auto_load: the request loads it again
    assert _health_models(system)["qwen"]["status"] == "loaded"
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
