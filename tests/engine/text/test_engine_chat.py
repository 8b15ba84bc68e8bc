"""End to end: a tiny random qwen3_5 checkpoint shipping the real tokenizer serves Engine.chat on CPU."""

from __future__ import annotations

import pytest

from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.chat import render_chat_prompt
from cortex.engine.text.qwen import write_qwen_tokenizer_files

engine_module = pytest.importorskip("cortex.engine.engine")
checkpoint = pytest.importorskip("cortex.engine.checkpoint")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_qwen3_5")
    checkpoint.make_model(folder, arch="qwen3_5", preset="tiny", vocab_size=248320)
    write_qwen_tokenizer_files(folder)
    with engine_module.Engine.from_pretrained(folder) as engine:
        yield engine


async def test_chat_and_chat_stream_agree(engine):
    params = SamplingParams(max_tokens=8, temperature=0.0)
    reply = engine.chat(MESSAGES, params, enable_thinking=False)
    assert engine.tokenizer.eos_token_ids == (248046, 248044)
    assert reply.usage.prompt_tokens == len(
        render_chat_prompt(engine.tokenizer, MESSAGES, enable_thinking=False)
    )
    assert reply.finish_reason in ("stop", "length")
    assert reply.reasoning is None
    assert reply.usage.completion_tokens <= 8
    deltas = [delta async for delta in engine.chat_stream(MESSAGES, params, enable_thinking=False)]
    assert "".join(d.content for d in deltas) == reply.text
    assert deltas[-1].finish_reason == reply.finish_reason
    assert deltas[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_thinking_on_output_starts_as_reasoning(engine):
    reply = engine.chat(MESSAGES, SamplingParams(max_tokens=6, temperature=0.0))
    assert reply.reasoning is not None  # the prompt pre-opened <think>
    assert 0 < reply.usage.reasoning_tokens <= reply.usage.completion_tokens
