"""The safetensors file format, for the two things the ``safetensors`` package does not offer: a
file's tensor sizes without opening its tensors (so a load knows its total before it starts), and a
writer that streams one tensor at a time (so writing a checkpoint holds one tensor in memory, not a
shard, and can report each tensor as it lands on disk).

Layout (the format the safetensors project specifies): an unsigned little-endian 64-bit header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}`` padded with spaces to a multiple of 8, then the tensors' bytes, back to back, in
little-endian order, offsets counted from the end of the header. Reading tensors stays with
``safetensors.safe_open`` (memory-mapped).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import torch

from cortex.engine.errors import ModelLoadError

__all__ = ["SafetensorsWriter", "TensorEntry", "read_header"]

_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors package's own limit
_DTYPE_CODES: Mapping[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor's header entry: its dtype code (``"BF16"``), shape and size in the file."""

    dtype: str
    shape: tuple[int, ...]
    num_bytes: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of a safetensors file by name, in header order, read from its header alone."""
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise ValueError("shorter than a header")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(f.read(length))
        entries = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            shape = tuple(int(size) for size in entry["shape"])
            entries[name] = TensorEntry(str(entry["dtype"]), shape, end - begin)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    return entries


class SafetensorsWriter:
    """Writes one safetensors file whose tensors are declared up front and then written one at a time,
    in the declared order::

        with SafetensorsWriter(path, [("w", (2, 3), torch.bfloat16)], metadata={"format": "pt"}) as out:
            out.write("w", tensor)

    A tensor out of order, of another shape or dtype, or missing at the end raises ``ValueError``.
    """

    def __init__(
        self,
        path: Path,
        tensors: Sequence[tuple[str, tuple[int, ...], torch.dtype]],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._declared = list(tensors)
        header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        for name, shape, dtype in self._declared:
            if dtype not in _DTYPE_CODES:
                raise ValueError(f"tensor {name}: dtype {dtype} cannot be written to safetensors")
            num_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": _DTYPE_CODES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + num_bytes],
            }
            offset += num_bytes
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)
        self._file: BinaryIO = path.open("wb")
        self._file.write(struct.pack("<Q", len(encoded)) + encoded)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` (on the CPU) as the next declared tensor."""
        if self._next >= len(self._declared):
            raise ValueError(f"tensor {name} was not declared")
        want_name, want_shape, want_dtype = self._declared[self._next]
        if (name, tuple(tensor.shape), tensor.dtype) != (want_name, want_shape, want_dtype):
            raise ValueError(
                f"expected tensor {want_name} {want_shape} {want_dtype}, "
                f"got {name} {tuple(tensor.shape)} {tensor.dtype}"
            )
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(raw.data)
        self._next += 1

    def close(self) -> None:
        self._file.close()
        if self._next != len(self._declared):
            missing = [name for name, _, _ in self._declared[self._next :]]
            raise ValueError(f"{len(missing)} declared tensors were not written, the first {missing[0]}")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._file.close()  # the caller's error wins over "not every tensor was written"
            return
        self.close()
