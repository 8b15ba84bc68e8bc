"""load_model(): a Hugging Face model folder -> (nn.Module on the device, ModelConfig).

Reads ``model.safetensors`` or the shards listed in ``model.safetensors.index.json`` through
``safe_open`` (memory-mapped), converts each tensor to the requested dtype and copies it into a model
built on the meta device and then materialised on the target device, so the weights are never held
twice in host memory. Only files inside the folder are read.

Checkpoint names are mapped to cortex's parameter names:
  - ``model.language_model.X`` (Qwen3.5 multimodal layout) -> ``model.X``;
  - ``model.visual.*`` and ``mtp.*`` are skipped (vision tower and multi-token prediction);
  - per-expert ``mlp.experts.E.{gate,up,down}_proj.weight`` go into the fused
    ``mlp.experts.gate_up_proj [E, 2I, H]`` (gate rows first) and ``mlp.experts.down_proj [E, H, I]``;
  - Qwen3-Next ``in_proj_qkvz`` / ``in_proj_ba`` are split into ``in_proj_qkv``, ``in_proj_z``,
    ``in_proj_b``, ``in_proj_a``;
  - ``lm_head.weight`` is ignored when embeddings are tied.
A missing, unexpected or wrongly shaped tensor raises ``WeightsError`` naming it and both shapes.

Progress (``cortex.engine.progress``): the tensors to read and their bytes are counted from the files'
headers before the first is read; each tensor copied into the model advances the count.
With a ``shard`` (one tensor-parallel rank, ``cortex.engine.parallel.sharding.RankShard``) the model is
built from the rank's config and each tensor is read through ``shard.read`` from a safetensors slice,
so a rank reads only its part of the checkpoint; the mapping above then applies to the rank's parts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open

from cortex.engine.config import ModelConfig
from cortex.engine.errors import ModelLoadError, WeightsError
from cortex.engine.kernels.selection import resolve_kernels
from cortex.engine.models.causal_lm import CausalLM
from cortex.engine.models.qwen3_next import split_ba, split_qkvz
from cortex.engine.progress import Progress, ProgressCallback, ProgressReporter
from cortex.engine.safetensors_file import read_header

_SKIPPED_PREFIXES = ("model.visual.", "visual.", "mtp.")
_PER_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")

# (parameter name, index into it or None for the whole tensor, tensor)
_Piece = tuple[str, tuple[int | slice, ...] | None, torch.Tensor]
# one checkpoint file and the tensors to read from it: (key in the file, cortex name, bytes in the file)
_FilePlan = tuple[Path, list[tuple[str, str, int]]]


class WeightShard(Protocol):
    """One rank's part of a checkpoint: the shapes it builds, and how it reads each tensor."""

    @property
    def config(self) -> ModelConfig: ...

    def read(self, name: str, tensor: Any) -> torch.Tensor:
        """The rank's part of tensor ``name`` (cortex's name) from a safetensors slice."""
        ...


