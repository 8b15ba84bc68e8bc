"""The typed request body of every route that takes one: what the edge checks before anything reads it.

Each model says which fields exist, their JSON types and the ranges a value must be in for the rest of
the server and the engine to be able to hold it (integers within int64, numbers finite: strict JSON
already refused the rest). The semantic checks (temperature within [0, 100], a field cortex cannot
serve, a tool_choice naming no tool) stay where the meaning is known (``SamplingParams``, the dialect
parsers), so each rule lives once. Unknown fields are allowed: they are hints, accepted and ignored
(docs/servers.md). Pydantic's strict mode: ``"7"`` is not a number and ``true`` is not an integer, as
in JSON. The models are also the routes' request bodies in the OpenAPI schemas
(``/schema/openapi.json``), which the reliability suite generates requests from.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]  # lengths, ids, indices
JsonObject = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Part(_Body):
    """A content part or block: its ``type`` and whatever that type carries."""

    type: str
    text: str | None = None


# ---- OpenAI ---------------------------------------------------------------------------------------


class OpenAIFunction(_Body):
    name: str
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class OpenAITool(_Body):
    type: str = "function"
    function: OpenAIFunction


class OpenAIFunctionName(_Body):
    name: str


class OpenAIToolChoice(_Body):
    type: str
    function: OpenAIFunctionName | None = None


class OpenAIToolCallFunction(_Body):
    name: str | None = None
    arguments: str | None = None


class OpenAIToolCall(_Body):
    id: str | None = None
    type: str | None = None
    function: OpenAIToolCallFunction


class ChatMessage(_Body):
    role: str
    content: str | list[_Part] | None = None
    name: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class JsonSchemaFormat(_Body):
    name: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: str
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Body):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _Sampling(_Body):
    """The sampling and length fields both OpenAI routes share (cortex's extensions included)."""

    model: str
    max_tokens: Count | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Int64 | None = None
    min_p: float | None = None
    seed: Int64 | None = None
    n: Int64 | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Count] | None = None
    ignore_eos: bool | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None


class ChatCompletionBody(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    max_completion_tokens: Count | None = None
    logprobs: bool | None = None
    top_logprobs: Int64 | None = None
    tools: list[OpenAITool] | None = None
    tool_choice: str | OpenAIToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    chat_template_kwargs: JsonObject | None = None
    modalities: list[str] | None = None
    metadata: JsonObject | None = None


class CompletionBody(_Sampling):
    """``POST /v1/completions``: a prompt is text or token ids (one prompt per request is served)."""

    prompt: str | list[str] | list[Count] | list[list[Count]]
    logprobs: Int64 | None = None
    echo: bool | None = None
    best_of: Int64 | None = None
    suffix: str | None = None


class ResponsesBody(_Body):
    """``POST /v1/responses`` (the OpenAI Responses API; the items' own shapes are checked by
    :mod:`cortex.translate.responses_input`, which names the field at fault)."""

    model: str
    input: str | list[JsonObject] | None = None
    instructions: str | None = None
    max_output_tokens: Count | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: Int64 | None = None
    top_k: Int64 | None = None
    min_p: float | None = None
    seed: Int64 | None = None
    repetition_penalty: float | None = None
    tools: list[JsonObject] | None = None
    tool_choice: str | JsonObject | None = None
    parallel_tool_calls: bool | None = None
    text: JsonObject | None = None
    reasoning: JsonObject | None = None
    include: list[str] | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: JsonObject | None = None
    user: str | None = None


# ---- Anthropic ------------------------------------------------------------------------------------


class AnthropicBlock(_Part):
    """A content block (text, image, document, tool_use, tool_result, thinking, ...)."""

    id: str | None = None
    name: str | None = None
    input: JsonObject | None = None
    tool_use_id: str | None = None
    content: str | list[_Part] | None = None
    thinking: str | None = None
    signature: str | None = None


class AnthropicMessage(_Body):
    role: str
    content: str | list[AnthropicBlock]


class AnthropicTool(_Body):
    name: str
    type: str | None = None
    description: str | None = None
    input_schema: JsonObject | None = None


class AnthropicToolChoice(_Body):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Body):
    type: str
    budget_tokens: Int64 | None = None


class AnthropicMetadata(_Body):
    user_id: str | None = None


class CountTokensBody(_Body):
    """``POST /v1/messages/count_tokens``."""

    model: str
    messages: list[AnthropicMessage]
    system: str | list[_Part] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: Thinking | None = None
    output_config: JsonObject | None = None


class MessagesBody(CountTokensBody):
    """``POST /v1/messages``."""

    max_tokens: Count
    temperature: float | None = None
    top_p: float | None = None
    top_k: Int64 | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    metadata: AnthropicMetadata | None = None


# ---- the neuron's control routes ------------------------------------------------------------------


class ModelLoadBody(_Body):
    """``POST /models/load``; ``tensor_parallel`` (devices to split it over) and ``devices`` (which GPU
    indices) apply when this call starts the load."""

    model: str
    tensor_parallel: int | None = Field(default=None, ge=1)
    devices: list[int] | None = None


class ModelUnloadBody(_Body):
    """``POST /models/unload``; ``force`` aborts the model's requests in flight."""

    model: str
    force: bool | None = None
