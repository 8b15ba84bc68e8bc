"""Kernel-test fixtures: the device the Triton kernels run on here.

On a CUDA machine the kernels are compiled and run on the GPU; without one they run on CPU tensors
under Triton's interpreter (``TRITON_INTERPRET=1``, set by the suite's root conftest before cortex is
imported), so every kernel's numerics are checked in CI.
"""

from __future__ import annotations

import pytest
import torch

from cortex.engine.kernels.selection import resolve_kernels


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: CUDA if present, else the CPU (interpreted)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if resolve_kernels("triton", device) != "triton":  # raises KernelUnavailableError with the reason
        pytest.fail("the Triton kernels cannot run here")
    return device
