"""cortex's C kernels for AVX2 CPUs (``cpu_native``) against float64 torch and the reference ops.

They run wherever this machine is x86 with AVX2 + FMA and has a C compiler (CI's machine is); elsewhere
the kernel tests skip and the fallback tests still check that nothing is built and why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cortex.engine.cpu import cpu_capabilities
from cortex.engine.kernels import cpu_bf16_linear, cpu_conv1d_decode, cpu_gated_delta_decode, cpu_native
from cortex.engine.kernels.causal_conv1d import causal_conv1d_decode_ref
from cortex.engine.kernels.gated_delta import gated_delta_rule_decode_ref

FLAGS = cpu_capabilities().flags
needs_kernels = pytest.mark.skipif(
    cpu_native.unavailable(FLAGS) is not None, reason=f"no CPU kernels here: {cpu_native.unavailable(FLAGS)}"
)


@pytest.fixture(scope="module")
def linear() -> cpu_bf16_linear.Bf16Linear:
    kernel = cpu_bf16_linear.load(FLAGS)
    assert kernel is not None
    return kernel


@pytest.fixture(scope="module")
def delta() -> cpu_gated_delta_decode.GatedDeltaDecode:
    kernel = cpu_gated_delta_decode.load(FLAGS)
    assert kernel is not None
    return kernel


# rows: one (gemv), each tile height and its tails, past the L2 block; columns and depth with tails
SHAPES = [(1, 37, 19), (1, 300, 1024), (2, 9, 16), (3, 50, 64), (4, 24, 8), (5, 31, 40), (16, 100, 1024)]
SHAPES += [(17, 49, 72), (130, 77, 72), (70, 26, 4000)]


@needs_kernels
@pytest.mark.parametrize(("rows", "out_features", "in_features"), SHAPES)
def test_bf16_linear_is_the_fp32_product_of_the_stored_weights(
    linear: cpu_bf16_linear.Bf16Linear, rows: int, out_features: int, in_features: int
) -> None:
    generator = torch.Generator().manual_seed(rows * out_features + in_features)
    x = torch.randn(rows, in_features, generator=generator)
    weight = torch.randn(out_features, in_features, generator=generator).bfloat16()
    bias = torch.randn(out_features, generator=generator)
    exact = F.linear(x.double(), weight.double(), bias.double())
    got = linear(x, weight, bias)
    assert got.dtype == torch.float32
    assert got.shape == (rows, out_features)
    scale = (x.double().abs() @ weight.double().abs().T).amax()
    assert ((got.double() - exact).abs().amax() / scale) < 1e-6  # fp32 sums, nothing rounded to bf16
    assert torch.allclose(linear(x, weight) + bias, got)  # no bias: the same product


@needs_kernels
def test_bf16_linear_takes_strided_rows_and_refuses_what_it_cannot_read(
    linear: cpu_bf16_linear.Bf16Linear,
) -> None:
    x = torch.randn(6, 64)[::2]  # rows 128 floats apart
    weight = torch.randn(24, 64).bfloat16()
    assert torch.allclose(linear(x, weight), F.linear(x, weight.float()), atol=1e-5)
    assert torch.allclose(linear(x.T.contiguous().T, weight), F.linear(x, weight.float()), atol=1e-5)
    with pytest.raises(TypeError):
        linear(x.bfloat16(), weight)
    with pytest.raises(ValueError, match="rows of 64"):
        linear(x, torch.randn(24, 32).bfloat16())


@needs_kernels
@pytest.mark.parametrize("num_seqs", [1, 3])
def test_gated_delta_decode_updates_each_slot_as_the_reference_does(
    delta: cpu_gated_delta_decode.GatedDeltaDecode, num_seqs: int
) -> None:
    generator = torch.Generator().manual_seed(num_seqs)
    heads, dk, dv, num_slots = 4, 32, 48, 6

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    q, k, v = rand(num_seqs, heads, dk), rand(num_seqs, heads, dk), rand(num_seqs, heads, dv)
    a, b, A_log, dt_bias = rand(num_seqs, heads), rand(num_seqs, heads), rand(heads), rand(heads)
    state = rand(num_slots, heads, dk, dv) * 0.1
    slots = torch.tensor([4, 1, 2][:num_seqs])
    expected_state = state.clone()
    expected = gated_delta_rule_decode_ref(
        q, k, v, a=a, b=b, A_log=A_log, dt_bias=dt_bias, state=expected_state, state_slots=slots
    )
    qn = F.normalize(q, dim=-1, eps=0) * dk**-0.5
    kn = F.normalize(k, dim=-1, eps=0)
    g = -A_log.exp() * F.softplus(a + dt_bias)
    got = delta(state, slots, qn, kn, v, g.exp(), b.sigmoid())
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert torch.allclose(state, expected_state, atol=1e-5, rtol=1e-4)  # the slots in place, others untouched
    assert torch.equal(state[[0, 3, 5]], expected_state[[0, 3, 5]])


@needs_kernels
def test_gated_delta_decode_refuses_a_state_it_cannot_update(
    delta: cpu_gated_delta_decode.GatedDeltaDecode,
) -> None:
    assert not delta.supports(torch.zeros(2, 4, 32, 40))  # head_v_dim not a multiple of 16
    assert not delta.supports(torch.zeros(2, 4, 32, 48, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="does not fit"):
        delta(
            torch.zeros(2, 4, 32, 40),
            torch.zeros(1),
            *(torch.zeros(1, 4, n) for n in (32, 32, 40)),
            torch.ones(1, 4),
            torch.ones(1, 4),
        )


def test_no_kernel_without_avx2_or_a_compiler(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert cpu_native.unavailable(frozenset({"sse4_2", "avx"})) == "the CPU lacks avx2, fma"
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CC", "no-such-cc")
    assert cpu_native.unavailable(frozenset({"avx2", "fma"})) == "no C compiler ($CC, cc or gcc) on PATH"
    cpu_native.library.cache_clear()
    cpu_bf16_linear.load.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=cpu_native.__name__):
            assert cpu_bf16_linear.load(frozenset({"avx2", "fma"})) is None
        assert "no C compiler" in caplog.text
    finally:
        cpu_native.library.cache_clear()
        cpu_bf16_linear.load.cache_clear()


@needs_kernels
def test_a_build_is_cached_by_source_and_a_failed_one_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu_native.library.cache_clear()
    try:
        assert cpu_native.library("cpu_bf16_linear", FLAGS) is not None
        built = list((tmp_path / "cortex" / "kernels").iterdir())
        assert [p.suffix for p in built] == [".so"]
        assert built[0].name.startswith("cpu_bf16_linear-")
        mtime = built[0].stat().st_mtime_ns
        cpu_native.library.cache_clear()
        assert cpu_native.library("cpu_bf16_linear", FLAGS) is not None
        assert built[0].stat().st_mtime_ns == mtime  # loaded from the cache, not rebuilt
        broken = tmp_path / "broken.c"
        broken.write_text("this is not C\n")
        monkeypatch.setattr(cpu_native, "_source", lambda name: broken)
        with caplog.at_level(logging.INFO, logger=cpu_native.__name__):
            assert cpu_native.library("broken", FLAGS) is None
        assert "building broken.c failed" in caplog.text
    finally:
        cpu_native.library.cache_clear()


@needs_kernels
@pytest.mark.parametrize("state_dtype", [torch.bfloat16, torch.float32])
def test_conv1d_decode_continues_each_history_as_the_reference_does(state_dtype: torch.dtype) -> None:
    kernel = cpu_conv1d_decode.load(FLAGS)
    assert kernel is not None
    generator = torch.Generator().manual_seed(3)
    conv_dim, taps, num_slots = 40, 4, 5
    x = torch.randn(3, 2 * conv_dim, generator=generator)[:, :conv_dim]  # rows strided, as in the layer
    weight = torch.randn(conv_dim, taps, generator=generator)
    state = torch.randn(num_slots, conv_dim, taps - 1, generator=generator).to(state_dtype)
    slots = torch.tensor([3, 0, 4])
    expected_state = state.clone()
    expected = causal_conv1d_decode_ref(x, weight, expected_state, state_slots=slots)
    assert kernel.supports(x, weight, state)
    got = kernel(x, weight, state, slots)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(state, expected_state)  # the history rounded to the pool's dtype as torch rounds it
    assert not kernel.supports(x.bfloat16(), weight, state)
