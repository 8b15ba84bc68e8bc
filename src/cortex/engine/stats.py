"""EngineStats: a snapshot of an Engine's load, and the meter behind its recent tokens/s.

Plain Python (no torch), so servers can read and export it cheaply.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_kv_blocks_used: int
    num_kv_blocks_total: int
    num_state_slots_used: int
    num_state_slots_total: int
    prefill_tokens_per_s: float  # over the last ``ThroughputMeter.window_s`` seconds
    decode_tokens_per_s: float
    total_prompt_tokens: int  # prompt tokens of every request added so far
    total_generated_tokens: int
    num_preemptions: int
    num_failed_steps: int = 0  # forward steps that raised (each failed one request or was quarantined)

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of KV blocks in use (0 when the model has none)."""
        return self.num_kv_blocks_used / self.num_kv_blocks_total if self.num_kv_blocks_total else 0.0


class ThroughputMeter:
    """Tokens per second over a sliding window of recent steps.

    A rate is the tokens of the steps that ended within the last ``window_s`` seconds, divided by the time
    from the start of the oldest of those steps (or the window's start, if later) to now.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._steps: deque[tuple[float, float, int, int]] = deque()  # (start, end, prefill, decode)

    def record(
        self, *, start_s: float, end_s: float, num_prefill_tokens: int, num_decode_tokens: int
    ) -> None:
        self._steps.append((start_s, end_s, num_prefill_tokens, num_decode_tokens))

    def rates(self, now_s: float) -> tuple[float, float]:
        """(prefill tokens/s, decode tokens/s) at time ``now_s`` (``time.perf_counter()`` clock)."""
        while self._steps and self._steps[0][1] < now_s - self.window_s:
            self._steps.popleft()
        if not self._steps:
            return 0.0, 0.0
        span = max(now_s - max(self._steps[0][0], now_s - self.window_s), 1e-9)
        return sum(s[2] for s in self._steps) / span, sum(s[3] for s in self._steps) / span
