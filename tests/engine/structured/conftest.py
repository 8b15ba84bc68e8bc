"""The demo model for the structured-output tests: the tiny random Qwen3.5 with the real Qwen vocabulary,
as ``cortex serve`` makes it, and one engine over it shared by the module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cortex.engine.engine import Engine


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    from cortex.engine.checkpoint import make_model
    from cortex.engine.text.qwen import write_qwen_tokenizer_files

    folder = tmp_path_factory.mktemp("demo") / "demo-qwen3.5-random"
    make_model(folder, arch="qwen3_5", preset="tiny", vocab_size=248320)
    write_qwen_tokenizer_files(folder)
    return folder


@pytest.fixture(scope="session")
def demo_engine(demo_model) -> Iterator[Engine]:
    with Engine.from_pretrained(demo_model, max_model_len=1024, max_num_seqs=25) as engine:
        yield engine
