"""The kernel modules' one import of Triton.

Triton is a Linux-only dependency (see pyproject.toml). Where it is missing, ``triton.jit`` here returns
the kernel function undecorated and :data:`HAS_TRITON` is False: the references still run, and
``resolve_kernels`` refuses ``kernels='triton'`` with a clear error, so no kernel is ever launched.
Kernel modules write ``from cortex.engine.kernels.triton_import import jit, tl, triton`` and decorate
kernels with ``@jit`` (``triton.jit``, typed for mypy).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - Linux CI always has triton
    HAS_TRITON = False
    triton = SimpleNamespace()
    tl = SimpleNamespace()


def jit(fn: Callable[..., None]) -> Any:
    """``triton.jit(fn)``: a kernel launched as ``fn[grid](...)``; ``fn`` itself where Triton is missing."""
    return triton.jit(fn) if HAS_TRITON else fn


@jit
def _probe() -> None:
    pass


def kernels_interpreted() -> bool:
    """Whether this process defined its kernels for Triton's interpreter (``TRITON_INTERPRET=1`` was set
    when triton decorated them, which is when cortex was imported)."""
    if not HAS_TRITON:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_probe, InterpretedFunction)


__all__ = ["HAS_TRITON", "jit", "kernels_interpreted", "tl", "triton"]
