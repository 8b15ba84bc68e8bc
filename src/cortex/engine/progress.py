"""Progress of long work (loading a model's weights, writing a checkpoint): bytes and tensors done,
rate and time left.

One mechanism for every loader and writer: the worker owns a :class:`Progress`, calls
:meth:`Progress.advance` after each tensor and :meth:`Progress.finish` at the end; each call hands an
immutable :class:`ProgressSnapshot` to the callbacks it was given. The callbacks decide what to show:

- :class:`ProgressReporter` (the default of :func:`cortex.engine.models.load_model`,
  ``Engine.from_pretrained`` and ``make_model``) rewrites one line in place on a terminal, and logs a
  line every ``interval_s`` (and one at the end) when its stream is not a terminal (a service's log);
- the neuron keeps the latest snapshot of a load and reports it in ``GET /health``, which the gateway
  learns through its poll.

Snapshots are plain values, so a snapshot taken in the loading thread may be read from any other.
No torch here: the servers import this module.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["Progress", "ProgressCallback", "ProgressReporter", "ProgressSnapshot", "format_bytes"]

logger = logging.getLogger("cortex.progress")


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """One instant of a job: ``bytes_done`` of ``bytes_total`` in ``tensors_done`` of ``tensors_total``
    tensors, ``elapsed_s`` after it started; ``done`` once the job has finished."""

    task: str
    bytes_done: int
    bytes_total: int
    tensors_done: int
    tensors_total: int
    elapsed_s: float
    done: bool = False

    @property
    def fraction(self) -> float:
        """Bytes done over bytes total, in [0, 1]; exactly 1.0 once done."""
        if self.done:
            return 1.0
        if self.bytes_total <= 0:
            return 0.0
        return min(self.bytes_done / self.bytes_total, 1.0)

    @property
    def bytes_per_s(self) -> float:
        """The mean rate since the start."""
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the mean rate so far; None before anything is done, 0.0 once done."""
        if self.done:
            return 0.0
        if self.bytes_done <= 0 or self.elapsed_s <= 0:
            return None
        return max(self.bytes_total - self.bytes_done, 0) / self.bytes_per_s

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (a neuron's ``/health`` ``models[].load_progress``)."""
        eta = self.eta_s
        return {
            "fraction": round(self.fraction, 4),
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "tensors_done": self.tensors_done,
            "tensors_total": self.tensors_total,
            "bytes_per_s": round(self.bytes_per_s, 1),
            "elapsed_s": round(self.elapsed_s, 3),
            "eta_s": None if eta is None else round(eta, 1),
        }

    def describe(self) -> str:
        """``loading qwen: 1.2 GB / 4.8 GB (25%), 120/480 tensors, 310 MB/s, 12 s left``."""
        head = (
            f"{self.task}: {format_bytes(self.bytes_done)} / {format_bytes(self.bytes_total)} "
            f"({self.fraction:.0%}), {self.tensors_done}/{self.tensors_total} tensors, "
            f"{format_bytes(self.bytes_per_s)}/s"
        )
        if self.done:
            return f"{head}, done in {_format_seconds(self.elapsed_s)}"
        eta = self.eta_s
        return f"{head}, {'?' if eta is None else _format_seconds(eta)} left"


ProgressCallback = Callable[[ProgressSnapshot], None]


class Progress:
    """Counts one job's bytes and tensors and hands a snapshot to each callback after every change.

    ``advance`` and ``finish`` may be called from any thread; callbacks run in the caller's thread.
    """

    def __init__(
        self,
        task: str,
        *,
        bytes_total: int,
        tensors_total: int,
        callbacks: Sequence[ProgressCallback] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.bytes_total = bytes_total
        self.tensors_total = tensors_total
        self._callbacks = tuple(callbacks)
        self._clock = clock
        self._started_s = clock()
        self._lock = threading.Lock()
        self._bytes_done = 0
        self._tensors_done = 0
        self._done = False

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            task=self.task,
            bytes_done=self._bytes_done,
            bytes_total=self.bytes_total,
            tensors_done=self._tensors_done,
            tensors_total=self.tensors_total,
            elapsed_s=self._clock() - self._started_s,
            done=self._done,
        )

    def start(self) -> None:
        """Report the job at zero (so a watcher sees it before the first tensor is done)."""
        self._notify(self.snapshot())

    def advance(self, num_bytes: int, num_tensors: int = 1) -> None:
        with self._lock:
            self._bytes_done += num_bytes
            self._tensors_done += num_tensors
            snapshot = self._snapshot()
        self._notify(snapshot)

    def finish(self) -> None:
        """Mark the job done (fraction 1.0) and report it; later calls do nothing."""
        with self._lock:
            if self._done:
                return
            self._done = True
            snapshot = self._snapshot()
        self._notify(snapshot)

    def _notify(self, snapshot: ProgressSnapshot) -> None:
        for callback in self._callbacks:
            callback(snapshot)


class ProgressReporter:
    """Shows progress to a person: on a terminal one line rewritten in place (at most every
    ``refresh_s``); elsewhere a log line (logger ``cortex.progress``, INFO) every ``interval_s`` and
    one when the job is done."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval_s: float = 10.0,
        refresh_s: float = 0.1,
        terminal: bool | None = None,
        log: logging.Logger = logger,
    ) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._terminal = terminal
        self._log = log
        self._last_shown_s: float | None = None

    def __call__(self, snapshot: ProgressSnapshot) -> None:
        stream = self._stream or sys.stderr
        terminal = self._terminal if self._terminal is not None else _is_terminal(stream)
        if terminal:
            due = self._last_shown_s is None or snapshot.elapsed_s - self._last_shown_s >= self._refresh_s
        else:  # the first line one interval after the start
            due = snapshot.elapsed_s - (self._last_shown_s or 0.0) >= self._interval_s
        if not (due or snapshot.done):
            return
        self._last_shown_s = snapshot.elapsed_s
        if terminal:
            stream.write(f"\r\x1b[2K{snapshot.describe()}" + ("\n" if snapshot.done else ""))
            stream.flush()
        else:
            self._log.info("%s", snapshot.describe())


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def format_bytes(num_bytes: float) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units, as disks and network rates are quoted)."""
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
