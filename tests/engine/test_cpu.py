"""The CPU plan follows the CPU's capabilities (faked here), and the facts are read as documented."""

from __future__ import annotations

import threading

import pytest
import torch
from fake_model import FakeModel, fake_config

from cortex.engine import cpu
from cortex.engine.cpu import CPU_STEP_LOCK, CpuCapabilities, num_threads_for, plan_cpu
from cortex.engine.engine import Engine
from cortex.engine.engine_config import EngineConfig
from cortex.engine.sampling_params import SamplingParams

GIB = 1 << 30


def caps(flags: str, capability: str = "AVX512", *, memory_bytes: int = 64 * GIB) -> CpuCapabilities:
    return CpuCapabilities(
        model_name="fake",
        flags=frozenset(flags.split()),
        torch_capability=capability,
        num_physical_cores=4,
        available_memory_bytes=memory_bytes,
    )


ZEN4 = caps("avx2 fma avx512f avx512_bf16")  # AVX-512 BF16
SAPPHIRE_RAPIDS = caps("avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile avx512_fp16")
EPYC_AVX2 = caps("avx2 fma", "AVX2")  # the CI machine class: no AVX-512, no bf16 arithmetic
SKYLAKE = caps("avx2 fma avx512f")  # AVX-512 without BF16


@pytest.mark.parametrize("machine", [ZEN4, SAPPHIRE_RAPIDS])
def test_native_bf16_computes_in_bf16_from_the_stored_weights(machine: CpuCapabilities) -> None:
    plan = plan_cpu(machine, torch.bfloat16, weight_bytes=GIB)
    assert (plan.compute_dtype, plan.batched_weights) == (torch.bfloat16, "storage")
    assert plan.gemv_without_onednn  # oneDNN's one-row bf16 path reads at half the bandwidth
    assert not plan.mixed


@pytest.mark.parametrize("machine", [EPYC_AVX2, SKYLAKE])
def test_emulated_bf16_computes_in_fp32_over_bf16_weights(machine: CpuCapabilities) -> None:
    plan = plan_cpu(machine, torch.bfloat16, weight_bytes=GIB)
    assert (plan.weight_dtype, plan.compute_dtype, plan.batched_weights) == (
        torch.bfloat16,
        torch.float32,
        "fp32_copy",
    )
    assert plan.mixed
    assert not plan.gemv_without_onednn


def test_emulated_bf16_with_cortexs_kernel_reads_the_stored_weights_for_every_matmul() -> None:
    plan = plan_cpu(EPYC_AVX2, torch.bfloat16, weight_bytes=GIB, bf16_kernel=True)
    assert (plan.compute_dtype, plan.batched_weights) == (torch.float32, "bf16_kernel")
    assert plan.mixed
    # native bf16 arithmetic and fp16 weights are the kernel's business nowhere
    assert plan_cpu(ZEN4, torch.bfloat16, weight_bytes=GIB, bf16_kernel=True).batched_weights == "storage"
    assert (
        plan_cpu(EPYC_AVX2, torch.float16, weight_bytes=GIB, bf16_kernel=True).batched_weights == "fp32_copy"
    )


def test_bf16_flag_without_torch_using_it_counts_as_emulated() -> None:
    # ATEN_CPU_CAPABILITY=avx2 on an AVX-512 BF16 machine: torch's kernels do not use the instructions
    lowered = caps("avx2 fma avx512f avx512_bf16", "AVX2")
    assert plan_cpu(lowered, torch.bfloat16, weight_bytes=GIB).compute_dtype == torch.float32


def test_no_room_for_an_fp32_copy_upcasts_per_call() -> None:
    small = caps("avx2 fma", "AVX2", memory_bytes=5 * GIB)
    # 1 GiB of bf16 is 2 GiB in fp32: fits with the headroom in 5 GiB; 2 GiB of bf16 does not
    assert plan_cpu(small, torch.bfloat16, weight_bytes=GIB).batched_weights == "fp32_copy"
    assert plan_cpu(small, torch.bfloat16, weight_bytes=2 * GIB).batched_weights == "upcast"


