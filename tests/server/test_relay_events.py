"""The relay's stream scanner: a partial event is held back until its blank line arrives; ``ended`` tells a
stream that ran to its end from one cut between two events (which the relay then ends with an error event
of its own); ``finished`` sees the last choice of a third-party server that sends no ``[DONE]``."""

from __future__ import annotations

import pytest

from cortex.server.relay_events import StreamScanner, complete_end


def test_a_partial_event_is_held_back_whole():
    scanner = StreamScanner("openai")
    assert scanner.feed(b'data: {"choices":') == b""  # not even its first bytes go out
    assert scanner.feed(b"[]}\n\ndata: [DO") == b'data: {"choices":[]}\n\n'
    assert scanner.flush() == b"data: [DO\n\n"
    assert (complete_end(b"abc"), complete_end(b"a\n\nb"), complete_end(b"a\r\n\r\nb\n\nc")) == (0, 3, 8)


CHUNK = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
FINISH = b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
START = b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n'


@pytest.mark.parametrize(
    ("dialect", "stream", "ended"),
    [
        ("openai", CHUNK + b"data: [DONE]\n\n", True),
        ("openai", CHUNK + b'data: {"error":{"message":"x"}}\n\n', True),
        ("openai", CHUNK, False),
        ("openai", CHUNK + b"data: [DO", False),  # cut inside the terminator
        ("anthropic", START + b'event: message_stop\ndata: {"type":"message_stop"}\n\n', True),
        ("anthropic", START + b'event: error\ndata: {"type":"error","error":{}}\n\n', True),
        ("anthropic", START, False),
    ],
)
def test_a_stream_has_ended_only_after_its_last_event(dialect, stream, ended):
    scanner = StreamScanner(dialect)  # type: ignore[arg-type]
    passed = b"".join(scanner.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert scanner.ended is ended
    assert stream.startswith(passed)  # complete events only, unchanged


@pytest.mark.parametrize(("stream", "finished"), [(CHUNK, False), (CHUNK + FINISH, True)])
def test_an_openai_stream_has_finished_after_a_choice_with_a_finish_reason(stream, finished):
    scanner = StreamScanner("openai")
    scanner.feed(stream)
    assert (scanner.finished, scanner.ended) == (finished, False)
