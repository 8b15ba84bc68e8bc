"""EngineStats: a snapshot of an Engine's load and prefix cache, and the meter behind its recent tokens/s.

Plain Python (no torch), so servers can read and export it cheaply.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrefixCacheStats:
    """Counters since the engine started, and the snapshot pool's occupancy now."""

    num_queries: int  # admissions looked up (a resumed preempted request counts again)
    num_hits: int  # admissions that reused at least one block
    num_query_tokens: int  # tokens (prompt, plus any already generated) of those admissions
    num_hit_tokens: int  # of those, tokens served from the cache instead of computed
    num_snapshot_miss_tokens: int  # cached KV tokens recomputed because no state snapshot covered them
    num_snapshots_used: int
    num_snapshots_total: int
    num_cached_blocks: int  # KV blocks registered under a hash, in use or evictable
    bytes_per_snapshot: int

    @property
    def hit_rate(self) -> float:
        """Fraction of looked-up tokens served from the cache."""
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0

    @property
    def snapshot_bytes_used(self) -> int:
        return self.num_snapshots_used * self.bytes_per_snapshot


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
    prefix_cache: PrefixCacheStats | None = None  # None when prefix caching is off

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
