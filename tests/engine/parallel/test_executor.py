"""Failure is bounded: a rank killed mid-generation, a wedged rank, a rank dying between steps and a rank
failing to load each end the engine's requests cleanly (never a hang), leave no rank process behind,
and a reload serves again. The ranks are real processes in a gloo group; the faults are real signals."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from cortex.engine.engine import Engine
from cortex.engine.errors import EngineError, RankFailedError
from cortex.engine.sampling_params import SamplingParams

LONG = SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
# death is noticed by the process's end, never by a timeout: so far longer than any test may wait
GENEROUS_S = 600.0
DETECTED_WITHIN_S = 30.0  # on a loaded 2-core machine; the rank is gone as soon as the signal lands


@pytest.fixture(scope="module")
def folder(hf_checkpoint) -> Path:
    return hf_checkpoint("qwen3_5").path


def _start(folder: Path, **options: float) -> Engine:
    return Engine.from_pretrained(folder, tensor_parallel_size=2, max_model_len=512, **options)


def _rank_pids(engine: Engine) -> list[int]:
    assert engine._parallel is not None
    return engine._parallel.pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _stream_until_failure(engine: Engine, fault: object) -> tuple[list[int], BaseException, float]:
    """Stream a long generation, inject ``fault()`` after 4 tokens; (tokens, the error, seconds to it)."""
    tokens: list[int] = []
    started = 0.0
    try:
        async for delta in engine.stream(list(range(5, 40)), LONG):
            tokens.extend(delta.token_ids)
            if len(tokens) == 4:
                started = time.monotonic()
                fault()  # type: ignore[operator]
    except EngineError as error:
        return tokens, error, time.monotonic() - started
    raise AssertionError("the generation ended without an error")


def test_a_rank_killed_mid_generation_fails_the_request_and_a_reload_serves_until_its_rank_dies(folder):
    with _start(folder, rank_timeout_s=GENEROUS_S) as engine:
        pids = _rank_pids(engine)
        tokens, error, elapsed = asyncio.run(
            _stream_until_failure(engine, lambda: os.kill(pids[1], signal.SIGKILL))
        )
        assert elapsed < DETECTED_WITHIN_S
        assert isinstance(error.__cause__, RankFailedError)
        assert "rank 1" in str(error)
        assert isinstance(engine.failure, RankFailedError)
        assert all(_gone(pid) for pid in pids)  # rank 0 was stopped too
        stats = engine.stats()
        used = (stats.num_running, stats.num_waiting, stats.num_kv_blocks_used, stats.num_state_slots_used)
        assert used == (0, 0, 0, 0)
        with pytest.raises(EngineError, match="must be loaded again"):
            engine.generate([[1, 2, 3]], SamplingParams(max_tokens=2))
    with _start(folder, rank_timeout_s=GENEROUS_S) as reloaded:
        again = reloaded.generate([list(range(5, 40))], SamplingParams(max_tokens=4, temperature=0.0))
        assert again[0].token_ids == tokens[:4]
        # the reloaded engine's rank 0 dies while no step runs: noticed at once, not at the next step
        pids = _rank_pids(reloaded)
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + DETECTED_WITHIN_S
        while reloaded.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reloaded.failure is not None
        assert "rank 0" in str(reloaded.failure)
        assert "between steps" in str(reloaded.failure)
        assert all(_gone(pid) for pid in pids)


def test_a_wedged_rank_is_stopped_after_the_rank_timeout(folder):
    with _start(folder, rank_timeout_s=3.0) as engine:
        pids = _rank_pids(engine)
        _, error, elapsed = asyncio.run(
            _stream_until_failure(engine, lambda: os.kill(pids[1], signal.SIGSTOP))
        )
        assert 3.0 <= elapsed < 3.0 + DETECTED_WITHIN_S
        # whichever bound fires first: the supervisor's deadline, or rank 0's collective timeout
        assert re.search(r"did not answer within 3 s|Timed out waiting 3000ms", str(error))
        assert all(_gone(pid) for pid in pids)


def test_a_rank_that_fails_to_load_reports_why(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in folder.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, broken / item.name)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.0.mlp.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        RankFailedError, match=r"missing tensor model\.layers\.0\.mlp\.down_proj\.weight"
    ) as failed:
        _start(broken)
    assert "loading the model" in str(failed.value)
