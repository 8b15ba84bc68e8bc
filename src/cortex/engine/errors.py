"""The engine's exception tree.

CortexError
└── EngineError                     model loading and runtime failures
    ├── ModelLoadError              a model folder cannot be turned into a model
    │   ├── UnsupportedModelError   config.json names an architecture cortex does not implement
    │   ├── WeightsError            a tensor is missing, unexpected or wrongly shaped
    │   └── ShardingError           the model cannot be split over tensor_parallel_size ranks
    ├── CacheExhaustedError         no KV block or state slot is left for a request
    ├── KernelUnavailableError      kernels='triton' was asked for where Triton cannot run
    └── RankFailedError             a tensor-parallel rank died, failed or stopped answering
"""

from __future__ import annotations

from cortex.errors import CortexError


class EngineError(CortexError):
    """Base class of the engine's errors."""


class ModelLoadError(EngineError):
    """A model folder cannot be loaded (bad config, unreadable files)."""


class UnsupportedModelError(ModelLoadError):
    """The checkpoint's ``model_type`` is not one cortex implements."""


class WeightsError(ModelLoadError):
    """A checkpoint tensor is missing, unexpected or has the wrong shape."""


class ShardingError(ModelLoadError):
    """A dimension of the model does not divide over the ranks, or the ranks' devices are unusable."""


class CacheExhaustedError(EngineError):
    """The KV cache or the recurrent-state pool has no room left."""


class KernelUnavailableError(EngineError):
    """The Triton kernels were asked for but cannot run here (no triton, or a CPU without its interpreter)."""


class RankFailedError(EngineError):
    """A tensor-parallel rank process exited, raised, or missed its deadline; every rank was stopped.

    Fatal for the engine that owns the ranks: it fails its requests and refuses new ones until the
    model is loaded again (``cortex.engine.parallel``).
    """
