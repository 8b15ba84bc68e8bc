"""One tensor-parallel rank: a process that loads its shard, joins the group and runs every step.

:func:`main` is the process's entry point (``python -m cortex.engine.parallel.worker CONN_FD
SENTINEL_FD``, started by ``executor.py``): the first fd is the rank's end of a socket pair to the
supervisor, the second a pipe it keeps open, unused, so the supervisor sees EOF when the rank ends.
The first message is the rank's ``RankSpec``. The rank forms the ``torch.distributed`` group (gloo
on CPU, NCCL on CUDA) through a ``FileStore`` in a private temp folder, loads its slices of the
weights (``sharding.RankShard``), installs the collectives (``parallel_layers.parallelize``),
allocates its caches from the plan the supervisor sends, then runs one ``StepInput`` per message with
the ordinary ``ModelRunner``: every rank runs the forward, rank 0 also samples.

Failure: the group's timeout bounds every collective, so a rank whose peer died or hangs raises
within ``collective_timeout_s``; any exception is reported as ``RankError`` and the process exits
with status 1. A rank waits for its next step on its socket, never in a collective, so an idle group
cannot time out; when the supervisor goes away the socket closes and the rank exits (status 0).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection

import torch
import torch.distributed as dist

from cortex.engine.cache.pools import allocate_caches
from cortex.engine.config import ModelConfig
from cortex.engine.models.cpu_layout import prepare_cpu_model
from cortex.engine.models.weights import load_model
from cortex.engine.parallel.parallel_layers import parallelize
from cortex.engine.parallel.protocol import (
    AllocateCaches,
    LoadProgress,
    RankError,
    RankLoaded,
    RankReady,
    RankSpec,
    RunStep,
    Shutdown,
    StepDone,
)
from cortex.engine.parallel.sharding import RankShard
from cortex.engine.progress import ProgressCallback
from cortex.engine.runner import ModelRunner

_SUPERVISOR_GONE = (EOFError, BrokenPipeError, ConnectionResetError)


def run_rank(spec: RankSpec, conn: Connection) -> None:
    """The rank process: serve steps until Shutdown or the supervisor's pipe closes."""
    try:
        _serve(spec, conn)
        dist.destroy_process_group()
        sys.stderr.flush()
        os._exit(0)  # nothing left to tear down that matters; torch's teardown takes seconds
    except _SUPERVISOR_GONE:
        os._exit(0)
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            conn.send(RankError(spec.rank, traceback.format_exc()))
        # skip interpreter teardown: a broken process group can block in its destructor
        os._exit(1)


def _load_progress(spec: RankSpec, conn: Connection) -> ProgressCallback:
    """Rank 0 hands each snapshot to the supervisor, which reports it as a one-device load reports its
    own; the other ranks load in step with rank 0 and report nothing."""
    if spec.rank != 0:
        return lambda _snapshot: None
    return lambda snapshot: conn.send(LoadProgress(snapshot))


def _init_group(spec: RankSpec, device: torch.device) -> None:
    store = dist.FileStore(spec.store_path, spec.world_size)  # type: ignore[attr-defined]
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        store=store,
        rank=spec.rank,
        world_size=spec.world_size,
        timeout=datetime.timedelta(seconds=spec.collective_timeout_s),
        device_id=device if device.type == "cuda" else None,
    )


def _serve(spec: RankSpec, conn: Connection) -> None:
    torch.set_num_threads(spec.num_threads)
    device = torch.device(spec.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _init_group(spec, device)
    shard = RankShard(ModelConfig.from_hf(spec.folder), spec.rank, spec.world_size)
    model, config = load_model(
        spec.folder,
        dtype=spec.dtype,
        device=device,
        kernels=spec.kernels,
        progress=_load_progress(spec, conn),
        shard=shard,
    )
    if device.type == "cpu":
        prepare_cpu_model(model, getattr(torch, spec.dtype))  # the CPU layout, as on one device
    parallelize(model, shard, group=dist.group.WORLD)
    with torch.inference_mode():
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        conn.send(RankLoaded(free_memory_bytes=free))
        allocate = conn.recv()
        if isinstance(allocate, Shutdown):
            return
        assert isinstance(allocate, AllocateCaches), f"expected AllocateCaches, got {allocate!r}"
        plan = allocate.plan
        caches = allocate_caches(
            config.layer_cache_specs(),
            plan,
            dtype=getattr(torch, spec.dtype),
            ssm_dtype=getattr(torch, spec.ssm_state_dtype),
            device=device,
        )
        runner = ModelRunner(
            model, caches, block_size=plan.block_size, vocab_size=config.vocab_size, device=device
        )
        conn.send(RankReady())
        while True:
            message = conn.recv()
            if isinstance(message, Shutdown):
                return
            assert isinstance(message, RunStep), f"expected RunStep, got {message!r}"
            if spec.rank == 0:
                conn.send(StepDone(runner.execute(message.step)))
            else:
                runner.forward(message.step)
                conn.send(StepDone(None))


def main(argv: Sequence[str] | None = None) -> None:
    conn_fd, sentinel_fd = (int(arg) for arg in (sys.argv[1:] if argv is None else argv))
    for fd in (conn_fd, sentinel_fd):
        os.set_inheritable(fd, False)  # kept from this rank's own children (compilers, ...)
    conn = Connection(conn_fd)
    try:
        spec = conn.recv()
    except _SUPERVISOR_GONE:
        os._exit(0)
    assert isinstance(spec, RankSpec), f"expected a RankSpec, got {spec!r}"
    run_rank(spec, conn)


if __name__ == "__main__":
    main()
