"""The messages between the supervisor (``executor.py``, in the engine's process) and each rank.

Each rank has its own ``multiprocessing`` pipe to the supervisor; messages are pickled dataclasses.
The conversation of one rank, in order::

    supervisor -> rank: (the process starts with a RankSpec)
    rank -> supervisor: LoadProgress ...       rank 0 only: after each tensor it has read
    rank -> supervisor: RankLoaded             weights loaded, group formed
    supervisor -> rank: AllocateCaches         the cache plan every rank allocates
    rank -> supervisor: RankReady
    supervisor -> rank: RunStep ...            one per engine step, the same StepInput to every rank
    rank -> supervisor: StepDone ...           rank 0's carries the sampled tokens; the others' None
    supervisor -> rank: Shutdown               (or the pipe closes: the rank exits either way)

A rank that raises sends ``RankError`` (its traceback) instead of its next answer, then exits.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex.engine.cache.cache_plan import CachePlan
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.progress import ProgressSnapshot
from cortex.engine.sampling import SamplerOutput
from cortex.engine.step_input import StepInput


@dataclass(frozen=True, slots=True)
class RankSpec:
    """Everything one rank process needs to start (its only argument)."""

    rank: int
    world_size: int
    folder: str
    device: str  # "cpu" or "cuda:N"
    dtype: str
    ssm_state_dtype: str  # the Gated DeltaNet state's dtype (EngineConfig.ssm_state_dtype)
    kernels: KernelBackend
    store_path: str  # the torch.distributed FileStore the group forms through (a private temp folder)
    collective_timeout_s: float  # every collective of the group fails after this long
    num_threads: int  # torch's intra-op threads on this rank


@dataclass(frozen=True, slots=True)
class LoadProgress:
    snapshot: ProgressSnapshot  # rank 0's; the others load in step with it


@dataclass(frozen=True, slots=True)
class RankLoaded:
    free_memory_bytes: int | None  # on CUDA, what is free on the rank's device after the weights


@dataclass(frozen=True, slots=True)
class AllocateCaches:
    plan: CachePlan


@dataclass(frozen=True, slots=True)
class RankReady:
    pass


@dataclass(frozen=True, slots=True)
class RunStep:
    step: StepInput


@dataclass(frozen=True, slots=True)
class StepDone:
    output: SamplerOutput | None


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class RankError:
    rank: int
    message: str  # the rank's traceback


RankMessage = LoadProgress | RankLoaded | RankReady | StepDone | RankError
SupervisorMessage = AllocateCaches | RunStep | Shutdown
