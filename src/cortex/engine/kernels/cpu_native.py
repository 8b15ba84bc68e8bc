"""cortex's C kernels for x86 CPUs with AVX2 and FMA, compiled on first use and loaded with ctypes.

Each kernel is one C file beside this one (``cpu_bf16_linear.c``, ``cpu_gated_delta_decode.c``) with
a Python wrapper of the same name. :func:`library` compiles a file with the machine's C compiler
(``$CC``, else ``cc``, else ``gcc``), as Triton builds its launchers, into ``$XDG_CACHE_HOME/cortex/
kernels`` (else ``~/.cache/cortex/kernels``), named by a hash of the source and the flags, and loads
it. The kernels thread with OpenMP: linked against ``libgomp.so.1``, which resolves to the runtime
torch already loaded, so they and torch's own kernels share one pool of threads. Where a kernel cannot
be had (a CPU without AVX2 + FMA, no compiler, a failed build), :func:`library` returns ``None`` and
logs why once; callers then use torch's own ops.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
REQUIRED_CPU_FLAGS = frozenset({"avx2", "fma"})
_COMPILE_TIMEOUT_S = 120


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cortex" / "kernels"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


@cache
def library(name: str, cpu_flags: frozenset[str]) -> ctypes.CDLL | None:
    """``name.c`` built for a CPU with ``cpu_flags`` and loaded; ``None`` (logged) where it cannot be."""
    reason = unavailable(cpu_flags)
    if reason is None:
        try:
            return ctypes.CDLL(str(_build(_source(name))))
        except (OSError, subprocess.SubprocessError) as error:
            reason = f"building {name}.c failed: {error}"
    logger.info("cortex's CPU kernel %s is unavailable (%s); torch's own ops run instead", name, reason)
    return None


def unavailable(cpu_flags: frozenset[str]) -> str | None:
    """Why no kernel can be built for a CPU with ``cpu_flags`` here, or ``None``."""
    if not cpu_flags >= REQUIRED_CPU_FLAGS:
        return f"the CPU lacks {', '.join(sorted(REQUIRED_CPU_FLAGS - cpu_flags))}"
    if compiler() is None:
        return "no C compiler ($CC, cc or gcc) on PATH"
    return None


def _source(name: str) -> Path:
    return Path(__file__).with_name(f"{name}.c")


def _build(source: Path) -> Path:
    cc = compiler()
    assert cc is not None  # checked by unavailable()
    digest = hashlib.sha256(source.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run(
            [cc, *FLAGS, "-o", str(built), str(source)],
            capture_output=True,
            text=True,
            timeout=_COMPILE_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.SubprocessError(
                result.stderr.strip()[-2000:] or f"{cc} exited {result.returncode}"
            )
        built.replace(target)  # atomic: a concurrent build of the same source writes the same bytes
    return target
