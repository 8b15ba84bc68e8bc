"""The gateway's reading of a Responses stream: events pass whole, lifecycle events get the gateway's
fields, the terminal Response is kept, partial events wait for the rest of their bytes."""

from __future__ import annotations

import json

from cortex.server.responses_events import ResponsesScanner, chat_usage


def _event(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def test_lifecycle_events_are_patched_and_the_final_response_kept():
    scanner = ResponsesScanner(lambda response: response.update(model="alias", store=True))
    created = _event("response.created", {"type": "response.created", "response": {"id": "r", "model": "m"}})
    delta = _event("response.output_text.delta", {"type": "response.output_text.delta", "delta": "hi"})
    usage = {
        "input_tokens": 3,
        "output_tokens": 2,
        "total_tokens": 5,
        "input_tokens_details": {"cached_tokens": 1},
    }
    done = _event(
        "response.completed", {"type": "response.completed", "response": {"id": "r", "usage": usage}}
    )
    stream = created + b": keep-alive\n\n" + delta + done
    out = scanner.feed(stream[:10]) + scanner.feed(stream[10:-5])
    assert scanner.final is None  # its last bytes have not arrived
    out += scanner.feed(stream[-5:]) + scanner.flush()
    events = [e for e in out.split(b"\n\n") if e]
    assert json.loads(events[0].partition(b"data: ")[2])["response"] == {
        "id": "r",
        "model": "alias",
        "store": True,
    }
    assert events[1] == b": keep-alive"
    assert events[2] + b"\n\n" == delta
    assert scanner.final == {"id": "r", "usage": usage, "model": "alias", "store": True}
    assert scanner.usage == chat_usage(usage)
    assert scanner.usage["prompt_tokens"] == 3
    assert scanner.first_output_at is not None


def test_undecodable_or_odd_lifecycle_events_pass_unchanged():
    scanner = ResponsesScanner(lambda response: response.update(model="alias"))
    odd = b"event: response.created\ndata: {not json\n\n" + _event("response.in_progress", {"response": 7})
    assert scanner.feed(odd) == odd
    assert scanner.flush() == b""
    tail = _event("response.failed", {"response": {"id": "r"}})[:-2]  # no blank line at the end
    assert scanner.feed(tail) == b""
    assert b'"model":"alias"' in scanner.flush()
    assert scanner.final == {"id": "r", "model": "alias"}
    assert scanner.usage is None
    assert chat_usage("nope") is None
