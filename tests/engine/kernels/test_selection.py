"""The kernel selection point: option, environment, device, and the errors when Triton cannot run."""

from __future__ import annotations

import pytest

from cortex.engine.engine_config import EngineConfig
from cortex.engine.errors import KernelUnavailableError
from cortex.engine.kernels import triton_import
from cortex.engine.kernels.selection import kernels_from_env, resolve_kernels
from cortex.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("option", "device", "expected"),
    [
        ("auto", "cpu", "ref"),
        ("auto", "cuda", "triton"),
        ("auto", "cuda:1", "triton"),
        ("ref", "cuda", "ref"),
        ("ref", "cpu", "ref"),
        ("triton", "cuda", "triton"),
        ("triton", "cpu", "triton"),  # this suite runs under TRITON_INTERPRET=1 without CUDA
    ],
)
def test_option_and_device_decide(option, device, expected):
    if device == "cpu" and option == "triton" and not triton_import.kernels_interpreted():
        pytest.skip("kernels are compiled here (CUDA machine): no interpreter")
    assert resolve_kernels(option, device, environ={}) == expected


def test_environment_applies_when_the_option_is_none():
    assert resolve_kernels(None, "cuda", environ={"CORTEX_KERNELS": "ref"}) == "ref"
    assert resolve_kernels(None, "cuda", environ={"CORTEX_KERNELS": " Triton "}) == "triton"
    assert resolve_kernels(None, "cuda", environ={"CORTEX_KERNELS": ""}) == "triton"  # empty = auto
    assert resolve_kernels(None, "cpu", environ={}) == "ref"
    # an explicit option wins over the environment
    assert resolve_kernels("ref", "cuda", environ={"CORTEX_KERNELS": "triton"}) == "ref"
    assert kernels_from_env({}) is None


def test_bad_values_are_invalid_requests():
    with pytest.raises(InvalidRequestError, match="CORTEX_KERNELS must be one of auto, triton, ref"):
        resolve_kernels(None, "cpu", environ={"CORTEX_KERNELS": "cuda"})
    with pytest.raises(InvalidRequestError, match="kernels must be one of") as info:
        EngineConfig(kernels="fast")
    assert info.value.param == "kernels"


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(triton_import, "kernels_interpreted", lambda: False)
    with pytest.raises(KernelUnavailableError, match="set TRITON_INTERPRET=1 in the environment before"):
        resolve_kernels("triton", "cpu", environ={})
    with pytest.raises(KernelUnavailableError, match="was set only after triton had been imported"):
        resolve_kernels("triton", "cpu", environ={"TRITON_INTERPRET": "1"})
    assert resolve_kernels("triton", "cuda", environ={}) == "triton"


def test_triton_missing_is_refused(monkeypatch):
    monkeypatch.setattr(triton_import, "HAS_TRITON", False)
    with pytest.raises(KernelUnavailableError, match="needs the triton package"):
        resolve_kernels("triton", "cuda", environ={})
    assert resolve_kernels("auto", "cpu", environ={}) == "ref"
