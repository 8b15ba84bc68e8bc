"""What this CPU can do, read in one place, and the plan the CPU engine runs by, decided from it.

:func:`cpu_capabilities` reads the facts once per process: the instruction-set flags and model name
from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on ARM), the instruction set torch's own
vectorised kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``: ``AVX512``, ``AVX2``,
``DEFAULT``, ...; lowered by ``ATEN_CPU_CAPABILITY``) and the physical cores this process may run on.

:func:`plan_cpu` is a pure function of those facts (tests pass fakes). Where the CPU has bf16 (or
fp16) arithmetic (AVX-512 BF16, AMX, ARM BF16) and torch uses it, a bf16 checkpoint computes in bf16.
Where it has none, torch emulates bf16 arithmetic and a bf16 matrix multiply of many rows runs at a
fraction of the fp32 rate, so the engine computes in fp32 over bf16-stored weights. On x86 with AVX2
and FMA every matmul then runs cortex's own kernel (``kernels/cpu_bf16_linear``), which reads the
stored bf16 weights and sums in fp32, for one row and for many, where it could be built (it needs a C
compiler). Without it, one-row matmuls (batch-1 decode, bandwidth-bound) read the bf16 weights through
ATen's bf16 gemv (half the bytes of fp32), and matmuls of several rows (batched decode, prefill) run in
fp32 from a second, fp32 copy of the weights when memory allows, else from the bf16 weights upcast per
call. Measured on this machine class in ``benchmarks/engine_cpu.py`` and ``benchmarks/cpu_linear.py``;
see docs/benchmarks.md.

Threads: the intra-op pool gets one thread per physical core (``num_threads`` overrides), and
:data:`CPU_STEP_LOCK` lets one CPU forward run at a time in the process, so engines sharing a
process (a neuron hosting several models) take turns on the cores instead of oversubscribing them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch

# flags that mean "this CPU multiplies bf16 (fp16) natively"
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX-512 BF16, x86 AMX, ARM BF16
FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16", "fphp"})
# torch capabilities under which its kernels use those instructions
_WIDE_CAPABILITIES = frozenset({"AVX512", "SVE256", "SVE", "NEON"})
# keep this much memory free after a second weight layout
_MEMORY_HEADROOM_BYTES = 2 << 30

CPU_STEP_LOCK = threading.Lock()

BatchedWeights = Literal["storage", "fp32_copy", "upcast", "bf16_kernel"]


@dataclass(frozen=True, slots=True)
class CpuCapabilities:
    model_name: str
    flags: frozenset[str]
    torch_capability: str
    num_physical_cores: int
    available_memory_bytes: int

    @property
    def native_bf16(self) -> bool:
        return bool(self.flags & BF16_FLAGS) and self.torch_capability in _WIDE_CAPABILITIES

    @property
    def native_fp16(self) -> bool:
        return bool(self.flags & FP16_FLAGS) and self.torch_capability in _WIDE_CAPABILITIES


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """How a CPU engine runs a model whose matmul weights are stored in ``weight_dtype``.

    compute_dtype: activations and arithmetic. batched_weights: what a matmul of several rows reads
    (``storage``: the stored weights; ``fp32_copy``: a second, fp32 layout; ``upcast``: the stored
    weights converted per call; ``bf16_kernel``: the stored bf16 weights through cortex's AVX2 kernel,
    which then runs one-row matmuls too). gemv_without_onednn: one-row bf16 matmuls bypass oneDNN,
    whose one-row bf16 path runs at half the memory bandwidth (ATen's bf16 gemv reaches it).
    """

    weight_dtype: torch.dtype
    compute_dtype: torch.dtype
    batched_weights: BatchedWeights
    gemv_without_onednn: bool

    @property
    def mixed(self) -> bool:
        """True when compute and storage dtypes differ (the layout ``apply_cpu_plan`` builds)."""
        return self.compute_dtype != self.weight_dtype


def plan_cpu(
    caps: CpuCapabilities, weight_dtype: torch.dtype, *, weight_bytes: int, bf16_kernel: bool = False
) -> CpuPlan:
    """Decide from the CPU's capabilities; ``weight_bytes`` is the size of the stored matmul weights and
    ``bf16_kernel`` whether cortex's bf16 kernel is built for this CPU (``kernels/cpu_bf16_linear``)."""
    if weight_dtype == torch.float32:
        return CpuPlan(weight_dtype, torch.float32, "storage", gemv_without_onednn=False)
    native = caps.native_bf16 if weight_dtype == torch.bfloat16 else caps.native_fp16
    if native:
        return CpuPlan(
            weight_dtype, weight_dtype, "storage", gemv_without_onednn=weight_dtype == torch.bfloat16
        )
    if weight_dtype == torch.bfloat16 and bf16_kernel:
        return CpuPlan(weight_dtype, torch.float32, "bf16_kernel", gemv_without_onednn=False)
    fp32_bytes = weight_bytes * 4 // weight_dtype.itemsize
    room = caps.available_memory_bytes - _MEMORY_HEADROOM_BYTES
    batched: BatchedWeights = "fp32_copy" if fp32_bytes <= room else "upcast"
    return CpuPlan(weight_dtype, torch.float32, batched, gemv_without_onednn=False)


def num_threads_for(caps: CpuCapabilities, requested: int | None) -> int:
    """The intra-op thread count: ``requested``, else one per physical core."""
    return requested or caps.num_physical_cores


@cache
def cpu_capabilities() -> CpuCapabilities:
    """This machine's facts, read once (``/proc/cpuinfo``, ``/proc/meminfo``, torch, the affinity mask)."""
    processors = _cpuinfo_blocks(_read("/proc/cpuinfo"))
    flags: set[str] = set()
    model_name = ""
    for block in processors[:1]:
        flags.update((block.get("flags") or block.get("Features") or "").split())
        model_name = block.get("model name") or block.get("Model") or ""
    return CpuCapabilities(
        model_name=model_name,
        flags=frozenset(flags),
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        num_physical_cores=_physical_cores(processors),
        available_memory_bytes=_available_memory_bytes(_read("/proc/meminfo")),
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.split("\n\n"):
        block = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                block[key.strip()] = value.strip()
        if block:
            blocks.append(block)
    return blocks


def _physical_cores(processors: list[dict[str, str]]) -> int:
    """Distinct (package, core) pairs among the CPUs this process may run on (logical CPUs if unknown)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for block in processors:
        if "processor" not in block or "core id" not in block:
            continue
        if int(block["processor"]) in allowed:
            cores.add((block.get("physical id", "0"), block["core id"]))
    return len(cores) or len(allowed) or 1


def _available_memory_bytes(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0
