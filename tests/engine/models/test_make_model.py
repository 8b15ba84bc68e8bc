"""make_model(): random checkpoints in the Hugging Face layout that transformers and cortex both load
and agree on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from forward_helpers import NaiveRunner
from safetensors import safe_open

from cortex.engine.checkpoint import hf_config, make_model
from cortex.engine.config import ModelConfig
from cortex.engine.models import load_model
from cortex.errors import InvalidRequestError


@pytest.mark.parametrize("arch", ["qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3"])
def test_tiny_checkpoint_loads_in_transformers_and_cortex_alike(arch: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = make_model(tmp_path / arch, arch=arch, preset="tiny", seed=1)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model, config = load_model(folder, dtype="float32", device="cpu")
    assert config.num_parameters() == sum(p.numel() for p in hf_model.parameters())
    prompt = torch.randint(0, 500, (70,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        expected = hf_model(torch.tensor([prompt])).logits[0]
    logits = NaiveRunner(model, config).prefill_logits(prompt)
    assert (logits - expected).abs().max() < 1e-4
    assert expected[-1].std() > 0.05  # not a degenerate near-uniform model


def test_same_seed_same_weights_and_generation_config(tmp_path: Path) -> None:
    a = make_model(tmp_path / "a", arch="qwen3_5", preset="tiny", seed=7, vocab_size=248320, dtype="bfloat16")
    b = make_model(tmp_path / "b", arch="qwen3_5", preset="tiny", seed=7, vocab_size=248320, dtype="bfloat16")
    with safe_open(a / "model.safetensors", "pt") as fa, safe_open(b / "model.safetensors", "pt") as fb:
        name = "model.layers.0.linear_attn.A_log"
        assert fa.get_tensor(name).dtype == torch.bfloat16
        assert torch.equal(fa.get_tensor(name), fb.get_tensor(name))
        assert "lm_head.weight" not in set(fa.keys())  # tied
    config = ModelConfig.from_hf(a)
    assert config.vocab_size == 248320
    assert config.eos_token_ids == (248046, 248044)
    assert dict(config.generation_defaults) == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}


def test_large_checkpoints_are_sharded(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "s", arch="qwen3_next", preset="tiny", max_shard_bytes=200_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "model.layers.0.linear_attn.in_proj_qkvz.weight" in index["weight_map"]
    assert "model.layers.0.mlp.experts.7.down_proj.weight" in index["weight_map"]
    _model, config = load_model(folder, dtype="float32", device="cpu")
    assert config.arch == "qwen3_next"
    assert index["metadata"]["total_size"] == 4 * config.num_parameters()


def test_0_8b_preset_is_the_qwen3_5_0_8b_shape() -> None:
    config = ModelConfig.from_dicts(hf_config("qwen3_5", "0.8b"), {})
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (1024, 24, 3584)
    assert (config.num_attention_heads, config.num_kv_heads, config.head_dim) == (8, 2, 256)
    assert (config.linear_num_key_heads, config.linear_num_value_heads) == (16, 16)
    assert config.vocab_size == 248320
    assert config.tie_word_embeddings
    assert config.rotary_dim == 64
    assert config.mrope_section == (11, 11, 10)
    assert 0.7e9 < config.num_parameters() < 0.9e9
    qwen3 = ModelConfig.from_dicts(hf_config("qwen3", "0.8b"), {})
    assert (qwen3.num_hidden_layers, qwen3.vocab_size, qwen3.rope_theta) == (28, 151936, 1e6)


def test_9b_preset_is_the_qwen3_5_9b_shape() -> None:
    config = ModelConfig.from_dicts(hf_config("qwen3_5", "9b"), {})
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (4096, 32, 12288)
    assert (config.num_attention_heads, config.num_kv_heads, config.head_dim) == (16, 4, 256)
    assert (config.linear_num_key_heads, config.linear_num_value_heads) == (16, 32)
    assert not config.tie_word_embeddings
    assert 8.5e9 < config.num_parameters() < 9.5e9


def test_bad_arguments() -> None:
    with pytest.raises(InvalidRequestError, match="unknown arch 'llama'"):
        hf_config("llama", "tiny")
    with pytest.raises(InvalidRequestError, match="unknown preset 'huge'"):
        hf_config("qwen3", "huge")
    with pytest.raises(InvalidRequestError, match="dtype"):
        make_model("/nonexistent", arch="qwen3", preset="tiny", dtype="int8")


def test_tiny_checkpoint_fixture_decodes_deterministically(tiny_checkpoint: Callable) -> None:
    model, config = load_model(tiny_checkpoint("qwen3_5_moe"), dtype="float32", device="cpu")
    prompts = [[1, 2, 3], list(range(10, 90))]
    together = NaiveRunner(model, config).greedy(prompts, 6, chunk_size=40)
    assert together == [NaiveRunner(model, config).greedy([p], 6)[0] for p in prompts]


def test_models_package_exports() -> None:
    import cortex.engine.models as models

    assert set(models.__all__) == {"CausalLM", "ModelConfig", "load_model"}
