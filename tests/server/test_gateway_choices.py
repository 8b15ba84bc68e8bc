"""n > 1 and stop sequences through the gateway, streamed and not, judged by both official SDKs (the
scripted neuron ends its reply before a stop string, as the engine does, and reports it)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from server_fakes import make_neuron
from server_live import LiveServer

from cortex.server.config import config_from_dict
from cortex.server.gateway import create_app as create_gateway


@pytest.fixture
def gateway(models_root, tmp_path) -> Iterator[str]:
    neuron = LiveServer(make_neuron(models_root)[0]).start()
    config = config_from_dict(
        {
            "gateway": {"keepalive_s": 0.5},
            "responses": {"path": str(tmp_path / "responses.sqlite3")},
            "neurons": [{"name": "n1", "url": neuron.url}],
        },
        environ={},
    )
    server = LiveServer(create_gateway(config)).start()
    try:
        yield server.url
    finally:
        server.stop()
        neuron.stop()


def test_n_choices_and_stop_strings_reach_openai_callers(gateway):
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0) as sdk:
        reply = sdk.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": "hi"}], n=2, stop=["wor"]
        )
        assert [(c.index, c.message.content, c.finish_reason) for c in reply.choices] == [
            (0, "hello ", "stop"),
            (1, "hello ", "stop"),
        ]
        assert [c.model_extra["stop_reason"] for c in reply.choices] == ["wor", "wor"]
        with sdk.chat.completions.stream(
            model="alpha",
            messages=[{"role": "user", "content": "hi"}],
            n=3,
            stop="lo",
            stream_options={"include_usage": True},
        ) as stream:
            final = stream.get_final_completion()
        assert [c.message.content for c in final.choices] == ["hel", "hel", "hel"]
        assert final.usage.completion_tokens == 9


def test_a_matched_stop_sequence_reaches_anthropic_callers(gateway):
    with anthropic.Anthropic(base_url=gateway, api_key="k", max_retries=0) as sdk:
        request = {
            "model": "alpha",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
            "stop_sequences": ["wor"],
        }
        message = sdk.messages.create(**request)
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "wor")
        assert message.content[0].text == "hello "
        with sdk.messages.stream(**request) as stream:
            streamed = stream.get_final_message()
        assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "wor")
        unmatched = sdk.messages.create(**{**request, "stop_sequences": ["zzz"]})
        assert (unmatched.stop_reason, unmatched.stop_sequence) == ("end_turn", None)
