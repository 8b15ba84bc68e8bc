"""Progress of long work: snapshots, the terminal line and the log lines, and the loads and checkpoint
writes that report it (fractions rise to exactly 1.0, bytes and tensors add up to the files)."""

from __future__ import annotations

import io
import itertools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cortex.engine.checkpoint import make_model
from cortex.engine.models import load_model
from cortex.engine.progress import Progress, ProgressReporter, ProgressSnapshot, format_bytes
from cortex.engine.safetensors_file import read_header


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def _job(clock: FakeClock, *callbacks: Callable[[ProgressSnapshot], None]) -> Progress:
    return Progress("loading m", bytes_total=4000, tensors_total=4, callbacks=callbacks, clock=clock)


def test_snapshot_fraction_rate_and_time_left() -> None:
    clock = FakeClock()
    seen: list[ProgressSnapshot] = []
    job = _job(clock, seen.append)
    job.start()
    assert seen[-1].fraction == 0.0
    assert seen[-1].eta_s is None
    clock.now += 2.0
    job.advance(1000)
    snap = seen[-1]
    assert (snap.bytes_done, snap.tensors_done, snap.elapsed_s) == (1000, 1, 2.0)
    assert snap.fraction == 0.25
    assert snap.bytes_per_s == 500.0
    assert snap.eta_s == 6.0
    assert snap.as_dict() == {
        "fraction": 0.25,
        "bytes_done": 1000,
        "bytes_total": 4000,
        "tensors_done": 1,
        "tensors_total": 4,
        "bytes_per_s": 500.0,
        "elapsed_s": 2.0,
        "eta_s": 6.0,
    }
    assert snap.describe() == "loading m: 1.0 kB / 4.0 kB (25%), 1/4 tensors, 500 B/s, 6.0 s left"
    job.finish()
    job.finish()  # reported once
    assert [s.done for s in seen] == [False, False, True]
    assert seen[-1].fraction == 1.0
    assert seen[-1].eta_s == 0.0
    assert seen[-1].describe().endswith("done in 2.0 s")


def test_empty_job_is_done_at_one() -> None:
    seen: list[ProgressSnapshot] = []
    job = Progress("nothing", bytes_total=0, tensors_total=0, callbacks=[seen.append])
    job.start()
    job.finish()
    assert [s.fraction for s in seen] == [0.0, 1.0]


def test_advance_from_many_threads_counts_everything() -> None:
    job = Progress("t", bytes_total=8000, tensors_total=8000)

    def work() -> None:
        for _ in range(1000):
            job.advance(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (job.snapshot().bytes_done, job.snapshot().tensors_done) == (8000, 8000)


def test_terminal_rewrites_one_line_at_most_every_refresh() -> None:
    clock, stream = FakeClock(), TerminalStream()
    job = _job(clock, ProgressReporter(stream, refresh_s=0.5))
    job.start()  # shown at once
    clock.now += 0.1
    job.advance(1000)  # too soon
    clock.now += 0.5
    job.advance(1000)  # shown
    job.finish()  # always shown, and ends the line
    out = stream.getvalue()
    lines = out.split("\r\x1b[2K")[1:]
    assert [line.split(":")[1].split("(")[1].split(")")[0] for line in lines] == ["0%", "50%", "100%"]
    assert out.endswith("\n")
    assert out.count("\n") == 1


def test_log_lines_every_interval_when_not_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    clock, stream = FakeClock(), io.StringIO()
    job = _job(clock, ProgressReporter(stream, interval_s=10.0))
    with caplog.at_level(logging.INFO, logger="cortex.progress"):
        job.start()
        for _ in range(3):
            clock.now += 6.0
            job.advance(1000)  # at 6 s (quiet), 12 s (logged), 18 s (quiet)
        job.finish()
    assert stream.getvalue() == ""
    messages = [r.getMessage() for r in caplog.records if r.name == "cortex.progress"]
    assert len(messages) == 2
    assert "(50%), 2/4 tensors" in messages[0]
    assert "left" in messages[0]
    assert "(100%)" in messages[1]
    assert "done in 18 s" in messages[1]


@pytest.mark.parametrize(
    ("value", "text"), [(999, "999 B"), (1500, "1.5 kB"), (2.5e9, "2.5 GB"), (3.2e13, "32.0 TB")]
)
def test_format_bytes(value: float, text: str) -> None:
    assert format_bytes(value) == text


def _assert_rises_to_one(seen: list[ProgressSnapshot], *, bytes_total: int, tensors_total: int) -> None:
    fractions = [s.fraction for s in seen[:-1]]  # the start and one per tensor
    assert fractions[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(fractions))
    assert fractions[-1] == 1.0
    assert seen[-1].done
    assert seen[-1].fraction == 1.0
    assert (seen[-1].bytes_done, seen[-1].bytes_total) == (bytes_total, bytes_total)
    assert (seen[-1].tensors_done, seen[-1].tensors_total) == (tensors_total, tensors_total)
    assert [s.tensors_done for s in seen[:-1]] == list(range(tensors_total + 1))


@pytest.mark.parametrize("max_shard_bytes", [2 << 30, 100_000])
def test_make_model_and_load_model_report_every_tensor(tmp_path: Path, max_shard_bytes: int) -> None:
    made: list[ProgressSnapshot] = []
    folder = make_model(
        tmp_path / "m",
        arch="qwen3_5_moe",
        preset="tiny",
        max_shard_bytes=max_shard_bytes,
        progress=made.append,
    )
    files = sorted(folder.glob("*.safetensors"))
    assert (len(files) > 1) == (max_shard_bytes < 2 << 30)
    headers = [read_header(f) for f in files]
    num_tensors = sum(len(h) for h in headers)
    num_bytes = sum(e.num_bytes for h in headers for e in h.values())
    assert num_bytes == sum(f.stat().st_size - 8 - _header_length(f) for f in files)
    _assert_rises_to_one(made, bytes_total=num_bytes, tensors_total=num_tensors)
    assert made[0].task == "writing m"

    loaded: list[ProgressSnapshot] = []
    _model, config = load_model(folder, dtype="float32", device="cpu", progress=loaded.append)
    assert num_bytes == 4 * config.num_parameters()  # float32, tied embeddings: every parameter once
    _assert_rises_to_one(loaded, bytes_total=num_bytes, tensors_total=num_tensors)
    assert loaded[0].task == "loading m"


def _header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_load_progress_counts_only_the_tensors_it_reads(tmp_path: Path) -> None:
    """Vision and MTP tensors are skipped, so they are not in the total."""
    folder = make_model(tmp_path / "m", arch="qwen3_5", preset="tiny", progress=lambda _: None)
    path = folder / "model.safetensors"
    read = read_header(path)
    tensors = load_file(path)
    tensors |= {"mtp.fc.weight": torch.zeros(64, 128), "model.visual.patch.weight": torch.zeros(8, 8)}
    save_file(tensors, path)
    assert len(read_header(path)) == len(read) + 2
    loaded: list[ProgressSnapshot] = []
    load_model(folder, dtype="float32", device="cpu", progress=loaded.append)
    _assert_rises_to_one(loaded, bytes_total=sum(e.num_bytes for e in read.values()), tensors_total=len(read))