def load_model(
    folder: str | Path,
    *,
    dtype: str | torch.dtype = "bfloat16",
    device: str | torch.device = "cpu",
    kernels: str | None = None,
    progress: ProgressCallback | None = None,
    shard: WeightShard | None = None,
) -> tuple[CausalLM, ModelConfig]:
    """Build the model ``folder`` describes and load its weights; the model is in eval mode, no grads.

    ``kernels`` (``auto`` | ``triton`` | ``ref``; None: ``CORTEX_KERNELS``, else ``auto``) picks the ops'
    implementation for ``device`` (see ``kernels/selection.py``). ``progress`` is called with a
    ``ProgressSnapshot`` at the start, after each tensor and at the end (None: a
    ``ProgressReporter``, which shows it on a terminal or logs it). With ``shard``, the model and the
    returned config are one tensor-parallel rank's.
    """
    folder = Path(folder)
    config = shard.config if shard is not None else ModelConfig.from_hf(folder)
    plan = _read_plan(folder, config)
    tracker = Progress(
        f"loading {folder.name}",
        bytes_total=sum(size for _, tensors in plan for _, _, size in tensors),
        tensors_total=sum(len(tensors) for _, tensors in plan),
        callbacks=(progress or ProgressReporter(),),
    )
    torch_dtype = _torch_dtype(dtype)
    backend = resolve_kernels(kernels, device)
    with torch.device("meta"):
        model = CausalLM(config, kernels=backend)
    model = model.to(dtype=torch_dtype).to_empty(device=device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    params = dict(model.named_parameters())
    loaded_numel = dict.fromkeys(params, 0)
    tracker.start()
    with torch.no_grad():
        for name, index, tensor in _pieces(plan, config, tracker, shard):
            if name not in params:
                raise WeightsError(f"unexpected tensor {name} with shape {tuple(tensor.shape)} in checkpoint")
            target = params[name] if index is None else params[name][index]
            if tuple(target.shape) != tuple(tensor.shape):
                raise WeightsError(
                    f"tensor {name} has shape {tuple(tensor.shape)} in the checkpoint, "
                    f"but the model expects {tuple(target.shape)}"
                )
            target.copy_(tensor)  # converts dtype and moves to the device in one copy
            loaded_numel[name] += tensor.numel()
    for name, param in params.items():
        if loaded_numel[name] != param.numel():
            raise WeightsError(f"missing tensor {name} (expected shape {tuple(param.shape)}) in checkpoint")
    model.requires_grad_(False)
    tracker.finish()
    return model.eval(), config


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return resolved


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint, each checked to lie inside ``folder``."""
    root = folder.resolve()
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"cannot read {index.name}: {exc!r}") from exc
        names = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        names = ["model.safetensors"]
    else:
        raise ModelLoadError(f"no model.safetensors or model.safetensors.index.json in {folder}")
    files = []
    for name in names:
        path = (folder / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ModelLoadError(f"checkpoint shard {name!r} is missing or outside {folder}")
        files.append(path)
    return files


def _read_plan(folder: Path, config: ModelConfig) -> list[_FilePlan]:
    """The tensors to read, file by file, with their sizes, from the files' headers alone."""
    plan = []
    for path in checkpoint_files(folder):
        tensors = []
        for key, entry in read_header(path).items():
            if key.startswith(_SKIPPED_PREFIXES):
                continue
            name = key
            if key.startswith("model.language_model."):
                name = "model." + key.removeprefix("model.language_model.")
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            tensors.append((key, name, entry.num_bytes))
        plan.append((path, tensors))
    return plan


def _pieces(
    plan: list[_FilePlan], config: ModelConfig, tracker: Progress, shard: WeightShard | None
) -> Iterator[_Piece]:
    for path, tensors in plan:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key, name, num_bytes in tensors:
                tensor = f.get_tensor(key) if shard is None else shard.read(name, f.get_slice(key))
                yield from _map(name, tensor, config)
                tracker.advance(num_bytes)  # the consumer has copied this tensor's pieces


def _map(name: str, tensor: torch.Tensor, config: ModelConfig) -> Iterator[_Piece]:
    per_expert = _PER_EXPERT.match(name)
    if per_expert:
        prefix, expert, proj = per_expert.group(1), int(per_expert.group(2)), per_expert.group(3)
        size = config.moe_intermediate_size
        if proj == "down_proj":
            yield f"{prefix}.down_proj", (expert,), tensor
        else:
            rows = slice(0, size) if proj == "gate_proj" else slice(size, 2 * size)
            yield f"{prefix}.gate_up_proj", (expert, rows), tensor
        return
    if name.endswith(("linear_attn.in_proj_qkvz.weight", "linear_attn.in_proj_ba.weight")):
        prefix = name.rsplit(".", 2)[0]
        grouped = name.endswith("in_proj_qkvz.weight")
        num_rows = (
            2 * (config.linear_key_dim + config.linear_value_dim)
            if grouped
            else 2 * config.linear_num_value_heads
        )
        if tuple(tensor.shape) != (num_rows, config.hidden_size):
            raise WeightsError(
                f"tensor {name} has shape {tuple(tensor.shape)} in the checkpoint, "
                f"but the model expects {(num_rows, config.hidden_size)}"
            )
        if grouped:
            qkv, z = split_qkvz(tensor, config)
            yield f"{prefix}.in_proj_qkv.weight", None, qkv
            yield f"{prefix}.in_proj_z.weight", None, z
        else:
            b, a = split_ba(tensor, config)
            yield f"{prefix}.in_proj_b.weight", None, b
            yield f"{prefix}.in_proj_a.weight", None, a
        return
    yield name, None, tensor
