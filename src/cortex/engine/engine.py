"""Engine: the public inference API of one model (generate, stream, chat, abort, stats).

The model runs on one device in this process, or split over ``tensor_parallel_size`` rank processes
(``cortex.engine.parallel``): the scheduler, the requests and the text stay here either way, and each
step's ``StepInput`` goes to an in-process ``ModelRunner`` or to every rank through a
``ParallelExecutor``. A rank that fails makes the engine fail for good (``failure``): its requests end
with an ``EngineError`` and new ones are refused until the model is loaded again.

A request goes ``_make_request`` (validate, resolve params) -> ``Scheduler`` (blocks, slot, chunked
prefill, preemption) -> ``StepInput`` (the step as plain data) -> ``ModelRunner`` (tensors, forward,
sample) -> ``Scheduler.update`` (append,
stop checks) -> ``_emit`` (a :class:`RequestStream`: incremental text, stop strings, a
:class:`StreamDelta` to the request's sink). One background thread steps the scheduler while there is
work, and only then; every caller (the blocking ``generate`` and any number of asyncio ``stream``
consumers) only adds requests and receives deltas through a thread-safe sink. ``self._lock`` guards
the scheduler and the tracked requests; it is not held during the forward, so ``abort`` returns at
once (an aborted request's blocks may still be written by the step in flight, but nothing else can
own them before that step ends).

No request fails another's step: a row whose sampling raises fails only its request (``sample``), as
does an error turning a request's token into text; a forward step that raises fails its request if it
ran alone, and otherwise goes to the :class:`Quarantine`, which reruns its requests apart until the one
that fails alone is found. The engine keeps serving throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.cache_plan import CachePlan, plan_cache
from cortex.engine.cache.layer_cache import LinearStateSpec
from cortex.engine.cache.pools import allocate_caches
from cortex.engine.cache.prefix_cache import PrefixCache
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.cache.snapshot_pool import SnapshotPool
from cortex.engine.config import ModelConfig
from cortex.engine.context_window import output_budget
from cortex.engine.cpu import CPU_STEP_LOCK, cpu_capabilities, num_threads_for
from cortex.engine.cuda_graphs import default_capture_sizes
from cortex.engine.delta_stream import DeltaStream
from cortex.engine.engine_config import EngineConfig
from cortex.engine.errors import EngineError, RankFailedError
from cortex.engine.kernels.selection import resolve_kernels
from cortex.engine.output_processor import OutputCollector, RequestStream, Sink, token_logprobs
from cortex.engine.outputs import ChatDelta, ChatReply, RequestOutput, StreamDelta
from cortex.engine.parallel.executor import ParallelExecutor
from cortex.engine.progress import ProgressCallback
from cortex.engine.quarantine import Quarantine
from cortex.engine.request import Request
from cortex.engine.runner import Model, ModelRunner
from cortex.engine.sampling import RowLogprobs
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.scheduler import ScheduledBatch, Scheduler
from cortex.engine.stats import EngineStats, ThroughputMeter
from cortex.engine.step_input import build_step_input
from cortex.engine.structured.backend import GrammarBackend
from cortex.engine.structured.errors import UnsupportedSchemaError
from cortex.engine.text.tokenizer import Tokenizer
from cortex.errors import InvalidRequestError

log = logging.getLogger("cortex.engine")

CPU_CACHE_MEMORY_BYTES = 1 << 30
CUDA_CACHE_MEMORY_FRACTION = 0.8  # of the free device memory once the weights are loaded


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name)
    assert isinstance(dtype, torch.dtype)
    return dtype


def default_cache_memory_bytes(device: torch.device) -> int:
    """1 GiB on CPU; on CUDA, a fixed fraction of what is free now (call after loading the weights)."""
    if device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
        return int(free_bytes * CUDA_CACHE_MEMORY_FRACTION)
    return CPU_CACHE_MEMORY_BYTES


class Engine:
    """One model, with continuous batching. Thread-safe; use as a context manager or close().

    ``model`` is a forward callable run in this process, or a started ``ParallelExecutor`` (whose ranks
    the engine then owns: it sizes and allocates their caches, and closes them).
    """

    def __init__(
        self,
        model: Model | ParallelExecutor,
        model_config: ModelConfig,
        config: EngineConfig | None = None,
        *,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.config = config = config or EngineConfig()
        if config.max_model_len is not None and config.max_model_len > model_config.max_position_embeddings:
            raise InvalidRequestError(
                f"max_model_len={config.max_model_len} exceeds the model's max_position_embeddings "
                f"({model_config.max_position_embeddings})",
                param="max_model_len",
            )
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.device = torch.device(config.device)
        self.kernels = resolve_kernels(config.kernels, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(num_threads_for(cpu_capabilities(), config.num_threads))
        self.devices = config.rank_devices  # the device of each rank (one entry without parallelism)
        dtype = _torch_dtype(config.dtype)
        ssm_dtype = _torch_dtype(config.ssm_state_dtype)
        parallel = model if isinstance(model, ParallelExecutor) else None
        if parallel is not None:
            # every rank holds the same shapes; budgets are per rank (each has its own device)
            specs = parallel.rank_config.layer_cache_specs()
            free = parallel.free_memory_bytes
            default_budget = (
                CPU_CACHE_MEMORY_BYTES if free is None else int(free * CUDA_CACHE_MEMORY_FRACTION)
            )
        else:
            specs = model_config.layer_cache_specs()
            default_budget = default_cache_memory_bytes(self.device)
        hybrid = any(isinstance(spec, LinearStateSpec) for spec in specs)
        self.cache_plan: CachePlan = plan_cache(
            specs,
            cache_memory_bytes=config.cache_memory_bytes or default_budget,
            block_size=config.block_size,
            dtype_bytes=dtype.itemsize,
            ssm_dtype_bytes=ssm_dtype.itemsize,
            max_num_seqs=config.max_num_seqs,
            max_model_len=config.max_model_len,
            model_max_len=model_config.max_position_embeddings,
            snapshot_memory_fraction=(
                config.snapshot_memory_fraction if config.enable_prefix_caching and hybrid else None
            ),
        )
        self.max_model_len = self.cache_plan.max_model_len
        self._prefix_cache = self._make_prefix_cache(hybrid) if config.enable_prefix_caching else None
        self._scheduler = Scheduler(
            block_allocator=(
                self._prefix_cache.block_allocator
                if self._prefix_cache is not None
                else BlockAllocator(self.cache_plan.num_blocks)
            ),
            slot_allocator=SlotAllocator(self.cache_plan.num_slots),
            block_size=config.block_size,
            max_num_seqs=min(config.max_num_seqs, self.cache_plan.num_slots),
            max_num_batched_tokens=config.max_num_batched_tokens,
            prefill_chunk_size=config.chunk_size,
            max_model_len=self.max_model_len,
            prefix_cache=self._prefix_cache,
        )
        self._runner: ModelRunner | ParallelExecutor
        if parallel is not None:
            parallel.allocate(self.cache_plan)
            self._runner = parallel
        else:
            assert not isinstance(model, ParallelExecutor)
            graph_sizes = self._cuda_graph_sizes(config)
            # CUDA graphs pad decode batches with rows whose state lives in a spare slot nobody owns
            caches = allocate_caches(
                specs,
                self.cache_plan,
                dtype=dtype,
                ssm_dtype=ssm_dtype,
                device=self.device,
                spare_slots=1 if graph_sizes else 0,
            )
            runner = ModelRunner(
                model,
                caches,
                block_size=config.block_size,
                vocab_size=model_config.vocab_size,
                device=self.device,
            )
            if graph_sizes:
                with torch.inference_mode():
                    runner.capture_decode_graphs(
                        graph_sizes,
                        max_model_len=self.max_model_len,
                        padding_slot=self.cache_plan.num_slots + self.cache_plan.num_snapshots,
                    )
            self._runner = runner
        self._parallel = parallel
        # generation_config's eos ids, plus the tokenizer's own eos (as vLLM does)
        self._eos_token_ids = frozenset(model_config.eos_token_ids) | frozenset(
            tokenizer.eos_token_ids if tokenizer is not None else ()
        )
        self._tracked: dict[str, RequestStream] = {}
        self._released_ids: list[str] = []  # finished since the last step; the next StepInput lists them
        self._grammar_backend: GrammarBackend | str | None = None  # or why there is none
        self._grammar_lock = threading.Lock()
        if tokenizer is not None and parallel is None:
            # now, at load: llguidance's view of a 248k vocabulary takes seconds holding the GIL, which on
            # the first structured request would stall every other request in the process
            with contextlib.suppress(UnsupportedSchemaError):  # said again to each structured request
                self.grammar_backend()
        self._lock = threading.RLock()  # re-entered when a sink aborts its own request
        self._thread: threading.Thread | None = None
        self._closed = False
        self._meter = ThroughputMeter()
        self._total_prompt_tokens = 0
        self._total_generated_tokens = 0
        self._num_preemptions = 0
        self._num_failed_steps = 0
        self._quarantine = Quarantine()
        self._failure: RankFailedError | None = None
        if parallel is not None:
            parallel.on_failure = self._ranks_failed
            self._failure = parallel.failure  # a rank that failed before the callback was set

    def _make_prefix_cache(self, hybrid: bool) -> PrefixCache:
        plan = self.cache_plan
        snapshots = SnapshotPool(plan.num_snapshots, first_row=plan.num_slots) if hybrid else None
        if hybrid and plan.num_snapshots == 0:
            log.warning(
                "prefix caching is not effective for this model: its Gated DeltaNet state can only resume "
                "from a snapshot, and the cache budget (%d bytes) leaves no room for one (%d bytes each); "
                "raise cache_memory_bytes or snapshot_memory_fraction",
                plan.total_bytes,
                plan.bytes_per_slot,
            )
        return PrefixCache(
            BlockAllocator(plan.num_blocks, on_evict=snapshots.drop if snapshots is not None else None),
            snapshots,
            block_size=plan.block_size,
            snapshot_interval_blocks=self.config.snapshot_interval_blocks,
            bytes_per_snapshot=plan.bytes_per_slot,
        )

    def _cuda_graph_sizes(self, config: EngineConfig) -> tuple[int, ...]:
        """The decode batch sizes to capture: none off CUDA or with the reference kernels."""
        if self.device.type != "cuda" or self.kernels != "triton":
            return ()
        max_num_seqs = min(config.max_num_seqs, self.cache_plan.num_slots)
        sizes = config.cuda_graph_batch_sizes
        if sizes is None:
            return default_capture_sizes(max_num_seqs)
        return tuple(sorted({size for size in sizes if size <= max_num_seqs}))

    @property
    def cuda_graph_sizes(self) -> tuple[int, ...]:
        """The decode batch sizes replayed from CUDA graphs (empty: none)."""
        graphs = self._runner.decode_graphs if isinstance(self._runner, ModelRunner) else None
        return graphs.sizes if graphs is not None else ()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        ssm_state_dtype: str = "float32",
        max_num_seqs: int = 32,
        max_model_len: int | None = None,
        cache_memory_bytes: int | None = None,
        max_num_batched_tokens: int = 4096,
        prefill_chunk_size: int | None = None,
        block_size: int = 16,
        kernels: str | None = None,
        num_threads: int | None = None,
        enable_prefix_caching: bool = True,
        snapshot_interval_blocks: int = 64,
        snapshot_memory_fraction: float = 0.2,
        progress: ProgressCallback | None = None,
        tensor_parallel_size: int = 1,
        devices: Sequence[str] | None = None,
        rank_timeout_s: float = 60.0,
        load_timeout_s: float = 900.0,
        cuda_graph_batch_sizes: tuple[int, ...] | None = None,
    ) -> Engine:
        """Load a Hugging Face model folder (config.json, safetensors, optional tokenizer.json).

        ``kernels``: "auto" | "triton" | "ref" (None: ``CORTEX_KERNELS``, else "auto"); see EngineConfig,
        whose fields the other keyword arguments are. ``progress`` receives the weights' loading progress
        (``cortex.engine.progress``; None: shown on a terminal, else logged every 10 s).
        On the CPU the weights are laid out for this CPU (``cortex.engine.cpu``): a bf16 checkpoint
        computes in bf16 where the CPU has bf16 arithmetic, else in fp32 over the bf16 weights.
        ``tensor_parallel_size > 1`` splits the model over that many rank processes, on ``devices``
        (default: consecutive devices from ``device``); see docs/parallel.md for the timeouts.
        """
        from cortex.engine.models import load_model
        from cortex.engine.models.cpu_layout import prepare_cpu_model

        if devices:
            device = devices[0]  # the kind (and first device) of the ranks'
        dtype_name = str(dtype).removeprefix("torch.")
        # resolved once here, so the model and the engine agree even if the environment changes
        backend = resolve_kernels(kernels, device)
        config = EngineConfig(
            max_num_seqs=max_num_seqs,
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            prefill_chunk_size=prefill_chunk_size,
            block_size=block_size,
            cache_memory_bytes=cache_memory_bytes,
            device=device,
            dtype=dtype_name,
            ssm_state_dtype=ssm_state_dtype,
            kernels=backend,
            num_threads=num_threads,
            enable_prefix_caching=enable_prefix_caching,
            snapshot_interval_blocks=snapshot_interval_blocks,
            snapshot_memory_fraction=snapshot_memory_fraction,
            tensor_parallel_size=tensor_parallel_size,
            devices=tuple(devices or ()),
            rank_timeout_s=rank_timeout_s,
            load_timeout_s=load_timeout_s,
            cuda_graph_batch_sizes=cuda_graph_batch_sizes,
        )
        tokenizer = Tokenizer.from_folder(path)
        if tensor_parallel_size == 1:
            model, model_config = load_model(
                path, dtype=dtype_name, device=device, kernels=backend, progress=progress
            )
            if torch.device(device).type == "cpu":
                prepare_cpu_model(model, _torch_dtype(dtype_name))
            return cls(model, model_config, config, tokenizer=tokenizer)
        model_config = ModelConfig.from_hf(path)
        executor = ParallelExecutor.start(path, model_config, config, kernels=backend, progress=progress)
        try:
            return cls(executor, model_config, config, tokenizer=tokenizer)
        except BaseException:
            executor.close()
            raise

    # ---- requests -------------------------------------------------------------------------------

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError(
                    "this model folder has no tokenizer.json: pass token ids instead of text", param="prompt"
                )
            ids = self.tokenizer.encode(prompt)
        else:
            ids = list(prompt)
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise InvalidRequestError("a prompt is a string or a list of token ids", param="prompt")
        if not ids:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        vocab_size = self.model_config.vocab_size
        if any(not 0 <= t < vocab_size for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab_size})", param="prompt")
        return ids

    def _make_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None,
        request_id: str | None,
        turn_boundary: int | None = None,
    ) -> Request:
        prompt_ids = self._prompt_ids(prompt)
        if turn_boundary is not None and (
            isinstance(turn_boundary, bool)
            or not isinstance(turn_boundary, int)
            or not 0 <= turn_boundary <= len(prompt_ids)
        ):
            raise InvalidRequestError(
                f"turn_boundary must be a prompt position (0..{len(prompt_ids)}), got {turn_boundary!r}",
                param="turn_boundary",
            )
        params = (params or SamplingParams()).resolve(self.model_config.generation_defaults)
        if params.stop and self.tokenizer is None:
            raise InvalidRequestError("stop strings need a tokenizer; use stop_token_ids", param="stop")
        max_tokens = output_budget(
            num_prompt_tokens=len(prompt_ids), max_tokens=params.max_tokens, max_model_len=self.max_model_len
        )
        structured = params.structured_outputs
        if structured is not None and self._parallel is not None:
            # the matcher must sit beside the sampler, which runs in rank 0's process (step_input.py)
            raise InvalidRequestError(
                "structured outputs (response_format, forced tool calls) are not supported yet with "
                f"tensor_parallel_size={self.config.tensor_parallel_size}; load the model with 1",
                param="response_format",
            )
        return Request(
            request_id=request_id or uuid.uuid4().hex,
            prompt_token_ids=prompt_ids,
            params=params,
            max_tokens=max_tokens,
            eos_token_ids=self._eos_token_ids,
            grammar=None
            if structured is None
            else self.grammar_backend().matcher(structured, max_tokens=max_tokens),
            turn_boundary=turn_boundary,
        )

    def grammar_backend(self) -> GrammarBackend:
        """The llguidance view of this engine's tokenizer (built once, at load: a few seconds)."""
        with self._grammar_lock:
            if self._grammar_backend is None:
                if self.tokenizer is None:
                    raise InvalidRequestError(
                        "structured outputs need the model's tokenizer.json", param="response_format"
                    )
                # the tokenizer's own eos first: a grammar that ends on EOS is closed with it
                eos_ids = dict.fromkeys([*self.tokenizer.eos_token_ids, *sorted(self._eos_token_ids)])
                try:
                    self._grammar_backend = GrammarBackend.for_tokenizer(
                        self.tokenizer, vocab_size=self.model_config.vocab_size, eos_token_ids=list(eos_ids)
                    )
                except UnsupportedSchemaError as exc:
                    self._grammar_backend = str(exc)  # tried once; every structured request is told why
            if isinstance(self._grammar_backend, str):
                raise UnsupportedSchemaError(self._grammar_backend, param="response_format")
            return self._grammar_backend

    def _submit(self, request: Request, sink: Sink) -> None:
        stream = RequestStream.create(request, sink, self.tokenizer)
        with self._lock:
            if self._closed:
                raise EngineError("the engine is closed")
            if self._failure is not None:
                raise EngineError(f"the engine has failed and must be loaded again: {self._failure}")
            if request.request_id in self._tracked:
                raise InvalidRequestError(f"request id {request.request_id!r} is in use", param="request_id")
            self._scheduler.add(request)
            self._tracked[request.request_id] = stream
            self._total_prompt_tokens += request.num_prompt_tokens
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="cortex-engine", daemon=True)
                self._thread.start()

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its blocks and slot; its consumer gets a final "abort" delta.

        Returns False when the id is unknown or already finished.
        """
        with self._lock:
            aborted = self._scheduler.abort([request_id])
            for request in aborted:
                self._released_ids.append(request.request_id)
                self._tracked.pop(request.request_id).send([], "", None)
            return bool(aborted)

    # ---- the step loop (background thread) --------------------------------------------------------

    def _loop(self) -> None:
        # The thread ends when the work does (and _submit starts a new one), so an idle Engine holds no
        # thread that would keep it, its model and its caches alive after its last user lets go.
        with torch.inference_mode():
            while True:
                with self._lock:
                    if self._closed or self._failure is not None or not self._scheduler.has_work():
                        self._thread = None
                        return
                try:
                    self._step()
                except Exception as exc:
                    self._fail_all(f"a forward step failed: {exc!r}", cause=exc)

    def _step(self) -> None:
        with self._lock:
            batch = self._scheduler.schedule(only=self._quarantine.current())
            if batch.is_empty:
                raise EngineError(f"the scheduler made no progress ({self._scheduler.num_waiting} waiting)")
            self._num_preemptions += len(batch.preempted)
            step = build_step_input(batch, self._released_ids)
            self._released_ids.clear()
        # engines sharing a process take turns on the CPU's cores rather than oversubscribing them
        with CPU_STEP_LOCK if self.device.type == "cpu" else contextlib.nullcontext():
            start_s = time.perf_counter()
            try:
                output = self._runner.execute(step)
            except RankFailedError:
                return  # fatal, not the batch's fault: the executor's callback failed every request
            except Exception as exc:
                self._step_failed(batch, exc)
                return
            end_s = time.perf_counter()
        with self._lock:
            self._meter.record(
                start_s=start_s,
                end_s=end_s,
                num_prefill_tokens=batch.num_prefill_tokens,
                num_decode_tokens=batch.num_decode_tokens,
            )
            sampling_seqs = [seq for seq in batch.seqs if seq.samples]
            for row, error in output.errors.items():
                self._fail(sampling_seqs[row].request, f"sampling failed: {error!r}", cause=error)
            logprobs = self._logprobs_by_request(batch, output.logprobs)
            for request in self._scheduler.update(batch, output.token_ids):
                self._total_generated_tokens += 1
                try:
                    self._emit(request, logprobs.get(request.request_id))
                except Exception as exc:
                    self._fail(request, f"turning a token into text failed: {exc!r}", cause=exc)
            self._quarantine.step_succeeded(batch)
            self._released_ids.extend(seq.request.request_id for seq in batch.seqs if seq.request.is_finished)

    @staticmethod
    def _logprobs_by_request(
        batch: ScheduledBatch, rows: Sequence[RowLogprobs | None]
    ) -> dict[str, RowLogprobs | None]:
        sampling = [seq.request.request_id for seq in batch.seqs if seq.samples]
        return dict(zip(sampling, rows, strict=True))

    def _emit(self, request: Request, row_logprobs: RowLogprobs | None) -> None:
        """Send a request's newest token to its consumer; a completed stop string finishes the request."""
        stream = self._tracked[request.request_id]
        token_id = request.output_token_ids[-1]
        text, matched = stream.new_text(token_id, finishing=request.is_finished)
        if matched is not None:
            self._scheduler.finish(request, "stop", matched)
            request.finish_reason, request.stop_reason = "stop", matched  # also if it had just ended
        if request.is_finished:
            del self._tracked[request.request_id]
        stream.send([token_id], text, token_logprobs(self.tokenizer, token_id, row_logprobs))

    def _step_failed(self, batch: ScheduledBatch, error: Exception) -> None:
        """A forward step raised: fail its request if it ran alone, else requeue its requests (their
        caches may be half-written) into the quarantine, which runs them apart next."""
        log.warning("a forward step of %d requests failed", len(batch.seqs), exc_info=error)
        with self._lock:
            self._scheduler.discard(batch)
            self._num_failed_steps += 1
            culprit = self._quarantine.step_failed(batch)
            for seq in batch.seqs:
                if seq.request is culprit:
                    self._fail(culprit, f"a forward step failed: {error!r}", cause=error)
                elif not seq.request.is_finished:
                    self._scheduler.requeue(seq.request)

    def _fail(self, request: Request, message: str, *, cause: BaseException) -> None:
        """End one request now; its consumer gets EngineError(message) from ``cause``. Under the lock."""
        self._scheduler.finish(request, "abort")
        self._released_ids.append(request.request_id)
        stream = self._tracked.pop(request.request_id, None)
        if stream is not None:
            error = EngineError(message)
            error.__cause__ = cause
            stream.sink(error)

    def _ranks_failed(self, error: RankFailedError) -> None:
        """The executor stopped its ranks (from the step thread or its watcher): fail for good."""
        with self._lock:
            self._failure = error
        self._fail_all(f"the model's ranks failed: {error}", cause=error)

    @property
    def failure(self) -> RankFailedError | None:
        """Why the engine can no longer run (a tensor-parallel rank failed); None while it serves."""
        return self._failure

    def _fail_all(self, message: str, *, cause: BaseException | None = None) -> None:
        """End every request in flight; each consumer gets its own EngineError(message) from ``cause``."""
        with self._lock:
            streams = list(self._tracked.values())
            self._tracked.clear()
            request_ids = [stream.request.request_id for stream in streams]
            self._scheduler.abort(request_ids)
            self._released_ids.extend(request_ids)
        for stream in streams:
            error = EngineError(message)
            error.__cause__ = cause
            stream.sink(error)

    # ---- public API -------------------------------------------------------------------------------

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        turn_boundaries: Sequence[int | None] | None = None,
    ) -> list[RequestOutput]:
        """Run prompts (strings, or lists of token ids) to completion; outputs in the prompts' order.

        ``turn_boundaries``: one prefix-cache hint per prompt (see :meth:`stream`), or None."""
        prompt_list: list[str | Sequence[int]] = [prompts] if isinstance(prompts, str) else list(prompts)
        if prompt_list and isinstance(prompt_list[0], int):
            raise InvalidRequestError("pass a list of prompts: [[1, 2, 3]], not [1, 2, 3]", param="prompt")
        if params is None or isinstance(params, SamplingParams):
            params_list: list[SamplingParams | None] = [params] * len(prompt_list)
        else:
            params_list = list(params)
            if len(params_list) != len(prompt_list):
                raise InvalidRequestError(
                    f"got {len(params_list)} SamplingParams for {len(prompt_list)} prompts", param="params"
                )
        boundaries = list(turn_boundaries) if turn_boundaries is not None else [None] * len(prompt_list)
        if len(boundaries) != len(prompt_list):
            raise InvalidRequestError(
                f"got {len(boundaries)} turn_boundaries for {len(prompt_list)} prompts", param="turn_boundary"
            )
        requests = [
            self._make_request(p, sp, None, tb)
            for p, sp, tb in zip(prompt_list, params_list, boundaries, strict=True)
        ]
        collectors = [OutputCollector() for _ in requests]
        try:
            for request, collector in zip(requests, collectors, strict=True):
                self._submit(request, collector)
            for collector in collectors:
                collector.done.wait()
        finally:
            for request, collector in zip(requests, collectors, strict=True):
                if not collector.done.is_set():
                    self.abort(request.request_id)
        outputs = []
        for request, collector in zip(requests, collectors, strict=True):
            if collector.error is not None:
                raise collector.error
            assert collector.last is not None
            assert collector.last.finish_reason is not None
            outputs.append(
                RequestOutput(
                    request_id=request.request_id,
                    prompt_token_ids=request.prompt_token_ids,
                    token_ids=collector.token_ids,
                    text="".join(collector.text),
                    finish_reason=collector.last.finish_reason,
                    stop_reason=collector.last.stop_reason,
                    logprobs=collector.logprobs if request.params.logprobs is not None else None,
                    num_cached_tokens=collector.last.num_cached_tokens,
                )
            )
        return outputs

    async def add_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        turn_boundary: int | None = None,
    ) -> DeltaStream:
        """Validate a request and queue it now; its deltas come from the returned :class:`DeltaStream`.

        Bad input (such as a prompt that does not fit the context) raises here, before anything is
        queued, so a server can still answer with an error status. The caller must close the stream
        (``aclose``), which aborts the request if it has not finished. Tokenising a text prompt and
        building the grammar backend for the first structured request run off the event loop.
        ``turn_boundary``: see :meth:`stream`.
        """
        if params is not None and params.structured_outputs is not None:
            await asyncio.to_thread(self.grammar_backend)  # not on the event loop: it takes seconds
        if isinstance(prompt, str):  # tokenising a long text takes a while: not on the event loop
            request = await asyncio.to_thread(self._make_request, prompt, params, request_id, turn_boundary)
        else:
            request = self._make_request(prompt, params, request_id, turn_boundary)
        deltas = DeltaStream(
            request.request_id, num_prompt_tokens=request.num_prompt_tokens, abort=self.abort
        )
        self._submit(request, deltas.sink)
        return deltas

    async def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        turn_boundary: int | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """Yield a request's deltas as they are generated; the last one has ``finish_reason`` set.

        Validation errors raise on the first iteration. If the consumer stops early (``aclose()``, task
        cancelled, client disconnected) the request is aborted at once. Needs an asyncio event loop.
        ``turn_boundary`` (a hint, for the prefix cache): the prompt position up to which later prompts
        are expected to repeat this one, such as where a chat prompt's generation prompt starts; the
        engine keeps a state snapshot at the last block boundary at or before it.
        """
        deltas = await self.add_request(prompt, params, request_id=request_id, turn_boundary=turn_boundary)
        try:
            async for delta in deltas:
                yield delta
        finally:
            await deltas.aclose()

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> ChatReply:
        """Render the chat template, generate, and parse reasoning and tool calls (see docs/text.md)."""
        from cortex.engine.text.chat import chat

        return chat(self, messages, params, tools, **template_kwargs)

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> AsyncIterator[ChatDelta]:
        """The streaming twin of :meth:`chat`."""
        from cortex.engine.text.chat import stream_chat

        return stream_chat(self, messages, params, tools, **template_kwargs)

    def stats(self) -> EngineStats:
        with self._lock:
            prefill_rate, decode_rate = self._meter.rates(time.perf_counter())
            scheduler = self._scheduler
            return EngineStats(
                num_running=scheduler.num_running,
                num_waiting=scheduler.num_waiting,
                num_kv_blocks_used=scheduler.block_allocator.num_used,
                num_kv_blocks_total=scheduler.block_allocator.num_blocks,
                num_state_slots_used=scheduler.slot_allocator.num_used,
                num_state_slots_total=scheduler.slot_allocator.num_slots,
                prefill_tokens_per_s=prefill_rate,
                decode_tokens_per_s=decode_rate,
                total_prompt_tokens=self._total_prompt_tokens,
                total_generated_tokens=self._total_generated_tokens,
                num_preemptions=self._num_preemptions,
                num_failed_steps=self._num_failed_steps,
                prefix_cache=self._prefix_cache.stats() if self._prefix_cache is not None else None,
            )

    def close(self) -> None:
        """Stop the step loop; requests still in flight end with an EngineError. Idempotent."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._fail_all("the engine was closed")
        if self._parallel is not None:
            self._parallel.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
