"""ModelConfig: a Hugging Face ``config.json`` (+ ``generation_config.json``) normalised once.

Hugging Face configs are loose: Qwen3.5 nests the text model under ``text_config`` next to a vision
tower, rope settings live either in ``rope_parameters`` or at the top level, layer types are listed or
derived from ``full_attention_interval``, MoE fields exist under different names per family. This
module reads them once into one frozen dataclass that the model code and the runtime use; nothing
reads config.json after this. The module does not import torch, so a neuron can inspect model folders
(memory estimates for discovery) without loading it.

Supported ``model_type`` values: see ``SUPPORTED_MODEL_TYPES``. Each maps to one of four
architectures (``ModelConfig.arch``): ``qwen3_5``, ``qwen3_5_moe``, ``qwen3_next`` and ``qwen3``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

from cortex.engine.errors import ModelLoadError, UnsupportedModelError

if TYPE_CHECKING:
    from cortex.engine.cache.layer_cache import LayerCacheSpec

Arch = Literal["qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3"]
LayerType = Literal["full_attention", "linear_attention"]

# model_type in config.json -> architecture cortex builds for it
SUPPORTED_MODEL_TYPES: Mapping[str, Arch] = MappingProxyType(
    {
        "qwen3_5": "qwen3_5",
        "qwen3_5_text": "qwen3_5",
        "qwen3_5_moe": "qwen3_5_moe",
        "qwen3_5_moe_text": "qwen3_5_moe",
        "qwen3_next": "qwen3_next",
        "qwen3": "qwen3",
    }
)

GENERATION_DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")

DTYPE_BYTES: Mapping[str, int] = MappingProxyType(
    {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything the model code needs, validated; derived sizes are properties."""

    arch: Arch
    model_type: str  # as written in config.json (top level)
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    layer_types: tuple[LayerType, ...]
    rms_norm_eps: float
    # True for Qwen3.5 / Qwen3-Next: RMSNorm weights are stored zero-centred and applied as (1 + w)
    norm_zero_centred: bool
    # full attention
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    attention_bias: bool
    attn_output_gate: bool  # q_proj emits [query | gate] per head; output *= sigmoid(gate)
    rope_theta: float
    partial_rotary_factor: float
    mrope_section: tuple[int, ...] | None  # text-only positions are 1-D, so M-RoPE is plain RoPE
    max_position_embeddings: int
    # dense MLP (0 when every layer is MoE)
    intermediate_size: int
    # Gated DeltaNet (zeros for qwen3)
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel_dim: int = 0
    # MoE (num_experts == 0 for dense models)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    norm_topk_prob: bool = True
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    moe_layers: tuple[bool, ...] = ()  # per layer: sparse MoE block (True) or dense MLP (False)
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    # sampling defaults from generation_config.json, only the keys it sets
    generation_defaults: Mapping[str, float | int] = field(default_factory=lambda: MappingProxyType({}))
    dtype: str = "bfloat16"  # the checkpoint's declared dtype

    def __post_init__(self) -> None:
        if len(self.layer_types) != self.num_hidden_layers:
            raise ModelLoadError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers"
            )
        if self.moe_layers and len(self.moe_layers) != self.num_hidden_layers:
            raise ModelLoadError(f"moe_layers has {len(self.moe_layers)} entries")
        if self.num_attention_heads % self.num_kv_heads:
            raise ModelLoadError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.has_linear_attention and self.linear_num_value_heads % self.linear_num_key_heads:
            raise ModelLoadError("linear_num_value_heads must be a multiple of linear_num_key_heads")
        if self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise ModelLoadError(f"rotary dim {self.rotary_dim} must be even and at most head_dim")
        if self.num_experts and not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ModelLoadError("num_experts_per_tok must be in [1, num_experts]")

    @classmethod
    def from_hf(cls, folder: str | Path) -> ModelConfig:
        """Read ``folder/config.json`` (and ``generation_config.json`` if present)."""
        folder = Path(folder)
        raw = _read_json(folder / "config.json")
        if raw is None:
            raise ModelLoadError(f"no config.json in {folder}")
        generation = _read_json(folder / "generation_config.json") or {}
        return cls.from_dicts(raw, generation)

    @classmethod
    def from_dicts(cls, raw: Mapping[str, Any], generation: Mapping[str, Any]) -> ModelConfig:
        """Normalise already-parsed config.json and generation_config.json dicts."""
        model_type = str(raw.get("model_type", ""))
        arch = SUPPORTED_MODEL_TYPES.get(model_type)
        if arch is None:
            supported = ", ".join(SUPPORTED_MODEL_TYPES)
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported; supported model types: {supported}"
            )
        text: Mapping[str, Any] = raw.get("text_config") or raw
        try:
            return _normalise(arch, model_type, raw, text, generation)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"invalid config.json for {model_type}: {exc!r}") from exc

    # ---- derived sizes -------------------------------------------------------------------------

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def has_linear_attention(self) -> bool:
        return "linear_attention" in self.layer_types

    @property
    def linear_key_dim(self) -> int:
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def linear_value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the GDN causal conv: q, k and v concatenated."""
        return 2 * self.linear_key_dim + self.linear_value_dim

    def layer_cache_specs(self) -> list[LayerCacheSpec]:
        """One cache spec per layer, in layer order, for the runtime to size its pools."""
        from cortex.engine.cache.layer_cache import AttentionCacheSpec, LinearStateSpec  # imports torch

        specs: list[LayerCacheSpec] = []
        for layer_type in self.layer_types:
            if layer_type == "full_attention":
                specs.append(AttentionCacheSpec(num_kv_heads=self.num_kv_heads, head_dim=self.head_dim))
            else:
                specs.append(
                    LinearStateSpec(
                        conv_dim=self.conv_dim,
                        conv_kernel=self.linear_conv_kernel_dim,
                        num_v_heads=self.linear_num_value_heads,
                        head_k_dim=self.linear_key_head_dim,
                        head_v_dim=self.linear_value_head_dim,
                    )
                )
        return specs

    def num_parameters(self) -> int:
        """Parameter count of the text model as cortex builds it (vision and MTP excluded)."""
        h = self.hidden_size
        embed = self.vocab_size * h
        total = embed + h + (0 if self.tie_word_embeddings else embed)
        for i, layer_type in enumerate(self.layer_types):
            total += 2 * h
            if layer_type == "full_attention":
                q_out = self.num_attention_heads * self.head_dim * (2 if self.attn_output_gate else 1)
                kv_out = 2 * self.num_kv_heads * self.head_dim
                total += h * (q_out + kv_out) + self.num_attention_heads * self.head_dim * h
                total += 2 * self.head_dim
                if self.attention_bias:
                    total += q_out + kv_out + h
            else:
                hv = self.linear_num_value_heads
                total += h * (self.conv_dim + self.linear_value_dim + 2 * hv)
                total += self.conv_dim * self.linear_conv_kernel_dim + 2 * hv
                total += self.linear_value_head_dim + self.linear_value_dim * h
            if self.moe_layers and self.moe_layers[i]:
                total += self.num_experts * h + self.num_experts * 3 * h * self.moe_intermediate_size
                total += 3 * h * self.shared_expert_intermediate_size + h
            else:
                total += 3 * h * self.intermediate_size
        return total

    def estimate_weight_bytes(self, dtype: str | object = "bfloat16") -> int:
        """Bytes the weights take in ``dtype`` (a name like "bfloat16" or a torch.dtype)."""
        name = str(dtype).removeprefix("torch.")
        if name not in DTYPE_BYTES:
            raise ModelLoadError(f"unknown dtype {name!r}; expected one of {sorted(DTYPE_BYTES)}")
        return self.num_parameters() * DTYPE_BYTES[name]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.name} is not a JSON object")
    return data


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _layer_types(arch: Arch, text: Mapping[str, Any], num_layers: int) -> tuple[LayerType, ...]:
    if arch == "qwen3":
        if text.get("use_sliding_window"):
            raise UnsupportedModelError("qwen3 with use_sliding_window=true is not supported")
        return tuple("full_attention" for _ in range(num_layers))
    listed = text.get("layer_types")
    if listed is not None:
        for layer_type in listed:
            if layer_type not in ("full_attention", "linear_attention"):
                raise UnsupportedModelError(f"layer type {layer_type!r} is not supported")
        return tuple(cast(LayerType, layer_type) for layer_type in listed)
    interval = int(text.get("full_attention_interval", 4))
    return tuple("linear_attention" if (i + 1) % interval else "full_attention" for i in range(num_layers))


def _normalise(
    arch: Arch,
    model_type: str,
    raw: Mapping[str, Any],
    text: Mapping[str, Any],
    generation: Mapping[str, Any],
) -> ModelConfig:
    hybrid = arch != "qwen3"
    num_layers = int(text["num_hidden_layers"])
    rope: Mapping[str, Any] = text.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", "default")
    scaling = text.get("rope_scaling")
    if rope_type != "default" or (scaling and scaling.get("rope_type", scaling.get("type")) != "default"):
        raise UnsupportedModelError(f"rope scaling {rope_type!r}/{scaling!r} is not supported")
    rope_theta = float(rope.get("rope_theta", text.get("rope_theta", 10000.0)))
    partial = float(
        rope.get("partial_rotary_factor", text.get("partial_rotary_factor", 0.25 if hybrid else 1.0))
    )
    mrope = rope.get("mrope_section")
    if text.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act {text.get('hidden_act')!r} is not supported (only silu)")
    num_heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // num_heads)

    num_experts = int(text.get("num_experts", 0)) if arch in ("qwen3_5_moe", "qwen3_next") else 0
    moe_layers: tuple[bool, ...] = ()
    if num_experts:
        if arch == "qwen3_next":
            step = int(text.get("decoder_sparse_step", 1))
            dense_only = set(text.get("mlp_only_layers") or [])
            moe_layers = tuple(i not in dense_only and (i + 1) % step == 0 for i in range(num_layers))
        else:
            moe_layers = (True,) * num_layers
    # Qwen3.5-MoE always renormalises the top-k weights; Qwen3-Next reads norm_topk_prob
    norm_topk = bool(text.get("norm_topk_prob", True)) if arch == "qwen3_next" else True

    eos = _as_ids(generation.get("eos_token_id")) + _as_ids(text.get("eos_token_id"))
    eos += _as_ids(raw.get("eos_token_id"))
    defaults = {key: generation[key] for key in GENERATION_DEFAULT_KEYS if generation.get(key) is not None}
    tie = raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    return ModelConfig(
        arch=arch,
        model_type=model_type,
        vocab_size=int(text["vocab_size"]),
        hidden_size=int(text["hidden_size"]),
        num_hidden_layers=num_layers,
        layer_types=_layer_types(arch, text, num_layers),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        norm_zero_centred=hybrid,
        num_attention_heads=num_heads,
        num_kv_heads=int(text.get("num_key_value_heads", num_heads)),
        head_dim=head_dim,
        attention_bias=bool(text.get("attention_bias", False)),
        attn_output_gate=hybrid and bool(text.get("attn_output_gate", True)),
        rope_theta=rope_theta,
        partial_rotary_factor=partial,
        mrope_section=tuple(int(s) for s in mrope) if mrope else None,
        max_position_embeddings=int(text.get("max_position_embeddings", 32768)),
        intermediate_size=int(text.get("intermediate_size", 0)) if arch != "qwen3_5_moe" else 0,
        linear_num_key_heads=int(text.get("linear_num_key_heads", 0)) if hybrid else 0,
        linear_num_value_heads=int(text.get("linear_num_value_heads", 0)) if hybrid else 0,
        linear_key_head_dim=int(text.get("linear_key_head_dim", 0)) if hybrid else 0,
        linear_value_head_dim=int(text.get("linear_value_head_dim", 0)) if hybrid else 0,
        linear_conv_kernel_dim=int(text.get("linear_conv_kernel_dim", 4)) if hybrid else 0,
        num_experts=num_experts,
        num_experts_per_tok=int(text.get("num_experts_per_tok", 0)) if num_experts else 0,
        norm_topk_prob=norm_topk,
        moe_intermediate_size=int(text.get("moe_intermediate_size", 0)) if num_experts else 0,
        shared_expert_intermediate_size=int(text.get("shared_expert_intermediate_size", 0))
        if num_experts
        else 0,
        moe_layers=moe_layers,
        tie_word_embeddings=bool(tie),
        bos_token_id=text.get("bos_token_id", raw.get("bos_token_id")),
        eos_token_ids=tuple(dict.fromkeys(eos)),
        generation_defaults=MappingProxyType(defaults),
        dtype=str(text.get("dtype") or text.get("torch_dtype") or raw.get("dtype") or "bfloat16"),
    )
