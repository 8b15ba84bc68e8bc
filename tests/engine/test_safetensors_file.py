"""The safetensors header reader and the streaming writer, judged by the safetensors package itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cortex.engine.errors import ModelLoadError
from cortex.engine.safetensors_file import SafetensorsWriter, TensorEntry, read_header

TENSORS = {
    "a.weight": torch.randn(3, 5).to(torch.bfloat16),
    "b.bias": torch.arange(7, dtype=torch.float32),
    "c.scalar": torch.tensor(2.5, dtype=torch.float16),
    "d.mask": torch.tensor([True, False, True]),
    "e.ids": torch.arange(4, dtype=torch.int64).reshape(2, 2),
}


def test_written_file_reads_back_with_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    declared = [(name, tuple(t.shape), t.dtype) for name, t in TENSORS.items()]
    with SafetensorsWriter(path, declared, metadata={"format": "pt"}) as writer:
        for name, tensor in TENSORS.items():
            writer.write(name, tensor)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == set(TENSORS)
        for name, tensor in TENSORS.items():
            got = f.get_tensor(name)
            assert got.dtype == tensor.dtype
            assert torch.equal(got, tensor)
    assert (8 + _header_length(path)) % 8 == 0


def test_header_of_a_file_safetensors_wrote(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    save_file(TENSORS, path)
    header = read_header(path)
    assert set(header) == set(TENSORS)
    assert header["a.weight"] == TensorEntry("BF16", (3, 5), 30)
    assert header["c.scalar"] == TensorEntry("F16", (), 2)
    assert sum(e.num_bytes for e in header.values()) == path.stat().st_size - 8 - _header_length(path)


def _header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_writer_refuses_what_was_not_declared(tmp_path: Path) -> None:
    declared = [("x", (2,), torch.float32), ("y", (2,), torch.float32)]
    with SafetensorsWriter(tmp_path / "a.safetensors", declared) as writer:
        with pytest.raises(ValueError, match="expected tensor x"):
            writer.write("y", torch.zeros(2))
        with pytest.raises(ValueError, match="expected tensor x"):
            writer.write("x", torch.zeros(3))
        with pytest.raises(ValueError, match="expected tensor x"):
            writer.write("x", torch.zeros(2, dtype=torch.float16))
        writer.write("x", torch.zeros(2))
        writer.write("y", torch.zeros(2))
        with pytest.raises(ValueError, match="not declared"):
            writer.write("z", torch.zeros(2))
    unfinished = SafetensorsWriter(tmp_path / "b.safetensors", declared)
    unfinished.write("x", torch.zeros(2))
    with pytest.raises(ValueError, match="1 declared tensors were not written, the first y"):
        unfinished.close()
    with pytest.raises(ValueError, match="cannot be written"):
        SafetensorsWriter(tmp_path / "c.safetensors", [("q", (1,), torch.complex64)])


def test_unreadable_headers_are_model_load_errors(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((2**40).to_bytes(8, "little"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes((4).to_bytes(8, "little") + b"nope")
    for path in (short, huge, garbage, tmp_path / "missing.safetensors"):
        with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
            read_header(path)
