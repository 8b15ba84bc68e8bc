"""Weight loading: single-file, sharded and multimodal layouts; fused and per-expert MoE; clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from forward_helpers import NaiveRunner
from hf_checkpoints import build_hf_model, save_checkpoint
from safetensors.torch import load_file, save_file

from cortex.engine.errors import ModelLoadError, UnsupportedModelError, WeightsError
from cortex.engine.models import load_model

PROMPT = list(range(3, 40, 2))


def _max_err(folder: Path, hf_model: object) -> float:
    model, config = load_model(folder, dtype="float32", device="cpu")
    with torch.no_grad():
        expected = hf_model(torch.tensor([PROMPT])).logits[0]  # type: ignore[operator]
    return float((NaiveRunner(model, config).prefill_logits(PROMPT) - expected).abs().max())


def _copy(ckpt_path: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(ckpt_path, folder)
    return folder


@pytest.mark.parametrize("arch", ["qwen3_5", "qwen3_5_moe"])
def test_multimodal_layout_loads(arch: str, hf_checkpoint: Callable, tmp_path: Path) -> None:
    hf_model = hf_checkpoint(arch).model
    folder = save_checkpoint(hf_model, tmp_path / "mm", layout="multimodal")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch
    assert "text_config" in config
    names = load_file(folder / "model.safetensors").keys()
    assert any(name.startswith("model.visual.") for name in names)
    assert any(name.startswith("mtp.") for name in names)
    assert all(not name.startswith("model.layers.") for name in names)
    if arch == "qwen3_5_moe":
        assert "model.language_model.layers.0.mlp.experts.gate_up_proj" in names
    assert _max_err(folder, hf_model) < 1e-4


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    hf_model = build_hf_model("qwen3_next", seed=3)
    folder = save_checkpoint(hf_model, tmp_path / "sharded", layout="sharded")
    assert len(list(folder.glob("*.safetensors"))) > 1
    assert _max_err(folder, hf_model) < 1e-4


def test_untied_lm_head_is_loaded_and_tied_one_ignored(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3_5").path, tmp_path)  # tied: no lm_head.weight saved
    model, _ = load_model(folder, dtype="float32", device="cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = torch.zeros_like(tensors["model.embed_tokens.weight"])
    save_file(tensors, folder / "model.safetensors")
    model, _ = load_model(folder, dtype="float32", device="cpu")
    assert torch.equal(model.lm_head.weight, tensors["model.embed_tokens.weight"])


def test_weights_are_converted_to_dtype(hf_checkpoint: Callable) -> None:
    model, _ = load_model(hf_checkpoint("qwen3").path, dtype=torch.float16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(hf_checkpoint("qwen3").path, dtype="int8", device="cpu")


def test_missing_tensor_is_named(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3_5").path, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.3.self_attn.k_norm.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        WeightsError, match=r"missing tensor model\.layers\.3\.self_attn\.k_norm\.weight.*\(32,\)"
    ):
        load_model(folder, dtype="float32", device="cpu")


def test_missing_expert_is_reported(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3_5_moe").path, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.2.mlp.experts.5.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"missing tensor model\.layers\.2\.mlp\.experts\.gate_up_proj"):
        load_model(folder, dtype="float32", device="cpu")


def test_wrong_shape_names_both_shapes(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3_5").path, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.linear_attn.A_log"] = torch.zeros(5)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        WeightsError, match=r"model\.layers\.0\.linear_attn\.A_log has shape \(5,\).*expects \(4,\)"
    ):
        load_model(folder, dtype="float32", device="cpu")


def test_wrong_grouped_qkvz_shape(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3_next").path, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.linear_attn.in_proj_qkvz.weight"] = torch.zeros(10, 64)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"in_proj_qkvz\.weight has shape \(10, 64\).*expects \(192, 64\)"):
        load_model(folder, dtype="float32", device="cpu")


def test_unexpected_tensor_is_named(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3").path, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.9.mlp.up_proj.weight"] = torch.zeros(3, 2)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        WeightsError, match=r"unexpected tensor model\.layers\.9\.mlp\.up_proj\.weight.*\(3, 2\)"
    ):
        load_model(folder, dtype="float32", device="cpu")


def test_unsupported_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba2"}))
    with pytest.raises(UnsupportedModelError, match=r"'mamba2' is not supported.*qwen3_5_moe"):
        load_model(tmp_path, dtype="float32", device="cpu")


def test_only_files_inside_the_folder_are_read(hf_checkpoint: Callable, tmp_path: Path) -> None:
    folder = _copy(hf_checkpoint("qwen3").path, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    index = {"weight_map": {"model.norm.weight": "../outside.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="outside"):
        load_model(folder, dtype="float32", device="cpu")
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors"):
        load_model(folder, dtype="float32", device="cpu")
