"""What the neuron needs of an engine and of the code that builds one: the servers' seam to the library.

:class:`ServedEngine` is the part of :class:`cortex.Engine` the neuron uses; :class:`EngineLoader` reads
a model folder's facts (cheap, no weights) and builds an engine over it (slow, run in a thread). The
real loader is :class:`cortex.server.engine_loader.TorchEngineLoader`; tests plug in a scripted engine.
Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    """What discovery reports for a loadable model folder."""

    architecture: str
    estimated_memory_bytes: int
    max_model_len: int


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

    def close(self) -> None: ...


class EngineLoader(Protocol):
    """Reads a model folder's facts and tokenizer (cheap: no weights) and builds an engine over it
    (slow, run in a thread), reporting the load's progress to ``progress`` (a
    ``cortex.engine.progress.ProgressCallback``)."""

    def inspect(self, path: Path) -> ModelFacts: ...

    def tokenizer(self, path: Path) -> Tokenizer | None: ...

    def load(self, path: Path, progress: ProgressCallback) -> ServedEngine: ...
