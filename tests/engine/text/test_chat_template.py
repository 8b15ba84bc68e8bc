"""Rendering equals transformers' apply_chat_template(tokenize=False) byte for byte."""

from __future__ import annotations

import json

import pytest

from cortex.engine.text.chat_template import ChatTemplate
from cortex.engine.text.errors import ChatTemplateError
from cortex.engine.text.tokenizer import Tokenizer
from cortex.errors import InvalidRequestError

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo du jour — returns <b>weather</b> & more",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "units": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "now", "description": "time", "parameters": {"type": "object"}},
    },
]

TOOL_TURNS = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Weather in Paris and Tōkyō?"},
    {
        "role": "assistant",
        "content": "I'll check both.",
        "reasoning_content": "Two cities, two calls.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": {"city": "東京", "days": 3, "opts": {"a": [1, 2.5, None, True]}},
                },
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "22C rain"},
    {"role": "assistant", "content": "<think>\nsummarise\n</think>\n\nParis 18C, Tokyo 22C."},
    {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "tomorrow?"}]},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "now", "arguments": {}}}]},
    {"role": "tool", "content": "2026-11-28"},
]

CONVERSATIONS = {
    "single_user": ([{"role": "user", "content": "Hello!"}], None),
    "system_multi_turn": (
        [
            {"role": "system", "content": "  Be terse.  "},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "reasoning_content": "greet back"},
            {"role": "user", "content": "bye"},
        ],
        None,
    ),
    "tools_no_system": ([{"role": "user", "content": "What time is it?"}], TOOLS),
    "tool_calls_and_results": (TOOL_TURNS, TOOLS),
}


@pytest.fixture(scope="module")
def hf_tokenizer(qwen_folder):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(qwen_folder))


@pytest.fixture(scope="module")
def official(shared_data, qwen):
    template = (shared_data / "qwen3_6_chat_template.jinja").read_text()
    assert template == qwen.chat_template.source  # the shipped asset is the official template
    return qwen


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": False}, {"enable_thinking": True}])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_qwen3_6_template_matches_transformers(official, hf_tokenizer, name, kwargs, add_generation_prompt):
    messages, tools = CONVERSATIONS[name]
    ours = official.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, **kwargs
    )
    theirs = hf_tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs
    )
    assert ours == theirs
    assert official.encode(ours) == hf_tokenizer.encode(theirs, add_special_tokens=False)


def test_preserve_thinking_kwarg(official, hf_tokenizer):
    ours = official.apply_chat_template(TOOL_TURNS, tools=TOOLS, preserve_thinking=True)
    theirs = hf_tokenizer.apply_chat_template(
        TOOL_TURNS, tools=TOOLS, add_generation_prompt=True, tokenize=False, preserve_thinking=True
    )
    assert ours == theirs
    assert "<think>\nTwo cities, two calls.\n</think>" in ours


def test_thinking_on_prompt_ends_inside_think(official):
    prompt = official.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    off = official.apply_chat_template([{"role": "user", "content": "hi"}], enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "No messages provided."),
        ([{"role": "assistant", "content": "x"}], "No user query found in messages."),
        ([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}], "Unexpected message role."),
        ([{"role": "user", "content": 5}], "Unexpected content type."),
    ],
)
def test_template_errors_become_typed_errors(official, messages, message):
    with pytest.raises(ChatTemplateError) as info:
        official.apply_chat_template(messages)
    assert info.value.message == message
    assert isinstance(info.value, InvalidRequestError)


def test_mid_conversation_system_is_merged_into_the_leading_one(official):
    messages = [
        {"role": "system", "content": "First."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Second."},
        {"role": "developer", "content": [{"type": "text", "text": "Third."}]},
        {"role": "user", "content": "again"},
    ]
    merged = [
        {"role": "system", "content": "First.\n\nSecond.\n\nThird."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},
    ]
    assert official.apply_chat_template(messages) == official.apply_chat_template(merged)
    no_leading = [{"role": "user", "content": "hi"}, {"role": "system", "content": "Late."}]
    assert official.apply_chat_template(no_leading).startswith("<|im_start|>system\nLate.<|im_end|>\n")


def test_json_string_arguments_are_parsed(official):
    def turn(arguments):
        return [
            {"role": "user", "content": "w?"},
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}],
            },
            {"role": "tool", "content": "ok"},
        ]

    args = {"city": "Paris", "days": 2}
    assert official.apply_chat_template(turn(json.dumps(args)), tools=TOOLS) == official.apply_chat_template(
        turn(args), tools=TOOLS
    )
    with pytest.raises(InvalidRequestError, match="JSON object"):
        official.apply_chat_template(turn("[1, 2]"))
    with pytest.raises(InvalidRequestError, match="JSON object"):
        official.apply_chat_template(turn("{not json"))


def test_jinja_features_match_transformers():
    chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    source = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% if m.role == 'skip' %}{% continue %}{% endif %}{{ m | tojson(indent=2, sort_keys=True) }}\n"
        "{% endfor %}{% set ns = namespace(n=0) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}"
        "{{ dict(a=1) | tojson(separators=(',', ':')) }}{{ '<&>' | tojson }}{{ x }}"
        "{{ strftime_now('%Y') | length }}{{ bos_token is defined }}"
    )
    messages = [
        {"role": "user", "content": "é<"},
        {"role": "skip", "content": None},
        {"role": "b", "content": "z"},
    ]
    ours = ChatTemplate(source).render(messages, add_generation_prompt=False, x=[1, 2])
    theirs, _ = chat_template_utils.render_jinja_template(
        conversations=[[{k: v for k, v in m.items() if v is not None} for m in messages]],
        chat_template=source,
        x=[1, 2],
    )
    assert ours == theirs[0]


def test_sandbox_blocks_unsafe_access():
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render([])
    with pytest.raises(ChatTemplateError, match="underscore"):
        ChatTemplate("{% set ns = namespace(_x=1) %}").render([])
    with pytest.raises(ChatTemplateError, match="boom"):
        ChatTemplate("{{ raise_exception('boom') }}").render([])


def test_reasoning_aliases_feed_reasoning_content():
    template = ChatTemplate("{{ messages[0].reasoning_content }}|{{ messages[0].thinking }}")
    assert template.render([{"role": "assistant", "reasoning": "r"}]) == "r|r"


def test_chatml_fallback_renders_tools_and_calls(qwen_folder, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((qwen_folder / "tokenizer.json").read_bytes())
    tokenizer = Tokenizer.from_folder(folder)
    assert tokenizer is not None
    prompt = tokenizer.apply_chat_template(TOOL_TURNS, tools=TOOLS)
    assert prompt.startswith("<|im_start|>system\nYou are helpful.\n\n# Tools")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert (
        "<|im_start|>user\n<tool_response>\n18C sunny\n</tool_response>\n<tool_response>\n22C rain" in prompt
    )
    assert prompt.endswith("<|im_start|>assistant\n")
