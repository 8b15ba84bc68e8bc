"""The relay's stream scanner holds a partial event back until its blank line arrives."""

from __future__ import annotations

from cortex.server.relay_events import StreamScanner, complete_end


def test_a_partial_event_is_held_back_whole():
    scanner = StreamScanner("openai")
    assert scanner.feed(b'data: {"choices":') == b""  # not even its first bytes go out
    assert scanner.feed(b"[]}\n\ndata: [DO") == b'data: {"choices":[]}\n\n'
    assert scanner.flush() == b"data: [DO\n\n"
    assert (complete_end(b"abc"), complete_end(b"a\n\nb"), complete_end(b"a\r\n\r\nb\n\nc")) == (0, 3, 8)
