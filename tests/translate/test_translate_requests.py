"""Request bodies both ways, each output validated with the other SDK's request types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sdk_checks import anthropic_request, openai_request

from cortex.translate import TranslationError, anthropic_to_openai_request, openai_to_anthropic_request

CLAUDE_CODE_REQUEST = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "claude_code_request.json"
)
PNG = "iVBORw0KGgo="


def a2o(body: dict) -> dict:
    out = anthropic_to_openai_request(body)
    openai_request(out)
    return out


def o2a(body: dict, **kwargs) -> dict:
    out = openai_to_anthropic_request(body, **kwargs)
    anthropic_request(out)
    return out


def anthropic_body(messages: list, **fields) -> dict:
    return {"model": "m", "max_tokens": 100, "messages": messages, **fields}


def openai_body(messages: list, **fields) -> dict:
    return {"model": "m", "messages": messages, **fields}


def test_claude_code_request_translates():
    if not CLAUDE_CODE_REQUEST.exists():
        pytest.skip("shared data not present")
    body = json.loads(CLAUDE_CODE_REQUEST.read_text())
    anthropic_request(body)
    out = a2o(body)
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "system"]
    assert body["system"][0]["text"].startswith("x-anthropic-billing-header:")
    assert [p["text"] for p in out["messages"][0]["content"]] == [b["text"] for b in body["system"][1:]]
    assert out["messages"][2]["content"][0]["text"] == body["messages"][1]["content"][0]["text"]
    shown = [tool for tool in body["tools"] if not tool.get("defer_loading")]
    assert [tool["name"] for tool in shown] != [tool["name"] for tool in body["tools"]]
    for tool, source in zip(out["tools"], shown, strict=True):
        assert tool == {
            "type": "function",
            "function": {
                "name": source["name"],
                "description": source["description"],
                "parameters": source["input_schema"],
            },
        }
    assert out["max_completion_tokens"] == 128000
    assert out["reasoning_effort"] == "medium"
    assert out["chat_template_kwargs"] == {"enable_thinking": True}
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert out["user"] == body["metadata"]["user_id"]
    assert not {"metadata", "context_management", "output_config", "thinking", "system"} & set(out)
    back = o2a(out)
    assert back["system"] == [{"type": "text", "text": b["text"]} for b in body["system"][1:]]
    assert back["messages"][1]["role"] == "system"
    assert back["thinking"] == {"type": "adaptive"}
    assert back["output_config"] == {"effort": "medium"}


def test_system_string_and_text_blocks():
    out = a2o(anthropic_body([{"role": "user", "content": "hi"}], system="be brief"))
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    blocks = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "b"},
    ]
    out = a2o(anthropic_body([{"role": "user", "content": "hi"}], system=blocks))
    assert out["messages"][0]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]


def test_billing_header_is_dropped_from_system():
    header = {"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"}
    out = a2o(anthropic_body([{"role": "user", "content": "hi"}], system=[header]))
    assert out["messages"] == [{"role": "user", "content": "hi"}]


def test_deferred_tools_appear_once_a_tool_search_loads_them():
    tools = [
        {"name": "ToolSearch", "input_schema": {"type": "object"}},
        {"name": "mcp_a", "input_schema": {"type": "object"}, "defer_loading": True},
        {"name": "mcp_b", "input_schema": {"type": "object"}, "defer_loading": True},
    ]
    first = a2o(anthropic_body([{"role": "user", "content": "find a tool"}], tools=tools))
    assert [t["function"]["name"] for t in first["tools"]] == ["ToolSearch"]
    messages = [
        {"role": "user", "content": "find a tool"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "ToolSearch", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "tool_reference", "tool_name": "mcp_b"}],
                },
                {"type": "tool_result", "tool_use_id": "t2", "content": "plain"},
                {"type": "text", "text": "go"},
            ],
        },
    ]
    later = a2o(anthropic_body(messages, tools=tools))
    assert [t["function"]["name"] for t in later["tools"]] == ["ToolSearch", "mcp_b"]
    assert later["messages"][2] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": [{"type": "text", "text": "Tool loaded: mcp_b"}],
    }


def test_openai_system_and_developer_messages():
    out = o2a(
        openai_body(
            [
                {"role": "system", "content": "a"},
                {"role": "developer", "content": [{"type": "text", "text": "b"}]},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "late"},
            ]
        )
    )
    assert out["system"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert out["messages"] == [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]
    assert (
        o2a(openai_body([{"role": "system", "content": "a"}, {"role": "user", "content": "x"}]))["system"]
        == "a"
    )


def test_images_both_directions():
    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "what is this?"},
    ]
    out = a2o(anthropic_body([{"role": "user", "content": blocks}]))
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "text", "text": "what is this?"},
            ],
        }
    ]
    assert o2a(out)["messages"] == [{"role": "user", "content": blocks}]


def test_tool_use_tool_result_and_thinking_history():
    messages = [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "use ls", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Running it."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "ä"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [
                        {"type": "text", "text": "denied"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                },
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    out = a2o(anthropic_body(messages))
    assert out["messages"][1] == {
        "role": "assistant",
        "content": "Running it.",
        "reasoning_content": "use ls",
        "thinking_blocks": [
            {"type": "thinking", "thinking": "use ls", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
        ],
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
            },
            {"id": "toolu_2", "type": "function", "function": {"name": "Read", "arguments": '{"path": "ä"}'}},
        ],
    }
    assert out["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"},
        {
            "role": "tool",
            "tool_call_id": "toolu_2",
            "content": [{"type": "text", "text": "denied"}],
            "is_error": True,
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    back = o2a(out)
    assert back["messages"][1] == messages[1]
    assert back["messages"][2]["content"][0] == messages[2]["content"][0]
    assert back["messages"][2]["content"][1] == {
        "type": "tool_result",
        "tool_use_id": "toolu_2",
        "content": [{"type": "text", "text": "denied"}],
        "is_error": True,
    }


def test_string_contents_stay_strings():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert a2o(anthropic_body(messages))["messages"] == messages


def test_tool_results_only_make_no_empty_user_message():
    messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]
    assert a2o(anthropic_body(messages))["messages"] == [{"role": "tool", "tool_call_id": "t", "content": ""}]
    assert a2o(anthropic_body([{"role": "user", "content": []}]))["messages"] == [
        {"role": "user", "content": []}
    ]


def test_openai_tool_messages_fold_into_one_user_turn():
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "ok", "refusal": "no"},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
    ]
    out = o2a(openai_body(messages))
    assert out["messages"] == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
                {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "two"}]},
                {"type": "text", "text": "thanks"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "no"}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
    ]
    tool_then_user_parts = [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
    ]
    assert o2a(openai_body(tool_then_user_parts))["messages"][0]["content"][1] == {
        "type": "text",
        "text": "b",
    }


def test_openai_assistant_reasoning_becomes_unsigned_thinking():
    for key in ("reasoning_content", "reasoning"):
        out = o2a(
            openai_body([{"role": "assistant", "content": [{"type": "text", "text": "x"}], key: "why"}])
        )
        assert out["messages"][0]["content"] == [
            {"type": "thinking", "thinking": "why", "signature": ""},
            {"type": "text", "text": "x"},
        ]


def test_tools_sampling_stop_and_metadata():
    body = anthropic_body(
        [{"role": "user", "content": "hi"}],
        tools=[
            {"name": "f", "description": "does f", "input_schema": {"type": "object"}, "strict": True},
            {
                "type": "custom",
                "name": "g",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"},
            },
        ],
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        stop_sequences=["END"],
        metadata={"user_id": "u1"},
        service_tier="auto",
    )
    out = a2o(body)
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "does f",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}},
    ]
    assert (out["temperature"], out["top_p"], out["top_k"], out["stop"], out["user"]) == (
        0.5,
        0.9,
        20,
        ["END"],
        "u1",
    )
    assert out["max_completion_tokens"] == 100
    assert out["service_tier"] == "auto"
    assert "stream" not in out
    back = o2a(out)
    assert back["tools"][0] == body["tools"][0]
    assert back["tools"][1] == {"name": "g", "input_schema": {"type": "object"}}
    assert back["stop_sequences"] == ["END"]
    assert back["metadata"] == {"user_id": "u1"}
    assert "tool_choice" not in back


def test_openai_limits_stop_and_tools_defaults():
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = o2a(
        openai_body(
            [{"role": "user", "content": "x"}],
            max_tokens=7,
            stop="S",
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
            seed=3,
            n=1,
            presence_penalty=0,
        )
    )
    assert out["max_tokens"] == 7
    assert out["stop_sequences"] == ["S"]
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert out["stream"] is True
    assert o2a(openai_body([], max_completion_tokens=9, max_tokens=7))["max_tokens"] == 9
    assert o2a(openai_body([]))["max_tokens"] == 4096
    assert o2a(openai_body([]), default_max_tokens=5)["max_tokens"] == 5


@pytest.mark.parametrize(
    ("anthropic_choice", "openai_fields"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            {"tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice_both_ways(anthropic_choice, openai_fields):
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    out = a2o(anthropic_body([{"role": "user", "content": "x"}], tools=tools, tool_choice=anthropic_choice))
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == openai_fields
    assert o2a(out)["tool_choice"] == anthropic_choice


def test_parallel_tool_calls_without_tool_choice():
    assert o2a(openai_body([], parallel_tool_calls=False))["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert o2a(openai_body([], tool_choice="none", parallel_tool_calls=False))["tool_choice"] == {
        "type": "none"
    }


@pytest.mark.parametrize(
    ("thinking", "effort", "expected"),
    [
        (
            {"type": "enabled", "budget_tokens": 1024},
            None,
            {"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": True}},
        ),
        (
            {"type": "enabled", "budget_tokens": 10000},
            None,
            {"reasoning_effort": "medium", "chat_template_kwargs": {"enable_thinking": True}},
        ),
        (
            {"type": "enabled", "budget_tokens": 32000},
            None,
            {"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": True}},
        ),
        (
            {"type": "enabled", "budget_tokens": 32000},
            "low",
            {"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": True}},
        ),
        ({"type": "adaptive"}, None, {"chat_template_kwargs": {"enable_thinking": True}}),
        (
            {"type": "adaptive", "display": "omitted"},
            "max",
            {"reasoning_effort": "max", "chat_template_kwargs": {"enable_thinking": True}},
        ),
        (
            {"type": "disabled"},
            "high",
            {"reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": False}},
        ),
        (None, "xhigh", {"reasoning_effort": "xhigh"}),
        (None, None, {}),
    ],
)
def test_anthropic_thinking_to_openai(thinking, effort, expected):
    fields = {}
    if thinking is not None:
        fields["thinking"] = thinking
    if effort is not None:
        fields["output_config"] = {"effort": effort}
    out = a2o(anthropic_body([{"role": "user", "content": "x"}], **fields))
    assert {k: out[k] for k in ("reasoning_effort", "chat_template_kwargs") if k in out} == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"reasoning_effort": "none"}, {"thinking": {"type": "disabled"}}),
        (
            {"reasoning_effort": "minimal"},
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
        ),
        (
            {"reasoning_effort": "high"},
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
        ),
        ({"chat_template_kwargs": {"enable_thinking": True}}, {"thinking": {"type": "adaptive"}}),
        ({"chat_template_kwargs": {"enable_thinking": False}}, {"thinking": {"type": "disabled"}}),
        ({"chat_template_kwargs": {"other": 1}}, {}),
    ],
)
def test_openai_thinking_to_anthropic(fields, expected):
    out = o2a(openai_body([], **fields))
    assert {k: out[k] for k in ("thinking", "output_config") if k in out} == expected


def test_structured_output_both_ways():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = a2o(anthropic_body([], output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    back = o2a(dict(out, reasoning_effort="low"))
    assert back["output_config"] == {"effort": "low", "format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in o2a(openai_body([], response_format={"type": "text"}))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            anthropic_body([{"role": "user", "content": [{"type": "document", "source": {}}]}]),
            "messages[0].content[0].type",
        ),
        (
            anthropic_body(
                [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "search_result"}],
                            }
                        ],
                    }
                ]
            ),
            "messages[0].content[0].content[0].type",
        ),
        (
            anthropic_body([{"role": "assistant", "content": [{"type": "server_tool_use"}]}]),
            "messages[0].content[0].type",
        ),
        (
            anthropic_body(
                [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "ls"}],
                    }
                ]
            ),
            "messages[0].content[0].input",
        ),
        (anthropic_body([{"role": "robot", "content": "x"}]), "messages[0].role"),
        (anthropic_body([{"role": "system", "content": [{"type": "image"}]}]), "messages[0].content[0].type"),
        (
            anthropic_body(
                [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]
            ),
            "messages[0].content[0].source.type",
        ),
        (anthropic_body([{"role": "user", "content": [{"text": "no type"}]}]), "messages[0].content[0].type"),
        (anthropic_body([{"role": "user", "content": 5}]), "messages[0].content"),
        (anthropic_body([{"role": "user"}]), "messages[0].content"),
        (anthropic_body([5]), "messages[0]"),
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"max_tokens": 1, "messages": []}, "model"),
        (anthropic_body([], tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
        (anthropic_body([], tools=[{"name": "f"}]), "tools[0].input_schema"),
        (anthropic_body([], tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (anthropic_body([], thinking={"type": "between_tools"}), "thinking.type"),
        (anthropic_body([], thinking={"type": "enabled", "budget_tokens": "lots"}), "thinking.budget_tokens"),
        (anthropic_body([], thinking={"type": "enabled"}), "thinking.budget_tokens"),
        (anthropic_body([], output_config={"effort": "extreme"}), "output_config.effort"),
        (anthropic_body([], output_config={"format": {"type": "regex"}}), "output_config.format.type"),
        (anthropic_body([], metadata={"user_id": 7}), "metadata.user_id"),
    ],
)
def test_untranslatable_anthropic_requests_name_the_field(body, param):
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai_request(body)
    assert info.value.param == param
    assert param in str(info.value)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            openai_body([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
            "messages[0].content[0].type",
        ),
        (
            openai_body(
                [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:nonsense"}}]}]
            ),
            "messages[0].content[0].image_url.url",
        ),
        (
            openai_body(
                [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
                        ],
                    }
                ]
            ),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            openai_body(
                [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            ),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            openai_body([{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]),
            "messages[0].tool_calls[0].type",
        ),
        (
            openai_body([{"role": "assistant", "thinking_blocks": [{"type": "thinking"}]}]),
            "messages[0].thinking_blocks[0].thinking",
        ),
        (openai_body([{"role": "function", "name": "f", "content": "x"}]), "messages[0].role"),
        (
            openai_body([{"role": "system", "content": [{"type": "image_url"}]}]),
            "messages[0].content[0].type",
        ),
        (openai_body([{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (openai_body([], n=2), "n"),
        (openai_body([], logprobs=True), "logprobs"),
        (openai_body([], frequency_penalty=0.5), "frequency_penalty"),
        (openai_body([], repetition_penalty=1.1), "repetition_penalty"),
        (openai_body([], min_p=0.1), "min_p"),
        (openai_body([], functions=[{"name": "f"}]), "functions"),
        (openai_body([], tools=[{"type": "custom", "custom": {"name": "f"}}]), "tools[0].type"),
        (openai_body([], tool_choice={"type": "allowed_tools", "allowed_tools": {}}), "tool_choice"),
        (openai_body([], tool_choice={"type": "function", "function": {}}), "tool_choice.function.name"),
        (openai_body([], reasoning_effort="ludicrous"), "reasoning_effort"),
        (openai_body([], response_format={"type": "json_object"}), "response_format.type"),
        (
            openai_body([], response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
            "response_format.json_schema.schema",
        ),
        (openai_body([], stop=5), "stop"),
        (openai_body([], user=5), "user"),
        (openai_body([], chat_template_kwargs="yes"), "chat_template_kwargs"),
        ({"model": "m", "messages": {}}, "messages"),
        ("not a body", "body"),
    ],
)
def test_untranslatable_openai_requests_name_the_field(body, param):
    with pytest.raises(TranslationError) as info:
        openai_to_anthropic_request(body)
    assert info.value.param == param


def test_user_ids_and_service_tiers_cross_where_both_dialects_name_them():
    to_anthropic = openai_to_anthropic_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "safety_identifier": "s1",
            "service_tier": "default",
        }
    )
    assert (to_anthropic["metadata"], to_anthropic["service_tier"]) == ({"user_id": "s1"}, "standard_only")
    flex = openai_to_anthropic_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "service_tier": "flex"}
    )
    assert "service_tier" not in flex  # no Anthropic tier means it: a hint, dropped
    back = anthropic_to_openai_request({**to_anthropic, "max_tokens": 5})
    assert (back["user"], back["service_tier"]) == ("s1", "default")
    with pytest.raises(TranslationError) as error:
        openai_to_anthropic_request(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "web_search_options": {}}
        )
    assert error.value.param == "web_search_options"
