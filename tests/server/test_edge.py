"""The strict edge: typed bodies whose every failure is a 400 naming the field, large bodies parsed off
the event loop, bounded error messages, the typed bodies in both apps' OpenAPI schemas, and a status
page that shows nothing to a caller without a key."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, post
from litestar.testing import TestClient
from pydantic import model_validator

from cortex.errors import InvalidRequestError
from cortex.server.config import config_from_dict
from cortex.server.edge import MAX_MESSAGE_CHARS, OFF_LOOP_BYTES, message_of, parse_body, read_body
from cortex.server.gateway import create_app as create_gateway
from cortex.server.wire.bodies import ChatCompletionBody, CompletionBody, MessagesBody, ModelLoadBody

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("model", "body", "message", "param"),
    [
        (
            ChatCompletionBody,
            {**CHAT, "messages": True},
            "messages: Input should be a valid list",
            "messages",
        ),
        (
            ChatCompletionBody,
            {**CHAT, "messages": [{"role": "user", "content": 5}]},
            "messages[0].content: Input should be a valid string",
            "messages[0].content",
        ),
        (
            ChatCompletionBody,
            {**CHAT, "temperature": "0.5"},
            "temperature: Input should be a valid number",
            None,
        ),
        (
            ChatCompletionBody,
            {**CHAT, "max_tokens": True},
            "max_tokens: Input should be a valid integer",
            None,
        ),
        (ChatCompletionBody, {**CHAT, "top_k": 2**63}, "top_k: Input should be less than or equal to", None),
        (ChatCompletionBody, {**CHAT, "stop": [1]}, "stop: Input should be a valid string", None),
        (ChatCompletionBody, {"messages": CHAT["messages"]}, "model: Field required", "model"),
        (CompletionBody, {"model": "m", "prompt": [-1]}, "prompt", "prompt"),
        (MessagesBody, {**CHAT}, "max_tokens: Field required", "max_tokens"),
        (
            MessagesBody,
            {**CHAT, "max_tokens": 5, "system": 7},
            "system: Input should be a valid string",
            None,
        ),
        (ModelLoadBody, {"model": ["m"]}, "model: Input should be a valid string", "model"),
    ],
)
def test_a_typed_body_failure_is_a_400_naming_the_field(model, body, message, param):
    with pytest.raises(InvalidRequestError) as info:
        parse_body(json.dumps(body).encode(), model)
    assert message in str(info.value)
    assert info.value.param == (param or message.split(":")[0])


def test_unknown_fields_are_hints_and_pass():
    body = {**CHAT, "metadata": {"x": 1}, "service_tier": "auto", "context_management": {"edits": []}}
    assert parse_body(json.dumps(body).encode(), ChatCompletionBody) == body


def test_a_large_body_is_parsed_off_the_event_loop():
    threads: list[str] = []  # where each body was checked; the handler's own thread first

    class Recording(ModelLoadBody):
        @model_validator(mode="after")
        def record(self) -> Recording:
            threads.append(threading.current_thread().name)
            return self

    @post("/x", status_code=200)
    async def handler(request: Request[Any, Any, Any]) -> dict[str, int]:
        threads.append(threading.current_thread().name)
        return {"n": len(await read_body(request, Recording))}

    with TestClient(Litestar([handler])) as client:
        client.post("/x", json={"model": "small"})
        client.post("/x", json={"model": "large", "pad": "x" * OFF_LOOP_BYTES})
    loop, small, loop_again, large = threads
    assert small == loop == loop_again
    assert large != loop


def test_error_messages_quote_a_bounded_prefix():
    message = message_of(InvalidRequestError(f"model {'x' * 2_000_000!r} is not served"))
    assert len(message) < MAX_MESSAGE_CHARS + 100
    assert message.endswith("(2000022 characters in all)")
    assert message_of(RuntimeError("secret internals")) == "internal server error"


def _gateway(api_keys: tuple[str, ...] = ()) -> Litestar:
    config = config_from_dict(
        {
            "auth": {"api_keys": list(api_keys)},
            "neurons": [{"name": "hidden-neuron", "url": "http://127.0.0.1:9"}],
        },
        environ={},
    )
    return create_gateway(config)


def test_the_status_page_shows_nothing_without_a_key():
    with TestClient(_gateway(("secret",))) as client:
        assert client.head("/").status_code == 200
        locked = client.get("/")
        assert locked.status_code == 200
        assert "hidden-neuron" not in locked.text
        assert "needs an API key" in locked.text
        assert "hidden-neuron" in client.get("/", headers={"x-api-key": "secret"}).text
        assert client.get("/status").status_code == 401
    with TestClient(_gateway()) as client:
        assert "hidden-neuron" in client.get("/").text


def _request_bodies(app: Litestar) -> dict[str, str]:
    schema = app.openapi_schema.to_schema()
    return {
        path: op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method == "post"
    }


def test_every_post_route_documents_its_typed_body(neuron):
    app, _ = neuron
    assert _request_bodies(app) == {
        "/models/load": "ModelLoadBody",
        "/models/unload": "ModelUnloadBody",
        "/v1/chat/completions": "ChatCompletionBody",
        "/v1/completions": "CompletionBody",
        "/v1/messages": "MessagesBody",
        "/v1/messages/count_tokens": "CountTokensBody",
        "/v1/responses": "ResponsesBody",
    }
    gateway_bodies = _request_bodies(_gateway())
    assert (
        gateway_bodies.items()
        >= {
            "/v1/chat/completions": "ChatCompletionBody",
            "/v1/completions": "CompletionBody",
            "/v1/messages": "MessagesBody",
            "/v1/messages/count_tokens": "CountTokensBody",
        }.items()
    )


async def test_a_bad_body_reaches_the_caller_in_its_dialect(client: httpx.AsyncClient):
    reply = await client.post("/v1/messages", json={**CHAT, "max_tokens": "many"})
    assert reply.status_code == 400
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["message"].startswith("max_tokens: Input should be a valid integer")
    reply = await client.post("/v1/chat/completions", content=b'{"model": "alpha", "temperature": NaN}')
    assert reply.status_code == 400
    assert "NaN" in reply.json()["error"]["message"]
