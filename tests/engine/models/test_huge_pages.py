"""A CPU model's large tensors move into one huge-page arena with their values, ties and kinds kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cortex.engine.models import huge_pages
from cortex.engine.models.huge_pages import HUGE_PAGE, huge_pages_available, move_to_huge_pages


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4096, 128)  # 2 MiB in fp32
        self.head = nn.Linear(128, 4096, bias=False)
        self.head.weight = self.embed.weight
        self.small = nn.Linear(8, 8)  # stays where it is
        self.register_buffer("table", torch.randn(1024, 512), persistent=False)  # 2 MiB


def test_large_tensors_move_to_aligned_huge_page_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huge_pages, "huge_pages_available", lambda: True)
    model = Tied()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    small = model.small.weight
    moved = move_to_huge_pages(model)
    assert moved == 2 * (4096 * 128 * 4)  # the tied table once, and the buffer
    assert model.head.weight is model.embed.weight  # still one tensor
    assert isinstance(model.embed.weight, nn.Parameter)
    assert not model.embed.weight.requires_grad
    assert model.embed.weight.data_ptr() % HUGE_PAGE == 0
    assert model.table.data_ptr() % HUGE_PAGE == 0
    assert model.small.weight is small
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    x = torch.randint(0, 4096, (3,))
    assert torch.equal(model.head(model.embed(x)), before["embed.weight"][x] @ before["embed.weight"].T)


def test_nothing_moves_without_transparent_huge_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mode = tmp_path / "enabled"
    mode.write_text("always madvise [never]\n")
    assert not huge_pages_available(mode)
    assert huge_pages_available(mode.with_name("missing")) is False
    mode.write_text("always [madvise] never\n")
    assert huge_pages_available(mode) == hasattr(__import__("mmap"), "MADV_HUGEPAGE")
    monkeypatch.setattr(huge_pages, "huge_pages_available", lambda: False)
    model = Tied()
    pointer = model.embed.weight.data_ptr()
    assert move_to_huge_pages(model) == 0
    assert model.embed.weight.data_ptr() == pointer
