"""ModelConfig.from_hf: normalising each supported family's config.json into one frozen dataclass."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cortex.engine.cache.layer_cache import AttentionCacheSpec, LinearStateSpec
from cortex.engine.checkpoint import hf_config
from cortex.engine.config import SUPPORTED_MODEL_TYPES, ModelConfig
from cortex.engine.errors import ModelLoadError, UnsupportedModelError


def test_qwen3_5_from_transformers_checkpoint(hf_checkpoint: Callable) -> None:
    config = ModelConfig.from_hf(hf_checkpoint("qwen3_5").path)
    assert config.arch == "qwen3_5"
    assert config.layer_types == ("linear_attention",) * 3 + ("full_attention",)
    assert config.attn_output_gate
    assert config.norm_zero_centred
    assert (config.head_dim, config.rotary_dim, config.rope_theta) == (32, 8, 1e7)
    assert config.mrope_section == (2, 1, 1)
    assert config.conv_dim == 2 * 2 * 16 + 4 * 16
    assert config.tie_word_embeddings
    assert config.num_experts == 0
    assert config.intermediate_size == 128
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.vocab_size = 3  # type: ignore[misc]


def test_parameter_count_matches_transformers(hf_checkpoint: Callable) -> None:
    for arch in ("qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3"):
        ckpt = hf_checkpoint(arch)
        config = ModelConfig.from_hf(ckpt.path)
        assert config.num_parameters() == sum(p.numel() for p in ckpt.model.parameters()), arch
        assert config.estimate_weight_bytes("bfloat16") == 2 * config.num_parameters()
        assert config.estimate_weight_bytes("torch.float32") == 4 * config.num_parameters()


def test_moe_fields(hf_checkpoint: Callable) -> None:
    moe = ModelConfig.from_hf(hf_checkpoint("qwen3_5_moe").path)
    assert (moe.num_experts, moe.num_experts_per_tok, moe.moe_intermediate_size) == (8, 2, 32)
    assert moe.moe_layers == (True,) * 4
    assert moe.norm_topk_prob
    assert moe.intermediate_size == 0
    nxt = ModelConfig.from_hf(hf_checkpoint("qwen3_next").path)
    assert nxt.moe_layers == (True, False, True, True)  # mlp_only_layers=[1]
    assert nxt.mrope_section is None
    assert nxt.shared_expert_intermediate_size == 32


def test_nested_multimodal_config_and_generation_defaults() -> None:
    text = hf_config("qwen3_5", "0.8b")
    del text["layer_types"]  # derived from full_attention_interval
    raw = {"model_type": "qwen3_5", "text_config": text, "vision_config": {"depth": 2}, "eos_token_id": 7}
    generation = {"eos_token_id": [248046, 248044], "temperature": 0.6, "top_k": 20, "top_p": None}
    config = ModelConfig.from_dicts(raw, generation)
    assert config.layer_types[:4] == ("linear_attention",) * 3 + ("full_attention",)
    assert config.layer_types.count("full_attention") == 6
    assert config.eos_token_ids == (248046, 248044, 7)
    assert dict(config.generation_defaults) == {"temperature": 0.6, "top_k": 20}
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (1024, 24, 248320)
    assert config.max_position_embeddings == 262144


def test_layer_cache_specs_for_qwen3_5_0_8b() -> None:
    config = ModelConfig.from_dicts(hf_config("qwen3_5", "0.8b"), {})
    specs = config.layer_cache_specs()
    assert len(specs) == 24
    assert specs[3] == AttentionCacheSpec(num_kv_heads=2, head_dim=256)
    linear = specs[0]
    assert linear == LinearStateSpec(
        conv_dim=6144, conv_kernel=4, num_v_heads=16, head_k_dim=128, head_v_dim=128
    )
    # vLLM's figure for Qwen3.5-0.8B: 1,085,440 bytes per layer (fp32 state, bf16 conv history)
    assert isinstance(linear, LinearStateSpec)
    state_bytes = linear.num_v_heads * linear.head_k_dim * linear.head_v_dim * 4
    assert state_bytes + linear.conv_dim * (linear.conv_kernel - 1) * 2 == 1_085_440


def test_qwen3_legacy_top_level_rope_fields() -> None:
    raw = {
        "model_type": "qwen3",
        "vocab_size": 100,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 32,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
        "use_sliding_window": False,
    }
    config = ModelConfig.from_dicts(raw, {})
    assert (config.rope_theta, config.rotary_dim, config.dtype) == (1e6, 16, "bfloat16")
    assert not config.norm_zero_centred
    assert not config.attn_output_gate
    assert config.layer_types == ("full_attention", "full_attention")
    with pytest.raises(UnsupportedModelError, match="sliding"):
        ModelConfig.from_dicts({**raw, "use_sliding_window": True}, {})
    with pytest.raises(UnsupportedModelError, match="yarn"):
        ModelConfig.from_dicts({**raw, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, {})


def test_unsupported_model_type_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UnsupportedModelError) as info:
        ModelConfig.from_hf(tmp_path)
    message = str(info.value)
    assert "'llama'" in message
    assert all(model_type in message for model_type in SUPPORTED_MODEL_TYPES)


def test_broken_configs_raise_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        ModelConfig.from_hf(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        ModelConfig.from_hf(tmp_path)
    raw = hf_config("qwen3_5", "tiny")
    del raw["hidden_size"]
    with pytest.raises(ModelLoadError, match="hidden_size"):
        ModelConfig.from_dicts(raw, {})
    with pytest.raises(ModelLoadError, match="multiple"):
        ModelConfig.from_dicts({**hf_config("qwen3_5", "tiny"), "num_key_value_heads": 3}, {})


def test_config_module_does_not_import_torch(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(hf_config("qwen3_5", "tiny")))
    code = (
        "import sys; from cortex.engine.config import ModelConfig; "
        f"ModelConfig.from_hf({str(tmp_path)!r}).estimate_weight_bytes('bfloat16'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
