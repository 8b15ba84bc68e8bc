"""ParallelExecutor: the engine's side of a tensor-parallel model; starts, drives and supervises ranks.

The engine's process is never a member of the ``torch.distributed`` group, so it cannot block in a
collective. It starts one process per rank (``python -m cortex.engine.parallel.worker``: a fresh
interpreter that never re-imports the caller's ``__main__``), talks to each over its own socket pair,
and waits for every answer with a deadline, watching each rank's sentinel (a pipe whose write end
only the rank holds, so it reads EOF the moment the rank's process ends) at the same time. The
bounds it guarantees:

- a rank that exits (crash, OOM kill, ``kill -9``) is noticed as soon as its process ends: by the
  step waiting on it, or between steps by a watcher thread blocked on the sentinels;
- a rank that raises reports its traceback, and is noticed at once;
- a rank that stops answering (a wedged collective, a hung device) is noticed when its step passes
  ``rank_timeout_s`` (loading: ``load_timeout_s``); inside the ranks every collective also times out
  after ``rank_timeout_s``, so ranks never outlive a lost peer by more than that.

On any of these the executor kills every rank (SIGKILL), reaps them, removes the group's store, and
from then on raises :class:`RankFailedError` (once through ``on_failure`` too, so the engine can fail
its requests even when no step was running). A new executor (a reload) starts fresh processes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TypeVar

from cortex.engine.cache.cache_plan import CachePlan
from cortex.engine.config import ModelConfig
from cortex.engine.cpu import cpu_capabilities, num_threads_for
from cortex.engine.engine_config import EngineConfig
from cortex.engine.errors import RankFailedError, ShardingError
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.parallel.protocol import (
    AllocateCaches,
    LoadProgress,
    RankError,
    RankLoaded,
    RankMessage,
    RankReady,
    RankSpec,
    RunStep,
    Shutdown,
    StepDone,
    SupervisorMessage,
)
from cortex.engine.parallel.shard_config import shard_config
from cortex.engine.progress import ProgressCallback, ProgressReporter
from cortex.engine.sampling import SamplerOutput
from cortex.engine.step_input import StepInput

SHUTDOWN_GRACE_S = 10.0  # a closing rank gets this long to leave the group before it is killed
_Answer = TypeVar("_Answer", RankLoaded, RankReady, StepDone)


@dataclass(frozen=True)
class _Rank:
    process: subprocess.Popen[bytes]
    conn: Connection  # our end of the rank's socket pair
    sentinel: int  # read end of a pipe only the rank writes to: EOF once its process has ended


def _spawn_rank(spec: RankSpec) -> _Rank:
    ours, theirs = socket.socketpair()
    sentinel_read, sentinel_write = os.pipe()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cortex.engine.parallel.worker",
                str(theirs.fileno()),
                str(sentinel_write),
            ],
            pass_fds=(theirs.fileno(), sentinel_write),
        )
    finally:
        theirs.close()
        os.close(sentinel_write)
    conn = Connection(ours.detach())
    conn.send(spec)
    return _Rank(process, conn, sentinel_read)


def _threads_per_rank(config: EngineConfig) -> int:
    """The engine's CPU thread count (``cortex.engine.cpu``) shared out among the ranks."""
    return max(1, num_threads_for(cpu_capabilities(), config.num_threads) // config.tensor_parallel_size)


def _check_devices(devices: Sequence[str]) -> None:
    if devices[0] == "cpu":
        return
    import torch

    visible = torch.cuda.device_count()
    missing = [d for d in devices if int(d.split(":")[1]) >= visible]
    if missing:
        raise ShardingError(
            f"tensor_parallel_size={len(devices)} needs the CUDA devices {list(devices)}; "
            f"{visible} are visible, so {missing} do not exist"
        )


class ParallelExecutor:
    """The rank processes of one model; :meth:`execute` runs a step on all of them."""

    def __init__(
        self, ranks: Sequence[_Rank], *, rank_config: ModelConfig, store_dir: Path, config: EngineConfig
    ) -> None:
        self.rank_config = rank_config  # every rank's shapes (the cache specs come from it)
        self.devices = config.rank_devices
        self.free_memory_bytes: int | None = None  # the least free on any rank's device, once loaded
        self.on_failure: Callable[[RankFailedError], None] | None = None
        self._load_progress: ProgressCallback | None = None  # rank 0's snapshots go here while loading
        self._ranks = list(ranks)
        self._store_dir = store_dir
        self._rank_timeout_s = config.rank_timeout_s
        self._lock = threading.Lock()
        self._failure: RankFailedError | None = None
        self._closing = False
        self._wake_read, self._wake_write = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="cortex-ranks-watcher", daemon=True)
        self._watcher.start()

    @classmethod
    def start(
        cls,
        folder: str | Path,
        model_config: ModelConfig,
        config: EngineConfig,
        *,
        kernels: KernelBackend,
        progress: ProgressCallback | None = None,
    ) -> ParallelExecutor:
        """Start ``config.tensor_parallel_size`` ranks over ``folder`` and wait until all have loaded.

        ``progress`` receives rank 0's loading progress, as ``load_model`` reports it on one device
        (None: a ``ProgressReporter`` in this process).

        Raises ShardingError (before starting anything) when the model does not split over the ranks,
        and RankFailedError when a rank fails or the load passes ``config.load_timeout_s``.
        """
        world_size = config.tensor_parallel_size
        rank_config = shard_config(model_config, world_size)
        devices = config.rank_devices
        _check_devices(devices)
        store_dir = Path(tempfile.mkdtemp(prefix="cortex-tp-"))  # 0700: the group's rendezvous
        ranks = []
        try:
            for rank, device in enumerate(devices):
                spec = RankSpec(
                    rank=rank,
                    world_size=world_size,
                    folder=str(Path(folder).resolve()),
                    device=device,
                    dtype=config.dtype,
                    ssm_state_dtype=config.ssm_state_dtype,
                    kernels=kernels,
                    store_path=str(store_dir / "store"),
                    collective_timeout_s=config.rank_timeout_s,
                    num_threads=_threads_per_rank(config),
                )
                ranks.append(_spawn_rank(spec))
        except BaseException:
            for started in ranks:
                started.process.kill()
                started.process.wait()
            shutil.rmtree(store_dir, ignore_errors=True)
            raise
        executor = cls(ranks, rank_config=rank_config, store_dir=store_dir, config=config)
        executor._load_progress = progress or ProgressReporter()
        try:
            loaded = executor._gather(RankLoaded, timeout_s=config.load_timeout_s, doing="loading the model")
        except BaseException:
            executor.close()
            raise
        finally:
            executor._load_progress = None
        frees = [answer.free_memory_bytes for answer in loaded if answer.free_memory_bytes is not None]
        executor.free_memory_bytes = min(frees) if frees else None
        return executor

    # ---- running --------------------------------------------------------------------------------

    @property
    def failure(self) -> RankFailedError | None:
        """Why the ranks were stopped, once they were; None while they serve."""
        return self._failure

    @property
    def pids(self) -> list[int]:
        """The rank processes' ids, rank 0 first."""
        return [rank.process.pid for rank in self._ranks]

    def allocate(self, plan: CachePlan) -> None:
        """Have every rank allocate its caches for ``plan`` (the same plan on every rank)."""
        self._broadcast(AllocateCaches(plan))
        self._gather(RankReady, timeout_s=self._rank_timeout_s, doing="allocating the caches")

    def execute(self, step: StepInput) -> SamplerOutput:
        """Run ``step`` on every rank; rank 0's sampled tokens. Raises RankFailedError on any failure."""
        self._broadcast(RunStep(step))
        answers = self._gather(StepDone, timeout_s=self._rank_timeout_s, doing="running a step")
        output = answers[0].output
        assert output is not None, "rank 0 samples"
        return output

    def _broadcast(self, message: SupervisorMessage) -> None:
        self._raise_if_failed()
        payload = pickle.dumps(message)  # once, however many ranks
        for rank, member in enumerate(self._ranks):
            try:
                member.conn.send_bytes(payload)
            except OSError as exc:
                self._fail(f"rank {rank} cannot be reached ({exc!r})")
        self._raise_if_failed()

    def _gather(self, kind: type[_Answer], *, timeout_s: float, doing: str) -> list[_Answer]:
        """One ``kind`` answer from every rank, in rank order, within ``timeout_s``."""
        answers: dict[int, _Answer] = {}
        deadline = time.monotonic() + timeout_s
        sentinels: dict[Any, int] = {member.sentinel: rank for rank, member in enumerate(self._ranks)}
        while len(answers) < len(self._ranks):
            self._raise_if_failed()
            pending: dict[Any, int] = {
                member.conn: rank for rank, member in enumerate(self._ranks) if rank not in answers
            }
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(
                    f"rank(s) {sorted(pending.values())} did not answer within {timeout_s:g} s {doing}"
                )
                continue
            ready = wait([*pending, *sentinels], timeout=remaining)
            # answers first: a rank that reported its error and then exited is ready both ways
            for item in ready:
                if isinstance(item, Connection):
                    self._receive(pending[item], item, kind, answers, doing)
            ended = [sentinels[item] for item in ready if not isinstance(item, Connection)]
            if ended:
                self._fail(self._exit_reason(ended[0], doing))
        return [answers[rank] for rank in range(len(self._ranks))]

    def _receive(
        self, rank: int, conn: Connection, kind: type[_Answer], answers: dict[int, _Answer], doing: str
    ) -> None:
        if self._failure is not None:
            return
        try:
            message: RankMessage = conn.recv()
        except (EOFError, OSError):
            self._fail(self._exit_reason(rank, doing))
            return
        if isinstance(message, LoadProgress) and self._load_progress is not None:
            self._load_progress(message.snapshot)
        elif isinstance(message, RankError):
            self._fail(f"rank {rank} failed {doing}:\n{message.message}")
        elif not isinstance(message, kind):
            self._fail(f"rank {rank} answered {type(message).__name__} {doing}, expected {kind.__name__}")
        else:
            answers[rank] = message

    def _exit_reason(self, rank: int, doing: str) -> str:
        process = self._ranks[rank].process
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
        return f"rank {rank} (pid {process.pid}) exited with code {process.returncode} {doing}"

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    # ---- failure and shutdown -------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        """Stop every rank at once; the first reason wins. Notifies ``on_failure`` once."""
        with self._lock:
            if self._failure is not None:
                return
            if self._closing:  # the ranks are leaving on request: not a failure to report
                self._failure = RankFailedError("the tensor-parallel group was closed")
                return
            self._failure = RankFailedError(
                f"tensor-parallel group of {len(self._ranks)} ranks stopped: {reason}"
            )
            self._kill_all()
        callback = self.on_failure
        if callback is not None:
            callback(self._failure)

    def _kill_all(self) -> None:
        # the sockets stay open (another thread may be waiting on them); they close in close()
        for member in self._ranks:
            if member.process.poll() is None:
                member.process.kill()
        for member in self._ranks:
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(timeout=SHUTDOWN_GRACE_S)
        shutil.rmtree(self._store_dir, ignore_errors=True)
        os.write(self._wake_write, b"x")

    def _watch(self) -> None:
        # blocks until a rank's process ends or _kill_all wakes it; a rank ending on its own is a failure
        sentinels: dict[Any, int] = {member.sentinel: rank for rank, member in enumerate(self._ranks)}
        ready = wait([self._wake_read, *sentinels])
        ended = [sentinels[item] for item in ready if item in sentinels]
        if ended:
            self._fail(self._exit_reason(ended[0], "between steps"))

    def close(self) -> None:
        """Ask every rank to leave the group; kill those still there after SHUTDOWN_GRACE_S. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True  # from now on a rank ending is not a failure
            failed = self._failure is not None
        if not failed:
            payload = pickle.dumps(Shutdown())
            for member in self._ranks:
                with contextlib.suppress(OSError):
                    member.conn.send_bytes(payload)
            deadline = time.monotonic() + SHUTDOWN_GRACE_S
            for member in self._ranks:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        self._kill_all()
        self._watcher.join(timeout=SHUTDOWN_GRACE_S)
        for member in self._ranks:
            member.conn.close()
            os.close(member.sentinel)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def __repr__(self) -> str:
        state = "failed" if self._failure else "closed" if self._closing else "serving"
        return f"ParallelExecutor({len(self._ranks)} ranks on {list(self.devices)}, {state})"
