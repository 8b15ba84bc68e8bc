"""Split Qwen output into reasoning (``<think>...</think>``) and content, whole or streaming.

Qwen3.5 / 3.6 templates pre-open the reasoning block when thinking is on: the prompt ends with
``<think>\\n``, so the output starts inside reasoning and only the closing ``</think>`` appears
(``starts_in_reasoning=True``, see :func:`prompt_opens_reasoning`). Otherwise a ``<think>`` at the very
start of the output (after whitespace) opens it. Reasoning is reported stripped, as the template renders
it back (``reasoning_content|trim``), and whitespace right after ``</think>`` is dropped from content.
Output cut off before ``</think>`` is all reasoning. A partial tag is never emitted: a suffix that could
be the start of ``</think>`` is held back until the next chunk decides it.
"""

from __future__ import annotations

from cortex.engine.text.markup import WhitespaceTrimmer, held_prefix_len

THINK_START = "<think>"
THINK_END = "</think>"


def prompt_opens_reasoning(prompt: str) -> bool:
    """True when the rendered prompt leaves a ``<think>`` block open (thinking is on)."""
    return prompt.rstrip().endswith(THINK_START)


class ReasoningParser:
    """Streaming splitter: ``feed(text) -> (reasoning_delta, content_delta)``; ``flush()`` at the end."""

    def __init__(self, *, starts_in_reasoning: bool) -> None:
        self._state = "reasoning" if starts_in_reasoning else "start"
        self._buffer = ""
        self._reasoning = WhitespaceTrimmer(trim_leading=True)
        self._content_leading = False
        self.saw_reasoning = starts_in_reasoning

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning, content = [], []
        while True:
            if self._state == "start":
                stripped = self._buffer.lstrip()
                if stripped.startswith(THINK_START):
                    self._state, self.saw_reasoning = "reasoning", True
                    self._buffer = stripped[len(THINK_START) :]
                    continue
                if THINK_START.startswith(stripped):
                    break  # empty, whitespace, or a prefix of <think>: undecided
                self._state = "content"
                continue
            if self._state == "reasoning":
                end = self._buffer.find(THINK_END)
                if end == -1:
                    keep = held_prefix_len(self._buffer, (THINK_END,))
                    reasoning.append(self._reasoning.push(self._buffer[: len(self._buffer) - keep]))
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                reasoning.append(self._reasoning.push(self._buffer[:end]))
                self._reasoning.take_pending()
                self._buffer = self._buffer[end + len(THINK_END) :]
                self._state, self._content_leading = "content", True
                continue
            content.append(self._content(self._buffer))
            self._buffer = ""
            break
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """End of output: an undecided start is content; an unclosed block's held text is reasoning."""
        buffer, self._buffer = self._buffer, ""
        if self._state == "reasoning":
            return self._reasoning.push(buffer), ""
        return "", self._content(buffer)

    def _content(self, text: str) -> str:
        if self._content_leading:
            text = text.lstrip()
            self._content_leading = not text
        return text


def parse_reasoning(text: str, *, starts_in_reasoning: bool) -> tuple[str | None, str]:
    """Whole-output split: (reasoning or None when there was no reasoning block, content)."""
    parser = ReasoningParser(starts_in_reasoning=starts_in_reasoning)
    reasoning, content = parser.feed(text)
    tail_reasoning, tail_content = parser.flush()
    return (reasoning + tail_reasoning if parser.saw_reasoning else None), content + tail_content
