"""Move a CPU model's large tensors into one arena backed by 2 MiB pages (Linux transparent huge pages).

A decode step streams every weight once; with 4 KiB pages that is a TLB miss every 4 KiB, which on
the 2-core EPYC of docs/benchmarks.md costs about a sixth of the read bandwidth (the LM head's matmul:
14-16.5 GB/s on 4 KiB pages, 16-20 GB/s on 2 MiB pages). torch's allocator asks for huge pages only
under ``THP_MEM_ALLOC_ENABLE=1`` set before torch is imported, so the engine does it itself: one
anonymous mapping, ``madvise(MADV_HUGEPAGE)``, each tensor copied in at a 2 MiB-aligned offset. Where
the kernel's THP mode is ``never`` or ``MADV_HUGEPAGE`` does not exist (not Linux), nothing moves.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import torch
from torch import nn

HUGE_PAGE = 2 << 20
MIN_BYTES = 1 << 20  # smaller tensors stay where they are


def huge_pages_available(mode_file: Path = Path("/sys/kernel/mm/transparent_hugepage/enabled")) -> bool:
    try:
        mode = mode_file.read_text()
    except OSError:
        return False
    return hasattr(mmap, "MADV_HUGEPAGE") and "[never]" not in mode


def move_to_huge_pages(model: nn.Module) -> int:
    """Re-home ``model``'s parameters and buffers of at least 1 MiB; returns the bytes moved."""
    tensors: dict[int, tuple[list[tuple[nn.Module, str]], torch.Tensor]] = {}
    for module in model.modules():
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is not None and tensor.device.type == "cpu" and tensor.nbytes >= MIN_BYTES:
                tensors.setdefault(id(tensor), ([], tensor))[0].append((module, name))
    if not tensors or not huge_pages_available():
        return 0
    sizes = [-(-tensor.nbytes // HUGE_PAGE) * HUGE_PAGE for _, tensor in tensors.values()]
    arena = mmap.mmap(-1, sum(sizes) + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arena.madvise(mmap.MADV_HUGEPAGE)
    memory = torch.frombuffer(arena, dtype=torch.uint8)  # keeps the mapping alive
    offset = -memory.data_ptr() % HUGE_PAGE
    with torch.no_grad():
        for (owners, tensor), size in zip(tensors.values(), sizes, strict=True):
            moved = memory[offset : offset + tensor.nbytes].view(tensor.dtype).view(tensor.shape)
            moved.copy_(tensor)
            offset += size
            replacement = (
                nn.Parameter(moved, requires_grad=False) if isinstance(tensor, nn.Parameter) else moved
            )
            for module, name in owners:  # a tied tensor stays one tensor
                if isinstance(replacement, nn.Parameter):
                    setattr(module, name, replacement)
                else:
                    module._buffers[name] = replacement
    return sum(tensor.nbytes for _, tensor in tensors.values())
