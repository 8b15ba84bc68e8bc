"""Shared engine test fixtures: tiny random transformers checkpoints, built once per session."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hf_checkpoints import build_hf_model, save_checkpoint

from cortex.engine.checkpoint import make_model


@dataclass(frozen=True)
class HFCheckpoint:
    path: Path
    model: Any  # the transformers model the folder was saved from (float32, eval)


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], HFCheckpoint]:
    """``hf_checkpoint(arch)``: a tiny random transformers checkpoint of ``arch``, saved with
    ``save_pretrained`` (cached for the session)."""
    pytest.importorskip("transformers")
    cache: dict[str, HFCheckpoint] = {}

    def get(arch: str) -> HFCheckpoint:
        if arch not in cache:
            model = build_hf_model(arch)
            folder = save_checkpoint(model, tmp_path_factory.mktemp(arch) / "ckpt")
            cache[arch] = HFCheckpoint(folder, model)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_checkpoint(arch)``: a folder written by cortex's own ``make_model`` (preset ``tiny``,
    seed 0), without transformers (cached for the session)."""
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = make_model(tmp_path_factory.mktemp(arch) / "tiny", arch=arch, preset="tiny")
        return cache[arch]

    return get
