"""make_model(): write a random-weight checkpoint in the Hugging Face layout, for demos, tests and
benchmarks (``cortex make-model PATH --arch ARCH --preset PRESET``).

The folder gets ``config.json``, ``generation_config.json`` and ``model.safetensors`` (or shards of at
most ``max_shard_bytes`` plus ``model.safetensors.index.json``), named and shaped as transformers 5.24
saves the text model: ``qwen3_5_text`` / ``qwen3_5_moe_text`` / ``qwen3_next`` / ``qwen3``, per-expert
MoE weights, Qwen3-Next's grouped ``in_proj_qkvz`` / ``in_proj_ba``. It loads in cortex and in
transformers' ``AutoModelForCausalLM``. Written without transformers: the tensor list comes from
cortex's own model built on the meta device.

Presets (``PRESETS``): ``tiny`` (hidden 64, 4 layers, vocab 512), ``small`` (hidden 256, 8 layers,
vocab 4096), ``0.8b`` (Qwen3.5-0.8B's shape: hidden 1024, 24 layers, vocab 248320; for ``qwen3`` the
Qwen3-0.6B shape; the MoE archs use the 0.8B trunk with 32 experts, which is not a published model) and
``9b`` (Qwen3.5-9B's shape: hidden 4096, 32 layers, 16 / 4 attention heads, 16 / 32 linear-attention
heads, untied; the MoE archs again with 32 experts).

Tensors are made and written one at a time (``SafetensorsWriter``), so memory holds one tensor, and
each one written advances the job's progress (``cortex.engine.progress``). ``device``: where the random
values are drawn (``cuda`` writes a 9B checkpoint in seconds where the CPU takes minutes; the values
then differ from the CPU's for the same seed, reproducibly per device).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from cortex.engine.config import ModelConfig
from cortex.engine.models.causal_lm import CausalLM
from cortex.engine.progress import Progress, ProgressCallback, ProgressReporter
from cortex.engine.safetensors_file import SafetensorsWriter
from cortex.errors import InvalidRequestError

ARCHS = ("qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3")

_TRUNKS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "tiny": {
            "vocab_size": 512,
            "hidden_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "intermediate_size": 128,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 16,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
            "max_position_embeddings": 32768,
        },
        "small": {
            "vocab_size": 4096,
            "hidden_size": 256,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "intermediate_size": 768,
            "linear_num_key_heads": 4,
            "linear_num_value_heads": 8,
            "linear_key_head_dim": 32,
            "linear_value_head_dim": 32,
            "num_experts": 16,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 128,
            "shared_expert_intermediate_size": 128,
            "max_position_embeddings": 65536,
        },
        "0.8b": {
            "vocab_size": 248320,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "head_dim": 256,
            "intermediate_size": 3584,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 16,
            "linear_key_head_dim": 128,
            "linear_value_head_dim": 128,
            "num_experts": 32,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 512,
            "shared_expert_intermediate_size": 512,
            "max_position_embeddings": 262144,
            "tie_word_embeddings": True,
        },
        "9b": {
            "vocab_size": 248320,
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "intermediate_size": 12288,
            "linear_num_key_heads": 16,
            "linear_num_value_heads": 32,
            "linear_key_head_dim": 128,
            "linear_value_head_dim": 128,
            "num_experts": 32,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 512,
            "shared_expert_intermediate_size": 512,
            "max_position_embeddings": 262144,
            "tie_word_embeddings": False,
        },
    }
)
# Qwen3-0.6B, the dense Qwen3 model closest to 0.8B
_QWEN3_0_8B: Mapping[str, Any] = MappingProxyType(
    {
        "vocab_size": 151936,
        "hidden_size": 1024,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 3072,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": True,
    }
)
PRESETS = tuple(_TRUNKS)

_MODEL_TYPES = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text", "qwen3_next": "qwen3_next"}
_DENSE_ONLY_KEYS = ("intermediate_size",)
_MOE_KEYS = ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size")
_LINEAR_KEYS = (
    "linear_num_key_heads",
    "linear_num_value_heads",
    "linear_key_head_dim",
    "linear_value_head_dim",
)


def hf_config(
    arch: str, preset: str, *, vocab_size: int | None = None, dtype: str = "float32"
) -> dict[str, Any]:
    """The config.json dict ``make_model`` writes for ``arch`` and ``preset``."""
    if arch not in ARCHS:
        raise InvalidRequestError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}", param="arch")
    if preset not in _TRUNKS:
        raise InvalidRequestError(
            f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}", param="preset"
        )
    trunk = dict(_QWEN3_0_8B if (arch, preset) == ("qwen3", "0.8b") else _TRUNKS[preset])
    if arch == "qwen3_next" and preset == "0.8b":
        trunk["vocab_size"] = 151936
    if vocab_size is not None:
        if vocab_size < 2:
            raise InvalidRequestError("vocab_size must be at least 2", param="vocab_size")
        trunk["vocab_size"] = vocab_size
    config: dict[str, Any] = {
        "architectures": [_architecture(arch)],
        "model_type": _MODEL_TYPES.get(arch, arch),
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": trunk.pop("tie_word_embeddings", arch == "qwen3_5"),
        "dtype": dtype,
        "use_cache": True,
    }
    moe = arch in ("qwen3_5_moe", "qwen3_next")
    for key, value in trunk.items():
        if key in _MOE_KEYS and not moe:
            continue
        if key in _LINEAR_KEYS and arch == "qwen3":
            continue
        if key in _DENSE_ONLY_KEYS and arch == "qwen3_5_moe":
            continue
        config[key] = value
    eos_ids = _eos_ids(config["vocab_size"])
    config["eos_token_id"] = eos_ids[0]
    if arch == "qwen3":
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6}
        config["use_sliding_window"] = False
        return config
    num_layers = config["num_hidden_layers"]
    config["layer_types"] = [
        "full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(num_layers)
    ]
    config["full_attention_interval"] = 4
    config["linear_conv_kernel_dim"] = 4
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}
    if arch != "qwen3_next":
        pairs = config["head_dim"] // 8  # rotary dim / 2 frequency pairs split over t/h/w
        section = -(-pairs // 3)  # Qwen3.5: 32 pairs -> [11, 11, 10]
        rope.update(mrope_section=[section, section, pairs - 2 * section], mrope_interleaved=True)
    config["rope_parameters"] = rope
    if arch == "qwen3_next":
        config.update(norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])
    return config


def make_model(
    path: str | Path,
    *,
    arch: str,
    preset: str,
    seed: int = 0,
    dtype: str = "float32",
    vocab_size: int | None = None,
    max_shard_bytes: int = 2 << 30,
    progress: ProgressCallback | None = None,
    device: str = "cpu",
) -> Path:
    """Write a random-weight ``arch`` checkpoint of ``preset`` size into ``path`` (created if needed).

    ``progress`` is called with a ``ProgressSnapshot`` at the start, after each tensor written and at
    the end (None: a ``ProgressReporter``, which shows it on a terminal or logs it).
    """
    if dtype not in ("float32", "bfloat16", "float16"):
        raise InvalidRequestError(f"dtype must be float32, bfloat16 or float16, not {dtype!r}", param="dtype")
    config = hf_config(arch, preset, vocab_size=vocab_size, dtype=dtype)
    eos_ids = _eos_ids(config["vocab_size"])
    generation = {
        "bos_token_id": None,
        "eos_token_id": eos_ids,
        "pad_token_id": eos_ids[-1],
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
    }
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    model_config = ModelConfig.from_dicts(config, generation)
    torch_dtype = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    shards = _plan_shards(list(hf_tensor_shapes(model_config)), itemsize, max_shard_bytes)
    names = _shard_names(len(shards))
    tracker = Progress(
        f"writing {folder.name}",
        bytes_total=sum(math.prod(shape) * itemsize for shard in shards for _, shape in shard),
        tensors_total=sum(len(shard) for shard in shards),
        callbacks=(progress or ProgressReporter(),),
    )
    tracker.start()
    generator = torch.Generator(device=device).manual_seed(seed)
    for filename, shard in zip(names, shards, strict=True):
        declared = [(name, shape, torch_dtype) for name, shape in shard]
        with SafetensorsWriter(folder / filename, declared, metadata={"format": "pt"}) as writer:
            for name, shape in shard:
                tensor = _random_tensor(
                    name,
                    shape,
                    generator,
                    zero_centred=model_config.norm_zero_centred,
                    std=0.5 * model_config.hidden_size**-0.5,
                ).to(torch_dtype)
                writer.write(name, tensor.cpu())
                tracker.advance(tensor.numel() * itemsize)
    if len(shards) > 1:
        weight_map = {name: file for file, shard in zip(names, shards, strict=True) for name, _ in shard}
        index = {"metadata": {"total_size": tracker.bytes_total}, "weight_map": weight_map}
        index_file = folder / "model.safetensors.index.json"
        index_file.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    tracker.finish()
    return folder


def _plan_shards(
    tensors: list[tuple[str, tuple[int, ...]]], itemsize: int, max_shard_bytes: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Consecutive tensors grouped into shards of at most ``max_shard_bytes`` (a bigger tensor alone)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    shard_bytes = 0
    for name, shape in tensors:
        num_bytes = math.prod(shape) * itemsize
        if shards[-1] and shard_bytes + num_bytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append((name, shape))
        shard_bytes += num_bytes
    return shards


def _shard_names(num_shards: int) -> list[str]:
    if num_shards == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{num_shards:05d}.safetensors" for i in range(1, num_shards + 1)]


def hf_tensor_shapes(config: ModelConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The checkpoint's tensor names and shapes, in transformers' saved layout."""
    with torch.device("meta"):
        model = CausalLM(config, kernels="ref")
    for name, param in model.named_parameters():
        shape = tuple(param.shape)
        prefix, _, leaf = name.rpartition(".")
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            num_experts, rows, cols = shape
            for e in range(num_experts):
                if leaf == "down_proj":
                    yield f"{prefix}.{e}.down_proj.weight", (rows, cols)
                else:
                    yield f"{prefix}.{e}.gate_proj.weight", (rows // 2, cols)
                    yield f"{prefix}.{e}.up_proj.weight", (rows // 2, cols)
        elif config.arch == "qwen3_next" and name.endswith("linear_attn.in_proj_qkv.weight"):
            layer = name.removesuffix("in_proj_qkv.weight")
            yield f"{layer}in_proj_qkvz.weight", (shape[0] + config.linear_value_dim, shape[1])
            yield f"{layer}in_proj_ba.weight", (2 * config.linear_num_value_heads, shape[1])
        elif config.arch == "qwen3_next" and name.endswith(
            ("linear_attn.in_proj_z.weight", "linear_attn.in_proj_b.weight", "linear_attn.in_proj_a.weight")
        ):
            continue
        else:
            yield name, shape


def _random_tensor(
    name: str, shape: tuple[int, ...], generator: torch.Generator, *, zero_centred: bool, std: float
) -> torch.Tensor:
    device = generator.device
    if name.endswith("A_log"):
        return torch.empty(shape, device=device).uniform_(1.0, 16.0, generator=generator).log()
    if name.endswith("dt_bias"):
        return torch.randn(shape, generator=generator, device=device) * 0.5
    if name.endswith("norm.weight"):
        # zero-centred norms are applied as (1 + w), the GDN gated norm and Qwen3's norms as w:
        # either way the effective scale is near 1, not exactly 1, so the convention is exercised
        plain = not zero_centred or name.endswith("linear_attn.norm.weight")
        return torch.randn(shape, generator=generator, device=device) * 0.1 + (1.0 if plain else 0.0)
    if name.endswith("conv1d.weight"):
        bound = 1.0 / math.sqrt(shape[-1])
        return torch.empty(shape, device=device).uniform_(-bound, bound, generator=generator)
    # std 0.5 / sqrt(hidden_size) (0.0625 for tiny, 0.016 for 0.8b): large enough that a tiny random
    # model's greedy output is not one repeated token
    return torch.randn(shape, generator=generator, device=device) * std


def _eos_ids(vocab_size: int) -> list[int]:
    if vocab_size >= 248320:
        return [248046, 248044]  # Qwen3.5 <|im_end|>, <|endoftext|>
    if vocab_size >= 151936:
        return [151645, 151643]  # Qwen3 <|im_end|>, <|endoftext|>
    return [vocab_size - 1]


def _architecture(arch: str) -> str:
    return {
        "qwen3_5": "Qwen3_5ForCausalLM",
        "qwen3_5_moe": "Qwen3_5MoeForCausalLM",
        "qwen3_next": "Qwen3NextForCausalLM",
        "qwen3": "Qwen3ForCausalLM",
    }[arch]
