"""HostPacket: a step's host-built arrays, sent to the device in one pinned transfer.

The runner puts every array a step needs (token ids, positions, slot mapping, block tables, state
slots, the sampler's columns and uniforms) into one packet, then :meth:`HostPacket.to` lays them out
in one page-locked host buffer, copies it to the device with one non-blocking copy and returns a view
per array. Nothing waits for the device: the copy is ordered before the step's kernels on the stream,
and PyTorch's pinned-memory allocator keeps the buffer alive until the copy has finished. On a CPU
device the views are of the host buffer itself (no copy). ``into`` copies into a given device buffer
instead (a CUDA graph's static inputs): packets that put the same arrays in the same order and sizes
lay them out at the same offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_ALIGN = 16  # bytes; every array starts 16-byte aligned, as vectorised kernel loads want


class HostPacket:
    def __init__(self) -> None:
        self._arrays: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}

    def put(
        self,
        name: str,
        values: Sequence[int] | Sequence[float] | Sequence[Sequence[int]] | torch.Tensor,
        dtype: torch.dtype,
    ) -> None:
        """Add an array (a flat or rectangular list, or a CPU tensor) under ``name``."""
        assert name not in self._arrays, f"{name} is already in the packet"
        tensor = values.to(dtype) if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
        self._arrays[name] = (tensor.reshape(-1), tuple(tensor.shape))

    @property
    def nbytes(self) -> int:
        return self._layout()[1]

    def _layout(self) -> tuple[dict[str, int], int]:
        offsets: dict[str, int] = {}
        total = 0
        for name, (flat, _shape) in self._arrays.items():
            offsets[name] = total
            total += -(-flat.numel() * flat.element_size() // _ALIGN) * _ALIGN
        return offsets, total

    def to(self, device: torch.device, *, into: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every array on ``device``, shaped as put, from one host buffer and (on CUDA) one copy.

        ``into``: a uint8 buffer on ``device`` of at least :attr:`nbytes` to copy into (and view).
        """
        offsets, total = self._layout()
        pinned = device.type == "cuda"
        host = torch.empty(max(total, _ALIGN), dtype=torch.uint8, pin_memory=pinned)
        for name, (flat, _shape) in self._arrays.items():
            start = offsets[name]
            host[start : start + flat.numel() * flat.element_size()].view(flat.dtype).copy_(flat)
        if into is not None:
            assert into.dtype == torch.uint8, "a byte buffer"
            assert into.numel() >= total, "the buffer holds the packet"
            into[: host.numel()].copy_(host, non_blocking=True)
            buffer = into
        else:
            buffer = host.to(device, non_blocking=True) if device.type != "cpu" else host
        views: dict[str, torch.Tensor] = {}
        for name, (flat, shape) in self._arrays.items():
            start = offsets[name]
            size = flat.numel() * flat.element_size()
            views[name] = buffer[start : start + size].view(flat.dtype).view(shape)
        return views
