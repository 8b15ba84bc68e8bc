"""Tiny random Hugging Face checkpoints built with transformers' own classes (the correctness oracle).

``build_hf_model(arch)`` returns a transformers model with non-trivial norm weights, ``A_log`` and
``dt_bias``; ``save_checkpoint(model, folder, layout=...)`` writes it as a Hugging Face folder in one
of the layouts real checkpoints use. Reused by the runtime and server tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

ARCHS = ("qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3")
Layout = Literal["hf", "sharded", "multimodal"]

_ATTN = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
_LINEAR = {
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
}
_MOE = {
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
}
_QWEN3_5_ROPE = {
    "rope_type": "default",
    "rope_theta": 1e7,
    "partial_rotary_factor": 0.25,
    "mrope_section": [2, 1, 1],
    "mrope_interleaved": True,
}


def build_hf_model(
    arch: str, *, seed: int = 0, num_layers: int = 4, vocab_size: int = 512, tie: bool | None = None
) -> Any:
    """A transformers causal LM of ``arch`` with random weights, in float32 eval mode."""
    import transformers as tf

    torch.manual_seed(seed)
    common: dict[str, Any] = {"vocab_size": vocab_size, "num_hidden_layers": num_layers, **_ATTN}
    # larger than transformers' 0.02 so greedy decoding is a varied sequence, not a repeated token;
    # 0.05 for the hybrids keeps fp32 noise through the delta rule well below the 1e-4 tolerance
    common["initializer_range"] = 0.1 if arch == "qwen3" else 0.05
    if arch == "qwen3_5":
        cfg = tf.Qwen3_5TextConfig(
            **common,
            **_LINEAR,
            intermediate_size=128,
            rope_parameters=_QWEN3_5_ROPE,
            tie_word_embeddings=tie is not False,
        )
        model = tf.Qwen3_5ForCausalLM(cfg)
    elif arch == "qwen3_5_moe":
        cfg = tf.Qwen3_5MoeTextConfig(**common, **_LINEAR, **_MOE, tie_word_embeddings=bool(tie))
        model = tf.Qwen3_5MoeForCausalLM(cfg)
    elif arch == "qwen3_next":
        cfg = tf.Qwen3NextConfig(
            **common,
            **_LINEAR,
            **_MOE,
            intermediate_size=128,
            mlp_only_layers=[1],
            tie_word_embeddings=bool(tie),
        )
        model = tf.Qwen3NextForCausalLM(cfg)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, intermediate_size=128, tie_word_embeddings=bool(tie))
        model = tf.Qwen3ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    _randomise(model, zero_centred=arch != "qwen3")
    return model.float().eval()


def _randomise(model: Any, *, zero_centred: bool) -> None:
    """Make norm weights, A_log and dt_bias non-trivial so the conventions are really tested."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                plain = name.endswith("linear_attn.norm.weight") or not zero_centred
                param.copy_((1.0 if plain else 0.0) + 0.3 * torch.randn_like(param))
            elif name.endswith("A_log"):
                param.copy_(torch.empty_like(param).uniform_(1, 16).log())
            elif name.endswith("dt_bias"):
                param.copy_(torch.randn_like(param))
            elif name.endswith("mlp.gate.weight"):
                param.normal_(0, 0.5)  # decisive routing, so top-k is not decided by rounding
            elif name.endswith("embed_tokens.weight") and model.config.tie_word_embeddings:
                # small next to the layers' updates, so a tied LM head does not just echo the input token
                param.mul_(0.3)


def save_checkpoint(model: Any, folder: Path, *, layout: Layout = "hf") -> Path:
    """Write ``model`` to ``folder``: ``hf`` (save_pretrained), ``sharded`` (several safetensors files plus
    an index) or ``multimodal`` (Qwen3.5: nested text_config, ``model.language_model.`` names, fused
    experts, plus dummy ``model.visual.*`` and ``mtp.*`` tensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "sharded":
        model.save_pretrained(folder, max_shard_size="100KB")
        assert (folder / "model.safetensors.index.json").is_file()
        return folder
    model.save_pretrained(folder)
    if layout == "multimodal":
        _to_multimodal(folder)
    return folder


def _to_multimodal(folder: Path) -> None:
    text = json.loads((folder / "config.json").read_text())
    outer_type = text["model_type"].removesuffix("_text")
    config = {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": outer_type,
        "text_config": text,
        "vision_config": {"model_type": f"{outer_type}_vision", "depth": 1, "hidden_size": 16},
        "tie_word_embeddings": text["tie_word_embeddings"],
        "image_token_id": 5,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        name = "model.language_model." + key.removeprefix("model.") if key.startswith("model.") else key
        if ".mlp.experts." in name:
            prefix, rest = name.split(".mlp.experts.")
            index, proj = rest.split(".", 1)
            experts.setdefault(prefix, {}).setdefault(int(index), {})[proj.split(".")[0]] = tensor
        else:
            out[name] = tensor
    for prefix, per_expert in experts.items():
        order = sorted(per_expert)
        out[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([per_expert[e]["gate_proj"], per_expert[e]["up_proj"]]) for e in order]
        )
        out[f"{prefix}.mlp.experts.down_proj"] = torch.stack([per_expert[e]["down_proj"] for e in order])
    out["model.visual.patch_embed.proj.weight"] = torch.randn(16, 3, 2, 2)
    out["mtp.fc.weight"] = torch.randn(64, 128)
    out["mtp.layers.0.mlp.experts.0.gate_proj.weight"] = torch.randn(32, 64)
    save_file(out, folder / "model.safetensors", metadata={"format": "pt"})
