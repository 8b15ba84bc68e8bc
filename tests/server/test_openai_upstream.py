"""An ``openai``-kind neuron: a real OpenAI-compatible server cortex did not write (``transformers serve``)
on loopback over a tiny random Qwen3 checkpoint with the real Qwen tokenizer, behind the gateway, driven
by both official SDKs. Anthropic and Responses callers reach it through cortex.translate (the
Responses conversation kept by the gateway); the gateway counts tokens with the profile's tokenizer."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from server_live import LiveServer

from cortex.server.config import config_from_dict
from cortex.server.gateway import create_app

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("fastapi", "accelerate")),
    reason="transformers serve needs fastapi and accelerate (the test extra)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """``transformers serve`` on a free loopback port, offline, over a tiny checkpoint."""
    from cortex.engine.checkpoint import make_model
    from cortex.engine.text.qwen import write_qwen_tokenizer_files

    folder = tmp_path_factory.mktemp("upstream") / "tiny-qwen3"
    make_model(folder, arch="qwen3", preset="tiny", vocab_size=248320)
    write_qwen_tokenizer_files(folder)
    port = _free_port()
    executable = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        [executable, "serve", str(folder), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("transformers serve did not start")
            time.sleep(0.5)
        yield url, folder
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory) -> Iterator[str]:
    url, folder = upstream
    models_toml = tmp_path_factory.mktemp("config") / "models.toml"
    models_toml.write_text(
        f'[[models]]\nid = "tiny"\nneuron_model = "{folder}"\ntokenizer = "{folder}"\n'
        'max_model_len = 64\naliases = ["claude-*"]\n'
    )
    config = config_from_dict(
        {
            "gateway": {"models_file": str(models_toml)},
            "responses": {"path": str(tmp_path_factory.mktemp("state") / "responses.sqlite3")},
            "fleet": {"poll_interval_s": 0.5},
            "neurons": [{"name": "hf", "url": url, "kind": "openai"}],
        },
        environ={},
    )
    server = LiveServer(create_app(config)).start()
    try:
        deadline = time.monotonic() + 30
        while "tiny" not in httpx.get(f"{server.url}/v1/models").text:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield server.url
    finally:
        server.stop()


def test_openai_callers_are_relayed_to_the_server(gateway):
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as sdk:
        assert "tiny" in {m.id for m in sdk.models.list()}
        reply = sdk.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage.completion_tokens == 4
        chunks = list(
            sdk.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage.completion_tokens == 4
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "length"
        ]


def test_anthropic_callers_reach_it_through_translate_with_counted_tokens(gateway, upstream):
    from cortex import translate
    from cortex.engine.text.chat import render_chat_prompt
    from cortex.engine.text.tokenizer import Tokenizer

    request = {"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    as_openai = translate.anthropic_to_openai_request({**request, "max_tokens": 1})
    expected = len(render_chat_prompt(Tokenizer.from_folder(upstream[1]), as_openai["messages"]))
    with anthropic.Anthropic(base_url=gateway, api_key="k", max_retries=0) as sdk:
        assert sdk.messages.count_tokens(**request).input_tokens == expected
        message = sdk.messages.create(max_tokens=8, **request)
        assert message.model == "claude-opus-5-5"
        assert message.usage.input_tokens == expected
        assert 0 < message.usage.output_tokens <= 8
        with sdk.messages.stream(max_tokens=5, **request) as stream:
            events = list(stream)
            final = stream.get_final_message()
    assert events[0].type == "message_start"
    assert events[0].message.usage.input_tokens == expected
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 5
    # Claude Code asks for 128000: lowered to what fits after the prompt (64 - the prompt), not a 400
    clamped = httpx.post(f"{gateway}/v1/messages", json={**request, "max_tokens": 128000}, timeout=300)
    assert clamped.status_code == 200, clamped.text
    assert 0 < clamped.json()["usage"]["output_tokens"] <= 64 - expected
    bad = httpx.post(f"{gateway}/v1/messages", json={**request, "max_tokens": "many"})
    assert bad.status_code == 400
    assert bad.json()["type"] == "error"


def test_responses_callers_reach_it_through_translate_and_conversations_continue(gateway):
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as sdk:
        first = sdk.responses.create(model="tiny", input="hi", max_output_tokens=4)
        assert (first.status, first.incomplete_details.reason) == ("incomplete", "max_output_tokens")
        assert first.usage.output_tokens == 4
        assert first.model == "tiny"
        with sdk.responses.stream(
            model="tiny", input="and?", max_output_tokens=3, previous_response_id=first.id
        ) as stream:
            events = list(stream)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.incomplete"
    second = events[-1].response
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + 4  # the first turn came along
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as sdk:
        assert sdk.responses.retrieve(second.id).output_text == second.output_text
