"""ResponsesScanner: ``ended`` tells a Responses stream that ran to its end (a terminal event or an error)
from one cut between two events (which the gateway then ends with an error event of its own)."""

from __future__ import annotations

import pytest

from cortex.server.responses_events import ResponsesScanner

CREATED = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
DELTA = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n'
DONE = b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r"}}\n\n'
ERROR = b'data: {"error":{"message":"x","type":"server_error"}}\n\n'


@pytest.mark.parametrize(
    ("stream", "ended"),
    [(CREATED + DELTA + DONE, True), (CREATED + DELTA + ERROR, True), (CREATED + DELTA, False)],
    ids=["completed", "error", "cut"],
)
def test_a_responses_stream_has_ended_only_after_its_last_event(stream, ended):
    scanner = ResponsesScanner(lambda response: None)
    scanner.feed(stream)
    assert scanner.ended is ended
