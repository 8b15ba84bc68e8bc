"""``cortex serve`` with no neurons configured: a gateway plus an in-process neuron on this machine.

This module makes the models and the gateway app; :func:`cortex.server.serve.serve_embedded` runs them.

The neuron serves the local model folders (``[neuron] model_dirs``, default ``~/.cache/cortex/models`` or
``$CORTEX_MODELS``) on a private loopback port; the gateway routes to it like to any neuron. When the
folders hold no model, a DEMO model is made on first run: random weights in the real Qwen3.5
architecture with the real Qwen3.5 tokenizer, named ``demo-qwen3.5-random``. It answers in the right
shapes (tool calls, thinking, streaming) but its text is nonsense; the logs say so at every start.
Without a models.toml, ``claude-*`` names are aliased to the first local model so Claude Code works.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from litestar import Litestar

from cortex.server.config import CortexConfig, NeuronEntry
from cortex.server.fleet_config import build_fleet
from cortex.server.gateway import create_app as create_gateway

log = logging.getLogger("cortex.embedded")
DEMO_MODEL_ID = "demo-qwen3.5-random"
DEMO_README = """# demo-qwen3.5-random

A DEMO checkpoint made by `cortex serve`: the real Qwen3.5 architecture and tokenizer with RANDOM
weights. It exercises the whole stack (OpenAI and Anthropic APIs, streaming, tool calls) but produces
nonsense text. Put real model folders next to this one (or set CORTEX_MODELS) to serve real models.
"""


def local_models(model_dirs: tuple[Path, ...]) -> list[Path]:
    """Model folders (a folder with a config.json) directly under the given roots."""
    found = []
    for root in model_dirs:
        if root.is_dir():
            found += sorted(p for p in root.iterdir() if (p / "config.json").is_file())
    return found


def ensure_demo_model(models_dir: Path, *, preset: str = "tiny") -> Path:
    """Make the demo model under ``models_dir`` unless it is already there; returns its folder."""
    folder = models_dir / DEMO_MODEL_ID
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    from cortex.engine.checkpoint import make_model
    from cortex.engine.text.qwen import write_qwen_tokenizer_files

    log.warning(
        "no models under %s: making the DEMO model %s (random weights, nonsense output)",
        models_dir,
        DEMO_MODEL_ID,
    )
    partial = models_dir / f".{DEMO_MODEL_ID}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    make_model(partial, arch="qwen3_5", preset=preset, vocab_size=248320)
    write_qwen_tokenizer_files(partial)
    (partial / "README.md").write_text(DEMO_README, encoding="utf-8")
    partial.rename(folder)  # atomic: a crash never leaves a half-written model that looks complete
    return folder


def prepare_models(config: CortexConfig, *, demo_preset: str = "tiny") -> list[Path]:
    """The local model folders, after making the demo model when there are none."""
    models = local_models(config.neuron.model_dirs)
    if not models:
        root = config.neuron.model_dirs[0]
        root.mkdir(parents=True, exist_ok=True)
        models = [ensure_demo_model(root, preset=demo_preset)]
    if any(m.name == DEMO_MODEL_ID for m in models):
        log.warning("serving %s: a DEMO model with random weights; its text is nonsense", DEMO_MODEL_ID)
    return models


def embedded_gateway(config: CortexConfig, *, neuron_url: str, models: list[Path]) -> Litestar:
    """The gateway over the local neuron at ``neuron_url``; without a models.toml, ``claude-*`` names
    are served by the first local model."""
    from cortex.fleet import ModelProfile

    config = config.model_copy(update={"neurons": (NeuronEntry(name=config.neuron.name, url=neuron_url),)})
    default_profiles = []
    if config.models_file() is None:
        default_profiles.append(ModelProfile(id=models[0].name, aliases=("claude-*",)))
        log.info("no models.toml: claude-* names are served by %s", models[0].name)
    return create_gateway(config, fleet=build_fleet(config, default_profiles=default_profiles))
