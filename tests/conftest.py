"""Suite-wide pytest hooks: ``@pytest.mark.gpu`` tests skip cleanly where CUDA is absent, without
CUDA the Triton kernels run under Triton's interpreter, and what gateways keep (the Responses store)
goes to a folder of the run's own (``XDG_STATE_HOME``, inherited by the servers tests start), never the
user's ``~/.local/state``.

``TRITON_INTERPRET=1`` must be in the environment before triton decorates a kernel, i.e. before
cortex is imported, so it is set here, at the top of the first conftest pytest loads. On a CUDA
machine it is left alone and the kernel tests run compiled kernels on the GPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
STATE_HOME = tempfile.mkdtemp(prefix="cortex-test-state-")
os.environ["XDG_STATE_HOME"] = STATE_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(STATE_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)
