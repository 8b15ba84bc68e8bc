"""A fast fake upstream for benchmarks/gateway.py: the neuron contract's routes with canned answers.

A bare ASGI app (no framework) on uvicorn with httptools and uvloop, so that the upstream costs as
little as possible and the gateway's own cost shows. It serves one model, ``bench``, always loaded:
``/health``, ``/models``, ``/discovery``, ``/v1/models``, and ``/v1/chat/completions`` and
``/v1/messages`` with and without ``stream``. A stream is ``--chunks`` content deltas (10 by default),
each its own write, then the finish and usage events; a whole answer holds the same text.

    python benchmarks/fake_upstream.py --port 18000 [--chunks 10]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MODEL = "bench"
PROMPT_TOKENS = 12


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _usage(completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    }


class Canned:
    """Every answer, serialised once."""

    def __init__(self, num_chunks: int) -> None:
        words = [f"w{i} " for i in range(num_chunks)]
        text = "".join(words)
        model_entry = {
            "id": MODEL,
            "status": "loaded",
            "in_flight": 0,
            "queued": 0,
            "kv_cache_usage": 0.0,
            "estimated_memory_bytes": 1000,
            "max_model_len": 4096,
            "prefill_tokens_per_s": 0.0,
            "decode_tokens_per_s": 0.0,
        }
        self.health = _dumps(
            {
                "status": "ok",
                "name": "fake",
                "devices": [],
                "models": [model_entry],
                "in_flight": 0,
                "queued": 0,
                "memory_budget_bytes": 10**9,
                "memory_used_bytes": 1000,
            }
        )
        self.models = _dumps({"models": [model_entry]})
        self.discovery = _dumps(
            {
                "host": {"name": "fake"},
                "models": [
                    {
                        "id": MODEL,
                        "architecture": "fake",
                        "estimated_memory_bytes": 1000,
                        "max_model_len": 4096,
                    }
                ],
            }
        )
        self.v1_models = _dumps(
            {
                "object": "list",
                "data": [
                    {"id": MODEL, "object": "model", "created": 0, "owned_by": "fake", "max_model_len": 4096}
                ],
            }
        )
        self.chat = _dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": _usage(num_chunks),
            }
        )
        self.message = _dumps(
            {
                "id": "msg_bench",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": num_chunks},
            }
        )
        self.words = words

    def chat_events(self, *, include_usage: bool, continuous: bool) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None, completion: int) -> bytes:
            body: dict[str, Any] = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if continuous:
                body["usage"] = _usage(completion)
            elif include_usage:
                body["usage"] = None
            return b"data: " + _dumps(body) + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""}, None, 0)]
        last = len(self.words) - 1
        events += [
            chunk({"content": w}, "stop" if i == last else None, i + 1) for i, w in enumerate(self.words)
        ]
        if include_usage:
            final = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL,
                "choices": [],
                "usage": _usage(len(self.words)),
            }
            events.append(b"data: " + _dumps(final) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def message_events(self) -> list[bytes]:
        def event(body: dict[str, Any]) -> bytes:
            return b"event: " + body["type"].encode() + b"\ndata: " + _dumps(body) + b"\n\n"

        start = {
            "type": "message_start",
            "message": {
                "id": "msg_bench",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 0},
            },
        }
        events = [
            event(start),
            event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ]
        events += [
            event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})
            for w in self.words
        ]
        events.append(event({"type": "content_block_stop", "index": 0}))
        events.append(
            event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(self.words)},
                }
            )
        )
        events.append(event({"type": "message_stop"}))
        return events


def make_app(num_chunks: int) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    canned = Canned(num_chunks)
    message_events = canned.message_events()
    chat_events = {
        (usage, continuous): canned.chat_events(include_usage=usage, continuous=continuous)
        for usage in (False, True)
        for continuous in (False, True)
    }
    gets = {
        "/health": canned.health,
        "/models": canned.models,
        "/discovery": canned.discovery,
        "/v1/models": canned.v1_models,
    }
    json_headers = [(b"content-type", b"application/json")]
    sse_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    async def whole(send: Send, body: bytes, status: int = 200) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*json_headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def stream(send: Send, events: list[bytes]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
        for data in events:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if scope["method"] == "GET":
            body = gets.get(path)
            await whole(
                send, body if body is not None else b'{"error":{"message":"not found"}}', 200 if body else 404
            )
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(raw)
        if path == "/v1/chat/completions":
            if not request.get("stream"):
                await whole(send, canned.chat)
                return
            options = request.get("stream_options") or {}
            key = (bool(options.get("include_usage")), bool(options.get("continuous_usage_stats")))
            await stream(send, chat_events[key])
        elif path.startswith("/v1/messages"):
            if request.get("stream"):
                await stream(send, message_events)
            else:
                await whole(send, canned.message)
        else:
            await whole(send, b'{"error":{"message":"not found"}}', 404)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=10)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        make_app(args.chunks),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