def test_fp32_and_fp16_weights() -> None:
    plan = plan_cpu(EPYC_AVX2, torch.float32, weight_bytes=GIB)
    assert (plan.compute_dtype, plan.batched_weights, plan.mixed) == (torch.float32, "storage", False)
    assert plan_cpu(SAPPHIRE_RAPIDS, torch.float16, weight_bytes=GIB).compute_dtype == torch.float16
    assert plan_cpu(ZEN4, torch.float16, weight_bytes=GIB).compute_dtype == torch.float32


def test_threads_default_to_physical_cores() -> None:
    assert num_threads_for(ZEN4, None) == 4
    assert num_threads_for(ZEN4, 1) == 1


CPUINFO = "\n\n".join(
    f"processor\t: {i}\nmodel name\t: Fake CPU\nflags\t\t: fpu avx2 avx512_bf16\n"
    f"physical id\t: 0\ncore id\t\t: {i // 2}\n"
    for i in range(8)  # 4 cores, 2 hyperthreads each
)


def test_cpuinfo_parsing_counts_physical_cores_within_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = cpu._cpuinfo_blocks(CPUINFO)
    assert blocks[0]["model name"] == "Fake CPU"
    assert "avx512_bf16" in blocks[0]["flags"].split()
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert cpu._physical_cores(blocks) == 4
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert cpu._physical_cores(blocks) == 2
    assert cpu._available_memory_bytes("MemTotal: 10 kB\nMemAvailable:    2048 kB\n") == 2 << 20


def test_this_machine_is_read() -> None:
    facts = cpu.cpu_capabilities()
    assert facts.num_physical_cores >= 1
    assert facts.torch_capability == torch.backends.cpu.get_cpu_capability()


def test_engine_threads_follow_the_config_and_engines_take_turns_on_the_cores() -> None:
    before = torch.get_num_threads()
    params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    try:
        with Engine(FakeModel(), fake_config(), EngineConfig(max_model_len=32, num_threads=1)) as engine:
            assert torch.get_num_threads() == 1
            with CPU_STEP_LOCK:  # another engine's step holds the cores: this one waits, then runs
                pending = threading.Thread(target=engine.generate, args=([[1, 2]], params))
                pending.start()
                pending.join(timeout=0.2)
                assert pending.is_alive()
            pending.join(timeout=10)
            assert not pending.is_alive()
        with Engine(FakeModel(), fake_config(), EngineConfig(max_model_len=32)):
            assert torch.get_num_threads() == cpu.cpu_capabilities().num_physical_cores
    finally:
        torch.set_num_threads(before)


def test_a_bf16_model_on_a_cpu_without_bf16_gets_cortexs_kernel_where_it_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cortex.engine.kernels import cpu_bf16_linear
    from cortex.engine.models import cpu_layout

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)

    monkeypatch.setattr(cpu_layout, "cpu_capabilities", lambda: EPYC_AVX2)
    built: list[frozenset[str]] = []
    monkeypatch.setattr(cpu_bf16_linear, "load", lambda flags: built.append(flags) or None)
    assert cpu_layout.prepare_cpu_model(model(), torch.bfloat16).batched_weights == "fp32_copy"
    assert built == [EPYC_AVX2.flags]  # asked for, not there: torch's fp32 matmul
    assert cpu_layout.prepare_cpu_model(model(), torch.float32).batched_weights == "storage"
    assert len(built) == 1  # fp32 weights never ask for it
    monkeypatch.setattr(cpu_layout, "cpu_capabilities", lambda: ZEN4)
    assert cpu_layout.prepare_cpu_model(model(), torch.bfloat16).batched_weights == "storage"
    assert len(built) == 1  # nor does a CPU with bf16 arithmetic
