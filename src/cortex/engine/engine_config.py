"""EngineConfig: the runtime knobs of one Engine (batching, cache budget, device), frozen and validated.

Values derived from it and from the model (the number of KV blocks and state slots, the effective
``max_model_len``) live in :class:`cortex.engine.cache.cache_plan.CachePlan`, never written back here.
This module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cortex.engine.kernels.selection import check_kernels_option
from cortex.errors import InvalidRequestError

SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
SUPPORTED_SSM_STATE_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How an Engine batches and caches.

    max_num_seqs: requests running at once (each holds one recurrent-state slot).
    max_model_len: prompt + output tokens per request; ``None`` means the model's
        ``max_position_embeddings``, lowered to what the cache budget can hold for one request.
    max_num_batched_tokens: tokens (prefill + decode) in one forward step.
    prefill_chunk_size: prompt tokens of one request in one step; longer prompts are prefilled in chunks.
        ``None`` means ``max_num_batched_tokens`` (see :attr:`chunk_size`).
    block_size: tokens per KV-cache page.
    cache_memory_bytes: bytes for the KV pages and state slots together; ``None`` means 1 GiB on CPU and
        80% of the free memory on CUDA, in both cases at most what ``max_num_seqs`` full-length requests need.
    device: "cpu", "cuda" or "cuda:N". dtype: the model's dtype name.
    ssm_state_dtype: the Gated DeltaNet state's dtype, "float32" (default, as the checkpoints'
        ``mamba_ssm_dtype`` asks) or "bfloat16" (half the state bytes a decode step reads and writes, at
        some precision; see docs/kernels.md). The conv history is kept in the model's dtype.
    kernels: the ops' implementation, "auto" (Triton kernels on CUDA, PyTorch references on CPU), "triton"
        or "ref"; ``None`` means the ``CORTEX_KERNELS`` environment variable, else "auto"
        (``cortex.engine.kernels.selection``).
    num_threads: the CPU's intra-op threads; ``None`` means one per physical core (ignored on CUDA).
    enable_prefix_caching: share full KV blocks between requests with the same prefix and, for models with
        Gated DeltaNet layers, snapshot their state at block boundaries so a request resumes after the
        longest cached prefix (see docs/engine.md, "Prefix caching"). Outputs are the same either way.
    snapshot_interval_blocks: during a long prefill, snapshot the state every this many KV blocks (besides
        the prompt's last block boundary and its turn boundary).
    snapshot_memory_fraction: share of ``cache_memory_bytes`` set aside for state snapshots (hybrid models,
        prefix caching on); snapshots also take what the pages and slots leave over.
    tensor_parallel_size: ranks the model is split over, one process each (``cortex.engine.parallel``);
        1 runs the model in the engine's own process.
    devices: one device per rank (e.g. ``("cuda:2", "cuda:3")``); empty means consecutive devices from
        ``device`` (``"cuda"`` is ``cuda:0``), or every rank on ``"cpu"``.
    rank_timeout_s: with tensor_parallel_size > 1, how long a step may take on every rank before the
        ranks are declared wedged and stopped; also every collective's timeout inside the ranks.
    load_timeout_s: with tensor_parallel_size > 1, how long the ranks may take to load their shards.
    cuda_graph_batch_sizes: the padded batch sizes whose decode steps are captured as CUDA graphs at
        load (CUDA with the Triton kernels, one process: tensor-parallel ranks run eagerly); ``None``
        means 1, 2, 4, 8, 16, 24, 32, 48, ... up to ``max_num_seqs``; ``()`` turns CUDA graphs off.
        Larger decode batches run eagerly.
    """

    max_num_seqs: int = 32
    max_model_len: int | None = None
    max_num_batched_tokens: int = 4096
    prefill_chunk_size: int | None = None
    block_size: int = 16
    cache_memory_bytes: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    ssm_state_dtype: str = "float32"
    kernels: str | None = None
    num_threads: int | None = None
    enable_prefix_caching: bool = True
    snapshot_interval_blocks: int = 64
    snapshot_memory_fraction: float = 0.2
    tensor_parallel_size: int = 1
    devices: tuple[str, ...] = ()
    rank_timeout_s: float = 60.0
    load_timeout_s: float = 900.0
    cuda_graph_batch_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}", param=name)

        for name in (
            "max_num_seqs",
            "max_model_len",
            "max_num_batched_tokens",
            "prefill_chunk_size",
            "block_size",
            "cache_memory_bytes",
            "num_threads",
            "snapshot_interval_blocks",
            "tensor_parallel_size",
        ):
            positive(name)
        if not isinstance(self.enable_prefix_caching, bool):
            raise InvalidRequestError(
                f"enable_prefix_caching must be true or false, got {self.enable_prefix_caching!r}",
                param="enable_prefix_caching",
            )
        fraction = self.snapshot_memory_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
            raise InvalidRequestError(
                f"snapshot_memory_fraction must be a number in [0, 1), got {fraction!r}",
                param="snapshot_memory_fraction",
            )
        for name in ("rank_timeout_s", "load_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidRequestError(
                    f"{name} must be a positive number of seconds, got {value!r}", param=name
                )
        if self.prefill_chunk_size is not None and self.prefill_chunk_size > self.max_num_batched_tokens:
            raise InvalidRequestError(
                f"prefill_chunk_size ({self.prefill_chunk_size}) must not exceed "
                f"max_num_batched_tokens ({self.max_num_batched_tokens})",
                param="prefill_chunk_size",
            )
        if self.dtype not in SUPPORTED_DTYPES:
            raise InvalidRequestError(
                f"dtype must be one of {', '.join(SUPPORTED_DTYPES)}, got {self.dtype!r}", param="dtype"
            )
        if self.ssm_state_dtype not in SUPPORTED_SSM_STATE_DTYPES:
            raise InvalidRequestError(
                f"ssm_state_dtype must be one of {', '.join(SUPPORTED_SSM_STATE_DTYPES)}, "
                f"got {self.ssm_state_dtype!r}",
                param="ssm_state_dtype",
            )
        if self.kernels is not None:
            check_kernels_option(self.kernels)
        if self.cuda_graph_batch_sizes is not None:
            sizes = self.cuda_graph_batch_sizes
            if not isinstance(sizes, tuple) or any(
                isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in sizes
            ):
                raise InvalidRequestError(
                    f"cuda_graph_batch_sizes must be a tuple of positive integers, got {sizes!r}",
                    param="cuda_graph_batch_sizes",
                )
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise InvalidRequestError(
                f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}", param="device"
            )
        self._check_devices()

    def _check_devices(self) -> None:
        devices = self.devices
        if not devices:
            return
        if len(devices) != self.tensor_parallel_size:
            raise InvalidRequestError(
                f"devices lists {len(devices)} devices for tensor_parallel_size={self.tensor_parallel_size}",
                param="devices",
            )
        for device in devices:
            if not (device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit())):
                raise InvalidRequestError(
                    f"each device must be 'cpu' or 'cuda:N', got {device!r}", param="devices"
                )
        if len({d.split(":")[0] for d in devices}) > 1:
            raise InvalidRequestError("devices must be all 'cpu' or all CUDA devices", param="devices")
        if devices[0].split(":")[0] != self.device.split(":")[0]:
            raise InvalidRequestError(
                f"device is {self.device!r} but devices are {list(devices)}: use the same kind",
                param="devices",
            )
        cuda = [d for d in devices if d != "cpu"]
        if len(set(cuda)) != len(cuda):
            raise InvalidRequestError(
                f"each rank needs its own CUDA device, got {list(devices)}", param="devices"
            )

    @property
    def rank_devices(self) -> tuple[str, ...]:
        """The device of each tensor-parallel rank (one entry when tensor_parallel_size is 1)."""
        if self.devices:
            return self.devices
        if self.device == "cpu":
            return ("cpu",) * self.tensor_parallel_size
        first = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        return tuple(f"cuda:{first + rank}" for rank in range(self.tensor_parallel_size))

    @property
    def chunk_size(self) -> int:
        """The effective prefill chunk size."""
        return self.prefill_chunk_size or self.max_num_batched_tokens
