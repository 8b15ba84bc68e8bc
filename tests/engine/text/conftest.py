"""Shared fixtures: the real Qwen3.5 tokenizer written into a model folder once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex.engine.text.qwen import write_qwen_tokenizer_files
from cortex.engine.text.tokenizer import Tokenizer

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qwen3_5")
    write_qwen_tokenizer_files(folder)
    return folder


@pytest.fixture(scope="session")
def qwen(qwen_folder: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_folder(qwen_folder)
    assert tokenizer is not None
    return tokenizer


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is absent")
    return data


@pytest.fixture(scope="session")
def chatml(qwen_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The Qwen vocabulary without a chat template: the ChatML fallback."""
    folder = tmp_path_factory.mktemp("chatml")
    (folder / "tokenizer.json").write_bytes((qwen_folder / "tokenizer.json").read_bytes())
    tokenizer = Tokenizer.from_folder(folder)
    assert tokenizer is not None
    assert tokenizer.chat_template.is_fallback
    return tokenizer
