"""Model code (composition of ``engine/layers``) and the weight loader.

``load_model(folder, dtype=..., device=...) -> (model, ModelConfig)``; the model's forward is
``model(batch: ForwardBatch, caches: Sequence[LayerCache]) -> logits [num_logits, vocab] float32``.
"""

from cortex.engine.config import ModelConfig
from cortex.engine.models.causal_lm import CausalLM
from cortex.engine.models.weights import load_model

__all__ = ["CausalLM", "ModelConfig", "load_model"]
