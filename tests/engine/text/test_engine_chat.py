"""End to end: a tiny random qwen3_5 checkpoint shipping the real tokenizer serves Engine.chat on CPU."""

from __future__ import annotations

import pytest
from conversations import LOOP_START, TOOLS, agent_session, common_prefix

from cortex.engine.engine_config import EngineConfig
from cortex.engine.models import load_model
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.chat import render_chat, render_chat_prompt, start_chat
from cortex.engine.text.qwen import write_qwen_tokenizer_files
from cortex.engine.text.reasoning import parse_reasoning, prompt_opens_reasoning
from cortex.errors import ContextLengthError

engine_module = pytest.importorskip("cortex.engine.engine")
checkpoint = pytest.importorskip("cortex.engine.checkpoint")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_qwen3_5")
    checkpoint.make_model(folder, arch="qwen3_5", preset="tiny", vocab_size=248320)
    write_qwen_tokenizer_files(folder)
    return folder


@pytest.fixture(scope="module")
def engine(folder):
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


async def test_a_rendered_turn_starts_once_and_a_prompt_past_the_context_names_messages(engine):
    prompt = render_chat(engine.tokenizer, MESSAGES, enable_thinking=False)
    turn = await start_chat(engine, prompt, SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True))
    assert turn.num_prompt_tokens == len(prompt.token_ids)
    await turn.aclose()  # never read: the request still ends in the engine
    assert engine.stats().num_running + engine.stats().num_waiting == 0
    too_long = [{"role": "user", "content": "hi " * engine.max_model_len}]
    with pytest.raises(ContextLengthError) as info:
        await start_chat(engine, render_chat(engine.tokenizer, too_long), SamplingParams(max_tokens=4))
    assert info.value.param == "messages"
    with pytest.raises(ContextLengthError) as info:
        await start_chat(engine, prompt, SamplingParams(max_tokens=engine.max_model_len))
    assert info.value.param == "max_tokens"


def test_thinking_on_output_starts_as_reasoning(engine):
    reply = engine.chat(MESSAGES, SamplingParams(max_tokens=6, temperature=0.0))
    assert reply.reasoning is not None  # the prompt pre-opened <think>
    assert 0 < reply.usage.reasoning_tokens <= reply.usage.completion_tokens


def test_an_agent_session_hits_the_prefix_cache_and_answers_as_without_it(folder, engine):
    """The Qwen3.6 template over a session with tool calls: each call after the first resumes at a
    snapshot at or before where its prompt diverges from an earlier call's, and the replies are the
    cache-off engine's."""
    params = SamplingParams(max_tokens=6, temperature=0.0)
    calls = agent_session()
    model, model_config = load_model(folder, dtype="float32", device="cpu")  # one load serves both engines
    tokenizer = engine.tokenizer
    replies = {}
    for caching in (True, False):
        config = EngineConfig(enable_prefix_caching=caching, max_model_len=1024, cache_memory_bytes=64 << 20)
        with engine_module.Engine(model, model_config, config, tokenizer=tokenizer) as fresh:
            replies[caching] = [fresh.chat(messages, params, tools=TOOLS) for messages in calls]
    rendered = [render_chat(tokenizer, messages, TOOLS) for messages in calls]
    assert [(r.reasoning, r.text, r.tool_calls) for r in replies[True]] == [
        (r.reasoning, r.text, r.tool_calls) for r in replies[False]
    ]
    assert all(r.usage.cached_tokens == 0 for r in replies[False])
    cached = [r.usage.cached_tokens for r in replies[True]]
    assert cached[0] == 0
    for i in range(1, len(calls)):
        anchor = i - 1 if LOOP_START[i] == LOOP_START[i - 1] else LOOP_START[i - 1]
        boundary = rendered[anchor].turn_boundary
        assert boundary is not None
        shared = common_prefix(rendered[anchor].token_ids, rendered[i].token_ids)
        assert boundary // 16 * 16 <= cached[i] <= shared
        assert replies[True][i].usage.prompt_tokens == len(rendered[i].token_ids)


@pytest.mark.parametrize("template", ["qwen3_6", "chatml"])
def test_a_conversation_fed_its_own_replies_resumes_where_the_template_diverges(
    template, folder, engine, chatml
):
    """Each turn sends the engine's own last reply back, rendered by the real template, and resumes at
    the furthest snapshot an earlier turn left on its path: the turn boundary, the prompt's last block
    boundary, or the end of a generation (usable where the template repeats the reply as generated: a
    random model's tokens often do not survive detokenizing, see test_engine_prefix_cache.py for a
    ChatML conversation whose replies always do). Qwen3.6 drops the answered turn's reasoning once a new
    user query follows, so there the next turn diverges inside the last prompt. Replies are the
    cache-off engine's."""
    tokenizer = engine.tokenizer if template == "qwen3_6" else chatml
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    model, model_config = load_model(folder, dtype="float32", device="cpu")
    outputs = {}
    for caching in (True, False):
        config = EngineConfig(enable_prefix_caching=caching, max_model_len=512, cache_memory_bytes=64 << 20)
        with engine_module.Engine(model, model_config, config, tokenizer=tokenizer) as fresh:
            messages = [{"role": "system", "content": "Be brief. " * 12}]
            runs = []
            for question in ("Say hi.", "Again.", "Once more."):
                messages.append({"role": "user", "content": question})
                rendered = render_chat(tokenizer, messages)
                (out,) = fresh.generate(
                    [rendered.token_ids], params, turn_boundaries=[rendered.turn_boundary]
                )
                runs.append((rendered, out))
                opens = prompt_opens_reasoning(rendered.text)
                reasoning, content = parse_reasoning(out.text, starts_in_reasoning=opens)
                messages.append({"role": "assistant", "content": content, "reasoning_content": reasoning})
            outputs[caching] = runs
    assert [out.token_ids for _, out in outputs[True]] == [out.token_ids for _, out in outputs[False]]
    runs = outputs[True]
    assert runs[0][1].num_cached_tokens == 0
    for i in range(1, len(runs)):
        after, again = runs[i]
        best = 0
        for before, out in runs[:i]:
            assert before.turn_boundary is not None
            computed = len(before.token_ids) + len(out.token_ids) - 1  # the last token is sampled only
            snapshots = {before.turn_boundary, len(before.token_ids) - 1, computed}
            reach = min(
                common_prefix([*before.token_ids, *out.token_ids], after.token_ids), len(after.token_ids) - 1
            )
            best = max(best, *(p // 16 * 16 for p in snapshots if p // 16 * 16 <= reach))
        assert again.num_cached_tokens == best
        if template == "qwen3_6":
            assert common_prefix(runs[i - 1][0].token_ids, after.token_ids) < len(runs[i - 1][0].token_ids)
