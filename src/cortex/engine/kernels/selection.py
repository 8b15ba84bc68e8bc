"""Which implementation of the custom ops an engine runs: the Triton kernels or the PyTorch references.

The one selection point (DESIGN.md "Kernels"). The option is ``auto`` (the Triton kernels on CUDA, the
references on CPU, where the gated delta rule's and the conv1d's decode steps run cortex's C kernels on
x86 CPUs with AVX2 + FMA: ``cpu_native.py``), ``triton`` (the kernels everywhere: on CPU tensors
through Triton's interpreter) or ``ref`` (the references everywhere). It comes from the engine option
(``EngineConfig.kernels``, ``Engine.from_pretrained(..., kernels=...)``) or, where that is None, from
the environment variable ``CORTEX_KERNELS``; this module is the engine's only reader of ``CORTEX_KERNELS`` and
``TRITON_INTERPRET``. It imports neither torch nor triton, so configs can validate the option cheaply.

The resolved :data:`KernelBackend` is a value each model is built with (every layer holds it and hands
it to the ops it calls), never process state: two engines in one process may run different kernels.
Triton's interpreter is chosen by ``TRITON_INTERPRET=1`` in the environment *before* cortex (and so
triton) is imported, because ``triton.jit`` decides at definition time whether a kernel is compiled or
interpreted; ``triton`` on a CPU device without it raises :class:`KernelUnavailableError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from cortex.engine.errors import KernelUnavailableError
from cortex.errors import InvalidRequestError

if TYPE_CHECKING:
    import torch

KernelsOption = Literal["auto", "triton", "ref"]
KernelBackend = Literal["triton", "ref"]

KERNELS_OPTIONS: tuple[KernelsOption, ...] = ("auto", "triton", "ref")
KERNELS_ENV = "CORTEX_KERNELS"
INTERPRET_ENV = "TRITON_INTERPRET"


def check_kernels_option(option: str, *, source: str = "kernels") -> KernelsOption:
    """``option`` as a :data:`KernelsOption`; raises InvalidRequestError naming ``source`` otherwise."""
    for known in KERNELS_OPTIONS:
        if option == known:
            return known
    raise InvalidRequestError(
        f"{source} must be one of {', '.join(KERNELS_OPTIONS)}, got {option!r}", param="kernels"
    )


def kernels_from_env(environ: Mapping[str, str] | None = None) -> KernelsOption | None:
    """``CORTEX_KERNELS`` if set and not empty (validated), else None."""
    value = (os.environ if environ is None else environ).get(KERNELS_ENV, "").strip().lower()
    return check_kernels_option(value, source=KERNELS_ENV) if value else None


def resolve_kernels(
    option: str | None, device: torch.device | str, *, environ: Mapping[str, str] | None = None
) -> KernelBackend:
    """The backend an engine on ``device`` runs for ``option`` (None: ``CORTEX_KERNELS``, else ``auto``).

    Raises InvalidRequestError for an unknown option and KernelUnavailableError when ``triton`` is asked
    for but cannot run here (Triton not installed; a CPU device without Triton's interpreter).
    """
    chosen = check_kernels_option(option) if option is not None else kernels_from_env(environ) or "auto"
    device_type = str(device).split(":", 1)[0]
    if chosen == "ref" or (chosen == "auto" and device_type != "cuda"):
        return "ref"
    from cortex.engine.kernels.triton_import import HAS_TRITON, kernels_interpreted  # imports triton

    if not HAS_TRITON:
        raise KernelUnavailableError("kernels='triton' needs the triton package, which is not installed")
    if device_type != "cuda" and not kernels_interpreted():
        interpret = (os.environ if environ is None else environ).get(INTERPRET_ENV, "")
        hint = (
            f"{INTERPRET_ENV}={interpret} was set only after triton had been imported"
            if interpret not in ("", "0")
            else f"set {INTERPRET_ENV}=1 in the environment before Python starts"
        )
        raise KernelUnavailableError(
            f"kernels='triton' on a {device_type} device needs Triton's interpreter: {hint} "
            "(or use kernels='auto' / 'ref', or a CUDA device)"
        )
    return "triton"
