"""What the neuron needs of an engine and of the code that builds one: the servers' seam to the library.

:class:`ServedEngine` is the part of :class:`cortex.Engine` the neuron uses; :class:`EngineLoader` reads
a model folder's facts (cheap, no weights) and builds an engine over it (slow, run in a thread). The
real loader is :class:`cortex.server.engine_loader.TorchEngineLoader`; tests plug in a scripted engine.
Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cortex.engine.delta_stream import DeltaStream
    from cortex.engine.progress import ProgressCallback
    from cortex.engine.sampling_params import SamplingParams
    from cortex.engine.stats import EngineStats
    from cortex.engine.text.tokenizer import Tokenizer


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What discovery reports for a loadable model folder.

    ``estimated_memory_bytes`` is the need on one device. For each split N > 1 the neuron could use
    (tensor parallelism, up to its ``max_tensor_parallel``), ``split_memory_bytes[N]`` is the need of
    *each* of the N devices (the rank's shard of the weights plus its own cache budget, so N times it
    is more than the one-device figure), or ``split_errors[N]`` says which dimension does not divide.
    """

    architecture: str
    estimated_memory_bytes: int
    max_model_len: int
    split_memory_bytes: Mapping[int, int] = field(default_factory=dict)
    split_errors: Mapping[int, str] = field(default_factory=dict)

    def memory_per_device(self, tensor_parallel: int) -> int | None:
        """Bytes each of ``tensor_parallel`` devices needs; None when the model does not split so."""
        if tensor_parallel == 1:
            return self.estimated_memory_bytes
        return self.split_memory_bytes.get(tensor_parallel)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """How to load a model: over how many ranks, on which devices (``"cpu"`` or ``"cuda:N"`` each)."""

    devices: tuple[str, ...]

    @property
    def tensor_parallel(self) -> int:
        return len(self.devices)


class ServedEngine(Protocol):
    """An engine the neuron serves: a prompt's text or ids in, its deltas streamed out, aborted by
    closing the stream. Chat turns run over it through :mod:`cortex.engine.text.chat`."""

    @property
    def tokenizer(self) -> Tokenizer | None: ...

    @property
    def max_model_len(self) -> int: ...

    async def add_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        turn_boundary: int | None = None,
    ) -> DeltaStream:
        """Validate (the context length included) and queue a request; its deltas come from the stream."""
        ...

    def stats(self) -> EngineStats: ...

    @property
    def failure(self) -> BaseException | None:
        """Why the engine can no longer serve (a tensor-parallel rank failed); None while it serves."""
        ...

    def close(self) -> None: ...


class EngineLoader(Protocol):
    """Reads a model folder's facts and tokenizer (cheap: no weights) and builds an engine over it
    (slow, run in a thread) as ``plan`` says, reporting the load's progress to ``progress`` (a
    ``cortex.engine.progress.ProgressCallback``)."""

    def inspect(self, path: Path) -> ModelFacts: ...

    def tokenizer(self, path: Path) -> Tokenizer | None: ...

    def load(self, path: Path, plan: LoadPlan, progress: ProgressCallback) -> ServedEngine: ...
